package tokensink

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
)

// safeDir is a directory only this user can write, under the test's own.
func safeDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func mkdir(t *testing.T, path string, mode os.FileMode) string {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return path
}

func TestResolve(t *testing.T) {
	dir := safeDir(t)
	t.Setenv("HOME", dir)
	t.Chdir(dir)
	mkdir(t, filepath.Join(dir, "real"), 0o700)
	if err := os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	sticky := mkdir(t, filepath.Join(dir, "sticky"), 0o777|os.ModeSticky)
	for in, want := range map[string]string{
		"token":                   filepath.Join(dir, "token"),
		"~/.apiconnect/token":     filepath.Join(dir, ".apiconnect", "token"),
		dir + "/a/b/../c/token":   filepath.Join(dir, "a", "c", "token"),
		dir + "/link/token":       filepath.Join(dir, "real", "token"),
		dir + "/link/new/token":   filepath.Join(dir, "real", "new", "token"),
		sticky + "/token":         filepath.Join(sticky, "token"),
		dir + "/missing/sub/file": filepath.Join(dir, "missing", "sub", "file"),
	} {
		got, err := Resolve(in)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestResolveRefuses(t *testing.T) {
	dir := safeDir(t)
	open := mkdir(t, filepath.Join(dir, "open"), 0o777)
	mkdir(t, filepath.Join(open, "inner"), 0o700)
	if err := os.WriteFile(filepath.Join(dir, "target"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "target"), filepath.Join(dir, "symlink")); err != nil {
		t.Fatal(err)
	}
	mkdir(t, filepath.Join(dir, "adir"), 0o700)
	if err := os.WriteFile(filepath.Join(dir, "plainfile"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"":                              "want the path of a file",
		dir + "/":                       "not of a directory",
		open + "/token":                 "directory " + open + " is writable by every user",
		open + "/inner/token":           "directory " + open + " is writable by every user",
		open + "/missing/token":         "directory " + open + " is writable by every user",
		dir + "/symlink":                "is a symbolic link: name the file it points to",
		dir + "/adir":                   "is not a regular file",
		dir + "/plainfile/token":        "not a directory",
		dir + "/plainfile/sub/token":    "not a directory",
		filepath.Join(open, "..", "x"):  "", // the parent of open is safe
		filepath.Join(dir, "ok", "tok"): "",
	}
	if os.Geteuid() == 0 {
		// Only root can give files away: as another user these are the
		// same refusals, tested where they can be set up.
		other := mkdir(t, filepath.Join(dir, "other"), 0o755)
		theirs := filepath.Join(dir, "theirs")
		if err := os.WriteFile(theirs, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{other, theirs} {
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
		cases[other+"/token"] = "directory " + other + " belongs to another user (uid 65534)"
		cases[theirs] = theirs + " belongs to another user (uid 65534)"
	}
	for in, want := range cases {
		_, err := Resolve(in)
		if want == "" {
			if err != nil {
				t.Errorf("Resolve(%q): %v", in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Resolve(%q) error %v, want %q", in, err, want)
		}
	}
}

// writeThenClose writes tok with s, then closes s.
func writeThenClose(t *testing.T, s *Sink, tok string) {
	t.Helper()
	if err := s.Write(tok); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// A plain sink writes the token and a newline, mode 0600 in a new file
// whatever the old one's mode, makes missing directories 0700, refuses a
// place that became unsafe (keeping the error), and on Close removes the
// file while it holds its token.
func TestPlainSink(t *testing.T) {
	dir := safeDir(t)
	path, err := Resolve(filepath.Join(dir, "run", "token"))
	if err != nil {
		t.Fatal(err)
	}
	s := New(Plain, path, "")
	if err := s.Write(""); err == nil {
		t.Fatal("an empty token was written")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a file after an empty token: %v", err)
	}
	if err := s.Write("tok-1"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory %v, %v; want mode 0700", fi.Mode(), err)
	}
	if data, _ := os.ReadFile(path); string(data) != "tok-1\n" {
		t.Fatalf("file %q", data)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write("tok-2"); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode() != 0o600 || os.SameFile(fi, before) {
		t.Fatalf("rewritten file: mode %v, the same file %v; want 0600 in a new file", fi.Mode(), os.SameFile(fi, before))
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("the directory holds %d files, want the token file alone", len(entries))
	}

	// The directory opens to everybody: no write, and the error is kept.
	if err := os.Chmod(filepath.Dir(path), 0o777); err != nil {
		t.Fatal(err)
	}
	err = s.Write("tok-3")
	if err == nil || !strings.Contains(err.Error(), "writable by every user") || strings.Contains(err.Error(), "tok-") {
		t.Fatalf("write in an open directory: %v", err)
	}
	if st := s.Status(); st.Err == nil || st.WrittenAt.IsZero() {
		t.Fatalf("status %+v, want the error and the last write", st)
	}
	if data, _ := os.ReadFile(path); string(data) != "tok-2\n" {
		t.Fatalf("file %q after a refused write", data)
	}
	if err := os.Chmod(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.Write("tok-3"); err != nil || s.Status().Err != nil {
		t.Fatalf("retry: %v, status %v", err, s.Status().Err)
	}

	// A symbolic link put in the file's place is not followed.
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if err := s.Write("tok-4"); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("write over a symbolic link: %v", err)
	}
	if data, _ := os.ReadFile(target); string(data) != "keep" {
		t.Fatalf("the link's target became %q", data)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}

	// Close removes the file only while it holds the sink's token.
	writeThenClose(t, s, "tok-5")
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the file outlived Close: %v", err)
	}
	if err := s.Write("tok-6"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("a closed sink wrote")
	}
	s2 := New(Plain, path, "")
	if err := s2.Write("tok-7"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("someone else's\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); string(data) != "someone else's\n" {
		t.Fatalf("Close removed or changed a file that was no longer its own: %q", data)
	}
}

// A toolkit sink keeps other servers' entries, and on Close removes its
// own entry alone, or nothing when the entry holds another token.
func TestToolkitSink(t *testing.T) {
	dir := safeDir(t)
	path := filepath.Join(dir, ".apiconnect", "token")
	if err := apic.WriteToolkitToken(path, "https://other.example.com", "other-token", "other-refresh"); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	entries := func() map[string]string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		tt, err := apic.ParseToolkitTokens(path, data)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, s := range []string{"https://other.example.com", "https://apim.example.com"} {
			if a := tt.AccessToken(s); a != "" {
				out[s] = a
			}
		}
		return out
	}
	s := New(Toolkit, path, "https://apim.example.com")
	for _, tok := range []string{"mine-1", "mine-2"} {
		if err := s.Write(tok); err != nil {
			t.Fatal(err)
		}
		if got := entries(); len(got) != 2 || got["https://other.example.com"] != "other-token" || got["https://apim.example.com"] != tok {
			t.Fatalf("entries %v", got)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := entries(); len(got) != 1 || got["https://other.example.com"] != "other-token" {
		t.Fatalf("after Close: %v", got)
	}

	// apic login wrote its own token for the server: Close keeps it.
	s2 := New(Toolkit, path, "https://apim.example.com")
	if err := s2.Write("mine-3"); err != nil {
		t.Fatal(err)
	}
	if err := apic.WriteToolkitToken(path, "https://apim.example.com", "from-apic-login", ""); err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if got := entries()["https://apim.example.com"]; got != "from-apic-login" {
		t.Fatalf("the entry apic login wrote became %q", got)
	}

	// The last entry gone, the file goes.
	alone := filepath.Join(dir, "alone")
	writeThenClose(t, New(Toolkit, alone, "https://apim.example.com"), "t")
	if _, err := os.Stat(alone); !os.IsNotExist(err) {
		t.Fatalf("a file with no entry left: %v", err)
	}

	// A file that is not a token file is refused, unchanged.
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("- a list\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := New(Toolkit, bad, "https://apim.example.com").Write("secret-token"); err == nil || strings.Contains(err.Error(), "secret-token") {
		t.Fatalf("write into a list: %v", err)
	}
}

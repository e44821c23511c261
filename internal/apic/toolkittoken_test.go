package apic

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// readToolkitTokens parses a token file back: server key to its entry.
func readToolkitTokens(t *testing.T, path string) map[string]map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var outer map[string]string
	if err := yaml.Unmarshal(data, &outer); err != nil {
		t.Fatalf("the token file is not a mapping of strings: %v\n%s", err, data)
	}
	out := map[string]map[string]string{}
	for k, v := range outer {
		var inner map[string]string
		if err := yaml.Unmarshal([]byte(v), &inner); err != nil {
			t.Fatalf("entry %s is not YAML: %v", k, err)
		}
		out[k] = inner
	}
	return out
}

func TestWriteToolkitToken(t *testing.T) {
	home := t.TempDir()
	path := ToolkitTokenFile(home)
	if path != filepath.Join(home, ".apiconnect", "token") {
		t.Fatalf("path %s", path)
	}
	if err := WriteToolkitToken(path, "https://apim.example.com/", "eyJ.a.b", ""); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if want := "https://apim.example.com/api: |\n  access_token: eyJ.a.b\n  refresh_token: \"\"\n"; string(data) != want {
		t.Errorf("file:\n%s\nwant:\n%s", data, want)
	}
	for p, mode := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700 | os.ModeDir} {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != mode {
			t.Errorf("%s: mode %v, %v; want %v", p, fi.Mode(), err, mode)
		}
	}

	// Another server's entry, in either form, and a comment stay.
	other := "# written by apic\nhttps://other.example.com/api: |\n  access_token: other-token\n  refresh_token: other-refresh\n" +
		"https://third.example.com/api: |\n  access_token: third\n  refresh_token: ''\n"
	if err := os.WriteFile(path, []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteToolkitToken(path, "https://apim.example.com", "first", ""); err != nil {
		t.Fatal(err)
	}
	if err := WriteToolkitToken(path, "https://apim.example.com", "second", "r-1"); err != nil {
		t.Fatal(err)
	}
	got := readToolkitTokens(t, path)
	want := map[string]map[string]string{
		"https://other.example.com/api": {"access_token": "other-token", "refresh_token": "other-refresh"},
		"https://third.example.com/api": {"access_token": "third", "refresh_token": ""},
		"https://apim.example.com/api":  {"access_token": "second", "refresh_token": "r-1"},
	}
	if len(got) != len(want) {
		t.Fatalf("entries %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k]["access_token"] != w["access_token"] || got[k]["refresh_token"] != w["refresh_token"] || len(got[k]) != 2 {
			t.Errorf("%s: %v, want %v", k, got[k], w)
		}
	}
	data, _ = os.ReadFile(path)
	if !strings.HasPrefix(string(data), "# written by apic\n") {
		t.Errorf("the comment is lost:\n%s", data)
	}
	if fi, _ := os.Stat(path); fi.Mode() != 0o600 {
		t.Errorf("mode %v after replacing a 0644 file, want 0600", fi.Mode())
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("the directory holds %d files, want the token file alone", len(entries))
	}
}

func TestWriteToolkitTokenRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"list":    "- a\n- b\n",
		"scalar":  "just text\n",
		"invalid": "a: [b\n",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		err := WriteToolkitToken(path, "https://h", "secret-token", "")
		if err == nil || !strings.Contains(err.Error(), "move it aside or name another file") || strings.Contains(err.Error(), "secret-token") {
			t.Errorf("%s: error %v", name, err)
		}
		if data, _ := os.ReadFile(path); string(data) != content {
			t.Errorf("%s: the file was changed to %q", name, data)
		}
	}
}

// ToolkitTokens removes one server's entry and keeps the others and the
// comments; AccessToken reads an entry back.
func TestToolkitTokensRemove(t *testing.T) {
	in := "# written by apic\nhttps://other.example.com/api: |\n  access_token: other-token\n  refresh_token: other-refresh\n" +
		"https://apim.example.com/api: |\n  access_token: mine\n  refresh_token: \"\"\n"
	tt, err := ParseToolkitTokens("token", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if got := tt.AccessToken("https://apim.example.com"); got != "mine" {
		t.Fatalf("AccessToken = %q, want mine", got)
	}
	if got := tt.AccessToken("https://absent.example.com"); got != "" {
		t.Fatalf("AccessToken of an absent server = %q", got)
	}
	if !tt.Remove("https://apim.example.com/") || tt.Remove("https://apim.example.com") {
		t.Fatal("Remove did not report the one entry it removed")
	}
	if tt.Len() != 1 {
		t.Fatalf("Len = %d after the removal, want 1", tt.Len())
	}
	out, err := tt.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	want := "# written by apic\nhttps://other.example.com/api: |\n  access_token: other-token\n  refresh_token: other-refresh\n"
	if string(out) != want {
		t.Fatalf("after Remove:\n%s\nwant:\n%s", out, want)
	}
	if !tt.Remove("https://other.example.com") || tt.Len() != 0 {
		t.Fatal("the last entry was not removed")
	}
}

func TestParseToolkitTokensErrorQuotesNothing(t *testing.T) {
	const token = "eyJhbGciOiJSUzI1NiJ9-token-text"
	_, err := ParseToolkitTokens("token", []byte("*"+token+"\naccess_token: x\n"))
	if err == nil || strings.Contains(err.Error(), token) {
		t.Fatalf("error %v, want one that does not quote the file", err)
	}
}

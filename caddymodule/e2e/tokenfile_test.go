package e2e

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

// twoSecondTokens are the simulator's 2-second tokens, renewed 1 s before
// their expiry.
var twoSecondTokens = []option{
	withSim(func(c *apicsim.Config) { c.TokenTTL = 2 * time.Second }),
	withAuth("refresh_before 1s"),
}

// readWhole reads a file as a tool does: open, read it all, close.
func readWhole(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// parsePlainToken parses a token_file: one JWT and a newline.
func parsePlainToken(data []byte) (string, error) {
	tok, ok := strings.CutSuffix(string(data), "\n")
	if !ok || strings.ContainsAny(tok, "\n\r ") {
		return "", fmt.Errorf("not one line ending in a newline: %d bytes", len(data))
	}
	return tok, checkJWT(tok)
}

// parseToolkitToken parses an apic toolkit token file as the apic CLI
// does: YAML, the server's entry a block of YAML with access_token.
func parseToolkitToken(data []byte, server string) (string, error) {
	var outer map[string]string
	if err := yaml.Unmarshal(data, &outer); err != nil {
		return "", fmt.Errorf("not a mapping of strings: %v", err)
	}
	block, ok := outer[server+"/api"]
	if !ok {
		return "", fmt.Errorf("no entry for %s/api", server)
	}
	var entry struct {
		AccessToken  string `yaml:"access_token"`
		RefreshToken string `yaml:"refresh_token"`
	}
	if err := yaml.Unmarshal([]byte(block), &entry); err != nil {
		return "", fmt.Errorf("the entry is not YAML: %v", err)
	}
	if entry.RefreshToken != "" {
		return "", errors.New("the entry holds a refresh token")
	}
	return entry.AccessToken, checkJWT(entry.AccessToken)
}

// checkJWT checks that tok is a whole JWT: three parts, a JSON header and
// claims, a signature.
func checkJWT(tok string) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || parts[2] == "" {
		return fmt.Errorf("not a JWT: %d parts", len(parts))
	}
	for _, p := range parts[:2] {
		raw, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil || !json.Valid(raw) {
			return errors.New("a JWT part is not base64url JSON")
		}
	}
	return nil
}

// tokenReader reads a token file back to back, as fast as it can, and
// checks every read: once a token has been seen, each read is a whole
// valid token, and each new token is accepted by the simulator at once.
type tokenReader struct {
	path  string
	parse func([]byte) (string, error)
	check func(tok string) error // the simulator's verdict on a new token

	reads, absent int
	failures      []string
	tokens        []string // distinct, in the order seen
	reached       chan struct{}
}

// run reads until stop is closed, closing r.reached once want distinct
// tokens have been seen.
func (r *tokenReader) run(stop <-chan struct{}, want int) {
	seen := map[string]bool{}
	for {
		select {
		case <-stop:
			return
		default:
		}
		data, err := readWhole(r.path)
		r.reads++
		if errors.Is(err, fs.ErrNotExist) && len(r.tokens) == 0 {
			r.absent++ // before the first token
			continue
		}
		var tok string
		if err == nil {
			tok, err = r.parse(data)
		}
		if err != nil {
			if len(r.failures) < 5 {
				r.failures = append(r.failures, fmt.Sprintf("read %d: %v", r.reads, err))
			}
			continue
		}
		if seen[tok] {
			continue
		}
		seen[tok] = true
		r.tokens = append(r.tokens, tok)
		if err := r.check(tok); err != nil && len(r.failures) < 5 {
			r.failures = append(r.failures, fmt.Sprintf("token %d: %v", len(r.tokens), err))
		}
		if len(r.tokens) == want {
			close(r.reached)
		}
	}
}

// TestTokenFileAcrossRenewals: with token_file and apic_config_file and
// 2-second tokens, no request through the proxy at all: the proxy logs in
// for the files and renews their token, and a reader of each file, reading
// as fast as it can while three renewals replace the file, always sees a
// whole valid token, one the simulator accepts. The files are mode 0600,
// the status shows them, and the log holds none of the tokens.
func TestTokenFileAcrossRenewals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plain := filepath.Join(dir, "run", "apic", "token") // directories made 0700
	toolkit := filepath.Join(dir, ".apiconnect", "token")
	e := newEnv(t, append(twoSecondTokens, withAuth("token_file "+plain, "apic_config_file "+toolkit))...)

	check := func(tok string) error {
		req, _ := http.NewRequest(http.MethodGet, e.simURL+"/api/me", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /api/me with it: %d", resp.StatusCode)
		}
		return nil
	}
	readers := []*tokenReader{
		{path: plain, parse: parsePlainToken},
		{path: toolkit, parse: func(b []byte) (string, error) { return parseToolkitToken(b, e.simURL) }},
	}
	const want = 4 // the first token and three renewals
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range readers {
		r.check, r.reached = check, make(chan struct{})
		wg.Add(1)
		go func() { defer wg.Done(); r.run(stop, want) }()
	}
	timer := time.NewTimer(awaitBound)
	defer timer.Stop()
	for _, r := range readers {
		select {
		case <-r.reached:
		case <-e.exited:
			t.Fatalf("the proxy exited: %v\n%s", e.waitErr, e.stderr())
		case <-timer.C:
			close(stop)
			wg.Wait()
			t.Fatalf("%s: %d distinct tokens within %s, want %d (failures %v)", r.path, len(r.tokens), awaitBound, want, r.failures)
		}
	}
	close(stop)
	wg.Wait()

	issued := e.sim.TokenRequests("password", "ok")
	for _, r := range readers {
		t.Logf("%s: %d reads (%d before the first token), %d distinct tokens, %d issued", r.path, r.reads, r.absent, len(r.tokens), issued)
		if len(r.failures) > 0 {
			t.Errorf("%s: %v", r.path, r.failures)
		}
		if len(r.tokens) > issued {
			t.Errorf("%s: %d distinct tokens, but the simulator issued %d", r.path, len(r.tokens), issued)
		}
	}
	if n := len(e.upstreamAuth()); n < 2*want {
		t.Errorf("%d calls reached the simulator's API, want the readers' checks at least", n)
	}
	for _, p := range []string{plain, toolkit, filepath.Dir(plain), filepath.Dir(toolkit)} {
		fi, err := os.Stat(p)
		wantMode := os.FileMode(0o600)
		if fi != nil && fi.IsDir() {
			wantMode = 0o700
		}
		if err != nil || fi.Mode().Perm() != wantMode {
			t.Errorf("%s: %v, %v; want mode %v", p, fi.Mode(), err, wantMode)
		}
	}
	st := e.identity()
	if len(st.TokenFiles) != 2 {
		t.Fatalf("status token_files %+v, want both files", st.TokenFiles)
	}
	for _, f := range st.TokenFiles {
		if f.WrittenAt == nil || f.Error != "" || (f.Path != plain && f.Path != toolkit) {
			t.Errorf("status of a token file: %+v", f)
		}
	}
	logs := e.logText()
	for _, r := range readers {
		for _, tok := range r.tokens {
			if strings.Contains(logs, tok[len(tok)-40:]) {
				t.Fatal("the log holds a token")
			}
		}
	}
	if !strings.Contains(logs, "wrote the token file") {
		t.Error("no write logged at debug level")
	}
}

// awaitFile reads the file at path back to back until ok accepts its
// content, and returns it: a token is handed to requests a moment before
// it is written, so a request's answer does not mean the file is there.
func awaitFile(t *testing.T, path string, ok func([]byte) bool) []byte {
	t.Helper()
	deadline := time.Now().Add(awaitBound)
	for {
		data, err := readWhole(path)
		if err == nil && ok(data) {
			return data
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no content as wanted within %s (last read: %v)", path, awaitBound, err)
		}
		runtime.Gosched()
	}
}

// TestAPICConfigFileKeepsOtherServers: the toolkit's token file gets this
// server's entry, in a new file of mode 0600 (the old one was 0644), with
// another server's entry and a comment kept; on stop, this server's entry
// goes and the rest stays.
func TestAPICConfigFileKeepsOtherServers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, ".apiconnect", "token")
	if err := os.Mkdir(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	other := "# apic login\nhttps://other.example.com/api: |\n  access_token: other-token\n  refresh_token: other-refresh\n"
	if err := os.WriteFile(path, []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, withAuth("apic_config_file {env.APIC_TEST_HOME}/.apiconnect/token"), withVar("APIC_TEST_HOME", dir))
	e.mustOK("/api/me", "first request")
	used := strings.TrimPrefix(e.upstreamAuth()[0], "Bearer ")
	data := awaitFile(t, path, func(b []byte) bool {
		tok, err := parseToolkitToken(b, e.simURL)
		return err == nil && tok == used
	})
	var outer map[string]string
	if err := yaml.Unmarshal(data, &outer); err != nil || len(outer) != 2 || outer["https://other.example.com/api"] != "access_token: other-token\nrefresh_token: other-refresh\n" {
		t.Fatalf("entries %v (%v)", outer, err)
	}
	if !strings.HasPrefix(string(data), "# apic login\n") {
		t.Errorf("the comment is lost:\n%s", data)
	}
	if fi, _ := os.Stat(path); fi.Mode() != 0o600 || os.SameFile(fi, before) {
		t.Errorf("mode %v, the same file %v; want 0600 in a new file", fi.Mode(), os.SameFile(fi, before))
	}

	e.stop()
	data, err = readWhole(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != other {
		t.Fatalf("after the stop:\n%s\nwant:\n%s", data, other)
	}
}

// TestTokenFileRemoved: the file goes when the config that names it
// stops: a reload that drops token_file (the session stays, and a reload
// that names it again writes the held token at once), and the proxy's
// stop, by a reload without apic_auth or by SIGINT; it goes before the
// session is signed out, whose token API Manager then refuses.
func TestTokenFileRemoved(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"unload", "sigint"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "token")
			opts := []option{withAuth("token_file " + path)}
			if how == "sigint" {
				opts = append(opts, withoutAdmin())
			}
			e := newEnv(t, opts...)
			e.mustOK("/api/me", "first request")
			used := strings.TrimPrefix(e.upstreamAuth()[0], "Bearer ")
			wantFile := func(step string) {
				t.Helper()
				data, err := readWhole(path)
				if err != nil || string(data) != used+"\n" {
					t.Fatalf("%s: the file holds the proxy's token: %v (%v)", step, string(data) == used+"\n", err)
				}
			}
			awaitFile(t, path, func(b []byte) bool { return string(b) == used+"\n" })

			if how == "unload" {
				// The same identity without the file: the file goes, the
				// session stays.
				without := e.caddyfile(strings.Replace(e.authBlock(), "token_file "+path, "", 1))
				e.mustReload(without)
				if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("after a reload without token_file: %v", err)
				}
				e.mustReload(e.caddyfile(e.authBlock()))
				wantFile("after a reload with token_file again")
				if n := e.sim.TokenRequests("", ""); n != 1 {
					t.Fatalf("%d token requests, want the one session's", n)
				}
				// Two identities may not keep one file.
				other := strings.Replace(e.authBlock(), "{env.APIC_PASSWORD}", "{env.APIC_ADMIN_PASSWORD}", 1)
				err := e.reload(e.caddyfile(e.authBlock() + "\n\t" + other))
				if err == nil || !strings.Contains(err.Error(), "token_file: "+path+" is kept for another identity already") {
					t.Fatalf("reload with two identities on one file: %v", err)
				}
				wantFile("after the refused reload")
			}
			e.stop()
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("after the stop: %v", err)
			}
			logs := e.logText()
			took, signed := strings.Index(logs, "took the token out of the token file"), strings.Index(logs, "signed the API Connect session out")
			if took < 0 || signed < took {
				t.Fatalf("the file removed at %d, the session signed out at %d of the log: want removal first", took, signed)
			}
			req, _ := http.NewRequest(http.MethodGet, e.simURL+"/api/me", nil)
			req.Header.Set("Authorization", "Bearer "+used)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("API Manager answers the former file's token with %d, want 401", resp.StatusCode)
			}
		})
	}
}

// TestTokenFileWriteFailureIsRetried: a write that fails (a directory
// took the file's place) is logged at WARN with the path and shown in the
// status; requests are served as before, and the next token is written.
func TestTokenFileWriteFailureIsRetried(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "token")
	e := newEnv(t, withAuth("token_file "+path))
	e.mustOK("/api/me", "first request")
	// The token file keeps the session logged in, so its first token may
	// come from the background, and a request can be answered with it
	// while the file is still being written.
	e.awaitLog("the token file written", `"msg":"wrote the token file"`)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if s, body := e.adminDo(http.MethodPost, "/apic_auth/refresh"); s != http.StatusOK {
		t.Fatalf("refresh: %d %s", s, body)
	}
	files := e.identity().TokenFiles
	if len(files) != 1 || !strings.Contains(files[0].Error, path+" is not a regular file") {
		t.Fatalf("status token_files %+v, want the write's failure", files)
	}
	var warned bool
	for line := range strings.Lines(e.logText()) {
		if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, "could not write the token file") && strings.Contains(line, `"path":"`+path+`"`) {
			warned = true
		}
	}
	if !warned {
		t.Fatal("no WARN log line with the path")
	}
	e.mustOK("/api/me", "with the file failing")

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if s, body := e.adminDo(http.MethodPost, "/apic_auth/refresh"); s != http.StatusOK {
		t.Fatalf("refresh: %d %s", s, body)
	}
	if files := e.identity().TokenFiles; len(files) != 1 || files[0].Error != "" {
		t.Fatalf("status token_files %+v after the retry, want no error", files)
	}
	data, err := readWhole(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parsePlainToken(data); err != nil {
		t.Fatalf("the file after the retry: %v", err)
	}
}

package toolkit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// choreSecrets are the secrets no chore may print.
var choreSecrets = []string{
	apicsim.DefaultAdminPassword, apicsim.DefaultProviderPassword, apicsim.DefaultClientSecret, "a-long-random-secret",
}

// clearAPICEnv empties every APIC_* variable, so that the environment
// the tests run in does not leak into the commands.
func clearAPICEnv(t *testing.T) {
	t.Helper()
	names := []string{"APIC_SERVER", "APIC_REALM", "APIC_USERNAME", "APIC_PASSWORD", "APIC_CLIENT_ID",
		"APIC_CLIENT_SECRET", "APIC_API_KEY", "APIC_TEST_PASSWORD", "APIC_PROXY_FROM"}
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "APIC_") {
			names = append(names, name)
		}
	}
	for _, n := range names {
		t.Setenv(n, "")
	}
}

// developerEnv sets the simulator's developer login in the APIC_*
// variables.
func developerEnv(t *testing.T, server string) {
	t.Helper()
	clearAPICEnv(t)
	t.Setenv("APIC_SERVER", server)
	t.Setenv("APIC_USERNAME", apicsim.DefaultProviderUsername)
	t.Setenv("APIC_PASSWORD", apicsim.DefaultProviderPassword)
	t.Setenv("APIC_CLIENT_ID", apicsim.DefaultClientID)
	t.Setenv("APIC_CLIENT_SECRET", apicsim.DefaultClientSecret)
}

// runChore runs a registered command as the binary would (cobra parses
// the flags; the flag defaults read the environment now), with stdin as
// standard input.
func runChore(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var c caddycmd.Command
	for _, cmd := range Commands() {
		if cmd.Name == args[0] {
			c = cmd
		}
	}
	if c.Name == "" {
		t.Fatalf("no command %s", args[0])
	}
	cmd := &cobra.Command{Use: c.Name, Short: c.Short}
	c.CobraFunc(cmd)
	cmd.SetArgs(args[1:])
	var out, errOut bytes.Buffer
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// checkNoChoreSecrets fails when any output holds a secret.
func checkNoChoreSecrets(t *testing.T, outputs ...string) {
	t.Helper()
	for _, o := range outputs {
		for _, s := range choreSecrets {
			if strings.Contains(o, s) {
				t.Errorf("output holds the secret %q:\n%s", s, o)
			}
		}
	}
}

// checkJWT checks that s is a JWT the simulator issued for user.
func checkJWT(t *testing.T, s, realm string) {
	t.Helper()
	if strings.Count(s, ".") != 2 {
		t.Fatalf("%q is not a JWT", s)
	}
	if exp, err := apic.JWTExpiry(s); err != nil || time.Until(exp) < 7*time.Hour {
		t.Errorf("JWT exp %v, %v; want about 8 h from now", exp, err)
	}
	if got := apic.TokenRealm(s); got != realm {
		t.Errorf("JWT realm %q, want %q", got, realm)
	}
}

// writeTestFile writes a file under dir and returns its path.
func writeTestFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAPICTokenPrintsJWT(t *testing.T) {
	sim, ts := simtest.Start(t)
	developerEnv(t, ts.URL)
	t.Setenv("APIC_PASSWORD", "")
	// The password comes from standard input.
	out, errOut, err := runChore(t, apicsim.DefaultProviderPassword+"\n", "apic-token")
	if err != nil {
		t.Fatalf("apic-token: %v\n%s", err, errOut)
	}
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("stdout %q, want the token alone on one line", out)
	}
	checkJWT(t, strings.TrimSuffix(out, "\n"), apicsim.DefaultProviderRealm)
	checkNoChoreSecrets(t, out, errOut)
	if n := sim.TokenRequests("password", "ok"); n != 1 {
		t.Errorf("%d password token requests, want 1", n)
	}
}

func TestAPICTokenJSON(t *testing.T) {
	_, ts := simtest.Start(t, func(c *apicsim.Config) { c.RefreshTokens = true })
	developerEnv(t, ts.URL)
	out, errOut, err := runChore(t, "", "apic-token", "--json")
	if err != nil {
		t.Fatalf("apic-token --json: %v\n%s", err, errOut)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out)
	}
	checkJWT(t, got["access_token"].(string), apicsim.DefaultProviderRealm)
	if got["token_type"] != "Bearer" || got["expires_in"] != 28800.0 || got["refresh_token"] == "" || got["refresh_token"] == nil {
		t.Errorf("JSON %v", got)
	}
	if re, _ := got["refresh_expires_in"].(float64); re < 57590 || re > 57600 {
		t.Errorf("refresh_expires_in %v, want 57600", got["refresh_expires_in"])
	}
	at, err := time.Parse(time.RFC3339, fmt.Sprint(got["expires_at"]))
	if err != nil || time.Until(at) < 7*time.Hour || time.Until(at) > 8*time.Hour+time.Minute {
		t.Errorf("expires_at %v, %v; want RFC 3339, 8 h from now", got["expires_at"], err)
	}
	for k := range got {
		if !slices.Contains([]string{"access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in", "expires_at"}, k) {
			t.Errorf("unexpected field %s", k)
		}
	}

	// Without refresh tokens, no refresh_token field.
	_, ts = simtest.Start(t)
	t.Setenv("APIC_SERVER", ts.URL)
	out, _, err = runChore(t, "", "apic-token", "--json")
	if err != nil || strings.Contains(out, "refresh_token") {
		t.Errorf("without refresh tokens: %v\n%s", err, out)
	}
}

func TestAPICTokenCheck(t *testing.T) {
	_, ts := simtest.Start(t)
	developerEnv(t, ts.URL)
	out, errOut, err := runChore(t, "", "apic-token", "--check")
	if err != nil {
		t.Fatalf("apic-token --check: %v\n%s", err, errOut)
	}
	for _, want := range []string{"user:    developer\n", "name:    API Developer\n", "realm:   provider/default-idp-2\n",
		"email:   developer@example.com\n", "server:  " + ts.URL + "\n", "expires: "} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "eyJ") {
		t.Errorf("--check printed the token:\n%s", out)
	}
	checkNoChoreSecrets(t, out, errOut)
}

func TestAPICTokenCheckWrongPassword(t *testing.T) {
	_, ts := simtest.Start(t)
	developerEnv(t, ts.URL)
	t.Setenv("APIC_PASSWORD", "not-the-pa55word")
	out, errOut, err := runChore(t, "", "apic-token", "--check")
	if err == nil {
		t.Fatalf("a wrong password passed the check:\n%s", out)
	}
	if out != "" {
		t.Errorf("stdout %q, want nothing", out)
	}
	want := "Error: logging in as developer (realm provider/default-idp-2): token endpoint " + ts.URL +
		"/api/token refused the credentials (password grant): status 401: Invalid username or password.\n"
	if errOut != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", errOut, want)
	}
	if strings.Contains(errOut, "not-the-pa55word") {
		t.Error("stderr holds the password")
	}
}

func TestAPICTokenAPICConfig(t *testing.T) {
	_, ts := simtest.Start(t)
	developerEnv(t, ts.URL)
	home := t.TempDir()
	t.Setenv("HOME", home)
	path := filepath.Join(home, ".apiconnect", "token")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Dir(path), "token", "https://other.example.com/api: |\n  access_token: other-token\n  refresh_token: \"\"\n", 0o644)

	out, errOut, err := runChore(t, "", "apic-token", "--apic-config")
	if err != nil {
		t.Fatalf("apic-token --apic-config: %v\n%s", err, errOut)
	}
	if out != "" {
		t.Errorf("stdout %q, want nothing", out)
	}
	if !strings.HasPrefix(errOut, "wrote the token for "+ts.URL+"/api to "+path+" (expires ") {
		t.Errorf("stderr %q", errOut)
	}
	entries := readTokenFile(t, path)
	if len(entries) != 2 || entries["https://other.example.com/api"]["access_token"] != "other-token" {
		t.Errorf("entries %v, want the other server's kept", entries)
	}
	mine := entries[ts.URL+"/api"]
	checkJWT(t, mine["access_token"], apicsim.DefaultProviderRealm)
	if rt, ok := mine["refresh_token"]; !ok || rt != "" || len(mine) != 2 {
		t.Errorf("entry %v, want access_token and an empty refresh_token", mine)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode() != 0o600 {
		t.Errorf("mode %v, %v; want 0600", fi.Mode(), err)
	}

	// --apic-config-file names another file, in a new directory, and
	// --json prints the token too.
	other := filepath.Join(t.TempDir(), "cfg", "token")
	out, _, err = runChore(t, "", "apic-token", "--apic-config-file", other, "--json")
	if err != nil || !strings.Contains(out, `"access_token"`) {
		t.Fatalf("--apic-config-file --json: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Dir(other)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("new directory mode %v, %v; want 0700", fi.Mode(), err)
	}
	if e := readTokenFile(t, other); len(e) != 1 || e[ts.URL+"/api"]["access_token"] == "" {
		t.Errorf("entries %v", e)
	}
}

// readTokenFile parses a toolkit token file back with yaml.v3: server key
// to the fields of its block.
func readTokenFile(t *testing.T, path string) map[string]map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var outer map[string]string
	if err := yaml.Unmarshal(data, &outer); err != nil {
		t.Fatalf("token file: %v\n%s", err, data)
	}
	out := map[string]map[string]string{}
	for k, v := range outer {
		var inner map[string]string
		if err := yaml.Unmarshal([]byte(v), &inner); err != nil {
			t.Fatalf("entry %s: %v", k, err)
		}
		out[k] = inner
	}
	return out
}

func TestAPICTokenCredentialsFile(t *testing.T) {
	_, ts := simtest.Start(t)
	clearAPICEnv(t)
	dir := t.TempDir()
	creds := writeTestFile(t, dir, "credentials.json", fmt.Sprintf(
		`{"cloud_id":"c","toolkit":{"endpoint":"%s/api","client_id":"%s","client_secret":"%s"}}`,
		ts.URL, apicsim.DefaultClientID, apicsim.DefaultClientSecret), 0o600)
	// The variables lose to the file.
	t.Setenv("APIC_SERVER", "http://127.0.0.1:1")
	t.Setenv("APIC_CLIENT_ID", "wrong-id")
	t.Setenv("APIC_CLIENT_SECRET", "wrong-secret")
	t.Setenv("APIC_USERNAME", apicsim.DefaultProviderUsername)
	t.Setenv("APIC_PASSWORD", apicsim.DefaultProviderPassword)
	out, errOut, err := runChore(t, "", "apic-token", "--credentials", creds)
	if err != nil {
		t.Fatalf("apic-token --credentials: %v\n%s", err, errOut)
	}
	checkJWT(t, strings.TrimSpace(out), apicsim.DefaultProviderRealm)

	// A flag on the command line wins over the file: another client id
	// does not take the file's secret.
	_, errOut, err = runChore(t, "", "apic-token", "--credentials", creds, "--client-id", "other-client")
	if err == nil || !strings.Contains(errOut, "Invalid client id or secret.") {
		t.Errorf("--client-id over --credentials: %v\n%s", err, errOut)
	}
	bogus := writeTestFile(t, dir, "bogus.json", `{"toolkit":{"endpoint":"http://127.0.0.1:1/api","client_id":"clientID","client_secret":"clientPassword"}}`, 0o600)
	out, errOut, err = runChore(t, "", "apic-token", "--credentials", bogus, "--server", ts.URL)
	if err != nil {
		t.Fatalf("--server over --credentials: %v\n%s", err, errOut)
	}
	checkJWT(t, strings.TrimSpace(out), apicsim.DefaultProviderRealm)

	_, errOut, err = runChore(t, "", "apic-token", "--credentials", writeTestFile(t, dir, "bad.json", `{"toolkit":{"client_secret":"a-long-random-secret"}}`, 0o600))
	if err == nil || !strings.Contains(errOut, "--credentials "+dir+"/bad.json: missing toolkit.endpoint, toolkit.client_id") {
		t.Errorf("bad credentials.json: %v\n%s", err, errOut)
	}
	checkNoChoreSecrets(t, errOut)
}

func TestAPICTokenOptionErrors(t *testing.T) {
	_, ts := simtest.Start(t)
	dir := t.TempDir()
	empty := writeTestFile(t, dir, "empty", "\n", 0o600)
	for _, tc := range []struct {
		name  string
		env   map[string]string
		stdin string
		args  []string
		want  string
	}{
		{"no server", nil, "", nil, "missing --server (or --to, APIC_SERVER or --credentials: the API Connect platform API base URL), --username (APIC_USERNAME), a password (APIC_PASSWORD, --password-file or standard input), --client-id (APIC_CLIENT_ID or --credentials), a client secret (APIC_CLIENT_SECRET, --client-secret-file or --credentials)"},
		{"no server, user given", map[string]string{"APIC_USERNAME": "developer", "APIC_PASSWORD": "p", "APIC_CLIENT_ID": "clientID"}, "", nil,
			"missing --server (or --to, APIC_SERVER or --credentials: the API Connect platform API base URL), a client secret (APIC_CLIENT_SECRET, --client-secret-file or --credentials)"},
		{"server with /api", map[string]string{"APIC_SERVER": ts.URL + "/api"}, "", nil, "APIC_SERVER: give the base URL without the trailing /api"},
		{"--to with /api", nil, "", []string{"--to", ts.URL + "/api/"}, "--to: give the base URL without the trailing /api"},
		{"two servers", nil, "", []string{"--to", ts.URL, "--server", "http://other"}, "--server and --to name different servers"},
		{"nothing", map[string]string{"APIC_SERVER": ts.URL}, "", nil,
			"missing --username (APIC_USERNAME), a password (APIC_PASSWORD, --password-file or standard input), --client-id (APIC_CLIENT_ID or --credentials), a client secret (APIC_CLIENT_SECRET, --client-secret-file or --credentials)"},
		{"no password on stdin", map[string]string{"APIC_SERVER": ts.URL, "APIC_USERNAME": "developer", "APIC_CLIENT_ID": "clientID", "APIC_CLIENT_SECRET": "clientPassword"}, "", nil,
			"no password: set APIC_PASSWORD, use --password-file, or pipe it on standard input"},
		{"empty password file", map[string]string{"APIC_SERVER": ts.URL, "APIC_USERNAME": "developer", "APIC_CLIENT_ID": "clientID", "APIC_CLIENT_SECRET": "clientPassword"}, "",
			[]string{"--password-file", empty}, "--password-file: " + empty + " is empty"},
		{"missing secret file", map[string]string{"APIC_SERVER": ts.URL}, "", []string{"--client-secret-file", dir + "/none"}, "--client-secret-file: open " + dir + "/none: no such file"},
		{"bad realm", map[string]string{"APIC_SERVER": ts.URL, "APIC_USERNAME": "developer", "APIC_PASSWORD": "p", "APIC_CLIENT_ID": "clientID", "APIC_CLIENT_SECRET": "clientPassword"}, "",
			[]string{"--realm", "default-idp-2"}, `--realm (APIC_REALM) "default-idp-2": want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server ` + ts.URL},
		{"json and check", nil, "", []string{"--json", "--check"}, "--json and --check exclude each other"},
		{"insecure and ca", map[string]string{"APIC_SERVER": ts.URL}, "", []string{"--insecure", "--ca-cert", empty}, "--insecure and --ca-cert exclude each other"},
		{"timeout", map[string]string{"APIC_SERVER": ts.URL}, "", []string{"--timeout", "0s"}, "--timeout: want a positive duration, got 0s"},
		{"argument", nil, "", []string{"extra"}, `unknown command "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearAPICEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			out, errOut, err := runChore(t, tc.stdin, append([]string{"apic-token"}, tc.args...)...)
			if err == nil || !strings.Contains(errOut, tc.want) || !strings.HasPrefix(errOut, "Error: ") {
				t.Errorf("error %v, stderr %q; want %q", err, errOut, tc.want)
			}
			if out != "" && tc.name != "argument" { // cobra prints the usage for a wrong argument
				t.Errorf("stdout %q", out)
			}
		})
	}
}

func TestAPICTokenCACert(t *testing.T) {
	_, ts, certs := simtest.StartTLS(t, []string{"127.0.0.1"})
	developerEnv(t, ts.URL)
	ca := writeTestFile(t, t.TempDir(), "ca.pem", string(certs.CAPEM), 0o600)

	out, errOut, err := runChore(t, "", "apic-token", "--ca-cert", ca)
	if err != nil {
		t.Fatalf("--ca-cert: %v\n%s", err, errOut)
	}
	checkJWT(t, strings.TrimSpace(out), apicsim.DefaultProviderRealm)
	_, errOut, err = runChore(t, "", "apic-token")
	if err == nil || !strings.Contains(errOut, "the certificate of "+strings.TrimPrefix(ts.URL, "https://")+" is not trusted: x509: certificate signed by unknown authority") || !strings.HasSuffix(errOut, "; name its CA with --ca-cert\n") {
		t.Errorf("without --ca-cert: %v\n%s", err, errOut)
	}
	out, errOut, err = runChore(t, "", "apic-token", "--insecure")
	if err != nil || !strings.Contains(errOut, "warning: --insecure") {
		t.Errorf("--insecure: %v\n%s", err, errOut)
	}
	checkJWT(t, strings.TrimSpace(out), apicsim.DefaultProviderRealm)
}

func TestAPICTokenAPIKey(t *testing.T) {
	_, ts := simtest.Start(t)
	clearAPICEnv(t)
	// An API key of the developer, made with a token of the developer.
	tok := simToken(t, ts.URL, apicsim.DefaultProviderRealm, apicsim.DefaultProviderUsername, apicsim.DefaultProviderPassword)
	var created struct {
		APIKey string `json:"api_key"`
	}
	simCall(t, http.MethodPost, ts.URL+"/api/cloud/api-keys", tok, `{"client_type":"toolkit","description":"made by a test"}`, http.StatusCreated, &created)
	key := created.APIKey
	if key == "" {
		t.Fatal("POST /api/cloud/api-keys gave no api_key")
	}
	keyFile := writeTestFile(t, t.TempDir(), "key", key+"\n", 0o600)
	t.Setenv("APIC_CLIENT_ID", apicsim.DefaultClientID)
	t.Setenv("APIC_CLIENT_SECRET", apicsim.DefaultClientSecret)
	out, errOut, err := runChore(t, "", "apic-token", "--to", ts.URL, "--api-key-file", keyFile, "--check")
	if err != nil {
		t.Fatalf("--api-key-file --check: %v\n%s", err, errOut)
	}
	if !strings.Contains(out, "user:    developer\n") || !strings.Contains(out, "realm:   provider/default-idp-2\n") {
		t.Errorf("report:\n%s", out)
	}
	if strings.Contains(out+errOut, key) {
		t.Error("the output holds the API key")
	}
}

// adminEnv sets the simulator's Cloud Manager login in the APIC_*
// variables.
func adminEnv(t *testing.T, server string) {
	t.Helper()
	clearAPICEnv(t)
	t.Setenv("APIC_SERVER", server)
	t.Setenv("APIC_USERNAME", apicsim.DefaultAdminUsername)
	t.Setenv("APIC_PASSWORD", apicsim.DefaultAdminPassword)
	t.Setenv("APIC_CLIENT_ID", apicsim.DefaultClientID)
	t.Setenv("APIC_CLIENT_SECRET", apicsim.DefaultClientSecret)
}

const registrationFile = "testdata/registration.yaml"

func TestAPICRegister(t *testing.T) {
	sim := simtest.New(t)
	// Record the client id of every token request on the way to the
	// simulator.
	var clients struct {
		sync.Mutex
		ids []string
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/token" {
			body, _ := io.ReadAll(r.Body)
			var req struct {
				ClientID string `json:"client_id"`
			}
			_ = json.Unmarshal(body, &req)
			clients.Lock()
			clients.ids = append(clients.ids, req.ClientID)
			clients.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	adminEnv(t, ts.URL)
	t.Setenv("APIC_TEST_PASSWORD", apicsim.DefaultProviderPassword)
	out, errOut, err := runChore(t, "", "apic-register", registrationFile, "--test-username", "developer")
	if err != nil {
		t.Fatalf("apic-register: %v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 5 || lines[0] != "created registration apic-auth-proxy-ci" || lines[1] != "  state:     enabled" ||
		lines[2] != "  client id: apic-auth-proxy-ci" || !strings.HasPrefix(lines[3], "  url:       "+ts.URL+"/api/cloud/registrations/") ||
		!strings.HasPrefix(lines[4], "token request with the new registration: ok (expires ") {
		t.Errorf("stdout:\n%s", out)
	}
	exp := strings.TrimSuffix(strings.TrimPrefix(lines[len(lines)-1], "token request with the new registration: ok (expires "), ")")
	if at, err := time.Parse(time.RFC3339, exp); err != nil || time.Until(at) < 7*time.Hour {
		t.Errorf("expiry %q: %v", exp, err)
	}
	checkNoChoreSecrets(t, out, errOut)

	// The test used the new client id for the developer.
	recs := sim.RecentTokenRequests()
	if len(recs) != 2 || recs[1].Username != "developer" || recs[1].Status != 200 {
		t.Errorf("token requests %+v, want the admin's and then the developer's, both ok", recs)
	}
	clients.Lock()
	if !slices.Equal(clients.ids, []string{apicsim.DefaultClientID, "apic-auth-proxy-ci"}) {
		t.Errorf("token requests with the client ids %q, want the admin's with clientID, the test with apic-auth-proxy-ci", clients.ids)
	}
	clients.Unlock()

	// The simulator lists it.
	tok := simToken(t, ts.URL, apicsim.DefaultAdminRealm, apicsim.DefaultAdminUsername, apicsim.DefaultAdminPassword)
	var list struct {
		Results []apic.Registration `json:"results"`
	}
	simCall(t, http.MethodGet, ts.URL+"/api/cloud/registrations", tok, "", http.StatusOK, &list)
	if regs := list.Results; !slices.ContainsFunc(regs, func(r apic.Registration) bool {
		return r.Name == "apic-auth-proxy-ci" && r.ClientID == "apic-auth-proxy-ci" && r.Title == "apic-auth-proxy CI" && len(r.Scopes) == 7
	}) {
		t.Errorf("registrations %+v lack apic-auth-proxy-ci", regs)
	}

	// A second time: 409 in plain words.
	out, errOut, err = runChore(t, "", "apic-register", registrationFile, "--test-username", "developer")
	want := "Error: a registration named apic-auth-proxy-ci (or with that client id) already exists (API Connect said: "
	if err == nil || out != "" || !strings.HasPrefix(errOut, want) {
		t.Errorf("duplicate: %v\nstdout %q\nstderr %q\nwant %q", err, out, errOut, want)
	}
	checkNoChoreSecrets(t, out, errOut)
}

func TestAPICRegisterPasswordsOnStdin(t *testing.T) {
	_, ts := simtest.Start(t)
	adminEnv(t, ts.URL)
	t.Setenv("APIC_PASSWORD", "")
	out, errOut, err := runChore(t, apicsim.DefaultAdminPassword+"\n"+apicsim.DefaultProviderPassword+"\n",
		"apic-register", registrationFile, "--test-username", "developer", "--test-realm", "provider/default-idp-2")
	if err != nil || !strings.Contains(out, "token request with the new registration: ok (expires ") {
		t.Fatalf("both passwords on stdin: %v\n%s\n%s", err, out, errOut)
	}
	checkNoChoreSecrets(t, out, errOut)

	// Only one line: the test password is missing, and nothing is sent.
	sim, other := simtest.Start(t)
	t.Setenv("APIC_SERVER", other.URL)
	_, errOut, err = runChore(t, apicsim.DefaultAdminPassword+"\n", "apic-register", registrationFile, "--test-username", "developer")
	if err == nil || !strings.Contains(errOut, "no test password: set APIC_TEST_PASSWORD, use --test-password-file, or pipe it on standard input after the Cloud Manager password") {
		t.Errorf("one line on stdin: %v\n%s", err, errOut)
	}
	if n := sim.TokenRequests("", ""); n != 0 {
		t.Errorf("%d token requests before all passwords were read, want none", n)
	}
}

func TestAPICRegisterWithoutTestUser(t *testing.T) {
	_, ts := simtest.Start(t)
	adminEnv(t, ts.URL)
	out, errOut, err := runChore(t, "", "apic-register", registrationFile)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	if !strings.HasSuffix(out, "token request with the new registration: not tried (name a user with --test-username)\n") {
		t.Errorf("stdout:\n%s", out)
	}
}

func TestAPICRegisterNotCloudManager(t *testing.T) {
	_, ts := simtest.Start(t)
	developerEnv(t, ts.URL)
	t.Setenv("APIC_REALM", apicsim.DefaultProviderRealm)
	out, errOut, err := runChore(t, "", "apic-register", registrationFile)
	want := "Error: user developer may not create registrations: log in as a Cloud Manager user (realm admin/...) (API Connect said: This operation needs a Cloud Manager user (realm admin/...).)\n"
	if err == nil || out != "" || errOut != want {
		t.Errorf("developer: %v\nstdout %q\nstderr %q\nwant   %q", err, out, errOut, want)
	}
}

func TestAPICRegisterRefusedLogin(t *testing.T) {
	_, ts := simtest.Start(t)
	adminEnv(t, ts.URL)
	t.Setenv("APIC_PASSWORD", "wr0ng-pa55word")
	_, errOut, err := runChore(t, "", "apic-register", registrationFile)
	want := "Error: logging in as admin (realm admin/default-idp-1): token endpoint " + ts.URL +
		"/api/token refused the credentials (password grant): status 401: Invalid username or password.\n"
	if err == nil || errOut != want {
		t.Errorf("wrong password: %v\nstderr %q\nwant   %q", err, errOut, want)
	}
}

func TestAPICRegisterTestLoginFails(t *testing.T) {
	_, ts := simtest.Start(t)
	adminEnv(t, ts.URL)
	t.Setenv("APIC_TEST_PASSWORD", "wr0ng-pa55word")
	out, errOut, err := runChore(t, "", "apic-register", registrationFile, "--test-username", "developer")
	if err == nil || !strings.HasPrefix(out, "created registration apic-auth-proxy-ci\n") ||
		!strings.Contains(errOut, "Error: the registration apic-auth-proxy-ci was created, but a token request with it for developer (realm provider/default-idp-2) failed: ") ||
		!strings.Contains(errOut, "Invalid username or password.") {
		t.Errorf("%v\nstdout %q\nstderr %q", err, out, errOut)
	}
}

func TestAPICRegisterBadDocument(t *testing.T) {
	sim, ts := simtest.Start(t)
	adminEnv(t, ts.URL)
	dir := t.TempDir()
	for _, tc := range []struct{ doc, want string }{
		{"name: x\nclient_id: y\n", "registration document " + dir + "/reg.yaml: missing client_secret"},
		{"type: user\n", `registration document ` + dir + `/reg.yaml: type: want registration, got "user"`},
		{"- a\n", "want a mapping of registration fields"},
	} {
		writeTestFile(t, dir, "reg.yaml", tc.doc, 0o600)
		_, errOut, err := runChore(t, "", "apic-register", filepath.Join(dir, "reg.yaml"))
		if err == nil || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: %v\n%s", tc.doc, err, errOut)
		}
	}
	_, errOut, err := runChore(t, "", "apic-register", filepath.Join(dir, "none.yaml"))
	if err == nil || !strings.Contains(errOut, "reading the registration document: open "+dir+"/none.yaml: no such file") {
		t.Errorf("missing file: %v\n%s", err, errOut)
	}
	if _, errOut, err := runChore(t, "", "apic-register"); err == nil || !strings.Contains(errOut, "accepts 1 arg(s), received 0") {
		t.Errorf("no argument: %v\n%s", err, errOut)
	}
	for realm, want := range map[string]string{
		"":              "Error: missing --test-realm\n",
		"default-idp-2": `Error: --test-realm "default-idp-2": want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server ` + ts.URL + "\n",
	} {
		_, errOut, err := runChore(t, "", "apic-register", registrationFile, "--test-username", "developer", "--test-realm", realm)
		if err == nil || errOut != want {
			t.Errorf("--test-realm %q: %v\nstderr %q\nwant   %q", realm, err, errOut, want)
		}
	}
	if n := sim.TokenRequests("", ""); n != 0 {
		t.Errorf("%d token requests for bad documents, want none", n)
	}
}

func TestAPICRegisterJSONDocument(t *testing.T) {
	_, ts := simtest.Start(t)
	adminEnv(t, ts.URL)
	doc := writeTestFile(t, t.TempDir(), "reg.json",
		`{"type":"registration","api_version":"2.0.0","id":"old","url":"https://old","name":"json-reg","client_id":"json-id","client_secret":"a-long-random-secret","scopes":["my:view"]}`, 0o600)
	out, errOut, err := runChore(t, "", "apic-register", doc)
	if err != nil || !strings.HasPrefix(out, "created registration json-reg\n") {
		t.Errorf("%v\n%s\n%s", err, out, errOut)
	}
}

func TestAPICRealms(t *testing.T) {
	sim, ts := simtest.Start(t)
	clearAPICEnv(t)
	out, errOut, err := runChore(t, "", "apic-realms", "--server", ts.URL)
	if err != nil {
		t.Fatalf("apic-realms: %v\n%s", err, errOut)
	}
	want := "" +
		"REALM                   TITLE                        TYPE  DEFAULT\n" +
		"admin/default-idp-1     Cloud Manager User Registry  lur   yes\n" +
		"provider/default-idp-2  API Manager User Registry    lur   yes\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	if errOut != "" {
		t.Errorf("stderr %q", errOut)
	}

	t.Setenv("APIC_SERVER", ts.URL)
	out, _, err = runChore(t, "", "apic-realms", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Admin, Provider struct {
			TotalResults int `json:"total_results"`
			Results      []struct {
				Name, Realm string
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if got.Admin.TotalResults != 1 || got.Admin.Results[0].Realm != "admin/default-idp-1" ||
		got.Provider.TotalResults != 1 || got.Provider.Results[0].Realm != "provider/default-idp-2" {
		t.Errorf("--json: %+v", got)
	}
	if n := sim.TokenRequests("", ""); n != 0 {
		t.Errorf("%d token requests, want none", n)
	}
}

func TestAPICRealmsCredentialsFile(t *testing.T) {
	_, ts := simtest.Start(t)
	clearAPICEnv(t)
	creds := writeTestFile(t, t.TempDir(), "credentials.json",
		`{"toolkit":{"endpoint":"`+ts.URL+`/api","client_id":"clientID","client_secret":"clientPassword"}}`, 0o600)
	out, errOut, err := runChore(t, "", "apic-realms", "--credentials", creds)
	if err != nil || !strings.Contains(out, "provider/default-idp-2") {
		t.Errorf("--credentials: %v\n%s\n%s", err, out, errOut)
	}
	closed := httptest.NewServer(nil)
	closed.Close()
	_, errOut, err = runChore(t, "", "apic-realms", "--to", closed.URL)
	if err == nil || !strings.Contains(errOut, "Error: listing the admin identity providers: GET "+closed.URL+"/api/cloud/admin/identity-providers: unreachable") {
		t.Errorf("closed server: %v\n%s", err, errOut)
	}
}

// TestAPICTokenFunction calls the command function directly, with options
// made in code.
func TestAPICTokenFunction(t *testing.T) {
	_, ts := simtest.Start(t)
	o := tokenOptions{loginOptions: loginOptions{
		ServerOptions: ServerOptions{Server: ts.URL, Timeout: defaultCallTimeout},
		Credentials: apic.Credentials{
			Realm: apicsim.DefaultAdminRealm, Username: apicsim.DefaultAdminUsername, Password: apicsim.DefaultAdminPassword,
			ClientID: apicsim.DefaultClientID, ClientSecret: apicsim.DefaultClientSecret,
		},
	}, Check: true}
	var out, errOut bytes.Buffer
	if err := runAPICToken(t.Context(), o, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "user:    admin\n") || !strings.Contains(out.String(), "realm:   admin/default-idp-1\n") {
		t.Errorf("report:\n%s", out.String())
	}
}

func TestChoreTimeout(t *testing.T) {
	clearAPICEnv(t)
	stop := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // so that a closed connection ends r.Context()
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(stop) }) // runs first
	_, errOut, err := runChore(t, "", "apic-realms", "--server", hang.URL, "--timeout", "100ms")
	want := "Error: listing the admin identity providers: GET " + hang.URL + "/api/cloud/admin/identity-providers: timed out\n"
	if err == nil || errOut != want {
		t.Errorf("%v\nstderr %q\nwant   %q", err, errOut, want)
	}
	t.Setenv("APIC_PASSWORD", "p")
	_, errOut, err = runChore(t, "", "apic-token", "--to", hang.URL, "--timeout", "100ms", "--username", "u", "--client-id", "c", "--client-secret-file", writeTestFile(t, t.TempDir(), "s", "s", 0o600))
	if err == nil || !strings.Contains(errOut, "token endpoint "+hang.URL+"/api/token timed out") {
		t.Errorf("apic-token: %v\n%s", err, errOut)
	}
}

// simToken logs in to the simulator at server as one of its users, with
// its default registration, and returns the access token.
func simToken(t *testing.T, server, realm, username, password string) string {
	t.Helper()
	hc, _ := apic.NewHTTPClient(false, nil)
	defer hc.CloseIdleConnections()
	c := &apic.Client{Server: server, HTTP: hc, Credentials: apic.Credentials{
		Realm: realm, Username: username, Password: password,
		ClientID: apicsim.DefaultClientID, ClientSecret: apicsim.DefaultClientSecret,
	}}
	tok, err := c.Login(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// simCall sends a JSON request with a bearer token and decodes the answer
// into v, failing the test unless the status is want.
func simCall(t *testing.T, method, url, token, body string, want int, v any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	hc, _ := apic.NewHTTPClient(false, nil)
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil || resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, %v; want %d", method, url, resp.StatusCode, err, want)
	}
}

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

// ready returns GET /apic_auth/ready (with query), decoded (its fields
// are some of the status's), and its Retry-After header.
func (e *env) ready(query string) (int, []identityStatus, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://localhost/apic_auth/ready"+query, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := e.admin.client.Do(req)
	if err != nil {
		e.t.Fatalf("GET /apic_auth/ready%s: %v", query, err)
	}
	defer resp.Body.Close()
	var out []identityStatus
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		e.t.Fatalf("GET /apic_auth/ready%s: %d, body not a list: %v", query, resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Errorf("GET /apic_auth/ready: Content-Type %q", ct)
	}
	return resp.StatusCode, out, resp.Header.Get("Retry-After")
}

// command is one run of the binary's status command.
type command struct {
	code           int
	stdout, stderr string
}

// runStatus runs the binary's status command, in the proxy's environment,
// with args; without --address or --config in args, it names the env's
// admin socket.
func (e *env) runStatus(args ...string) command {
	e.t.Helper()
	return run(e.t, e.statusCmd(args...))
}

func (e *env) statusCmd(args ...string) *exec.Cmd {
	named := false
	for _, a := range args {
		named = named || strings.HasPrefix(a, "--address") || strings.HasPrefix(a, "--config")
	}
	if !named {
		args = append(args, "--address", "unix/"+e.adminSock)
	}
	cmd := exec.Command(binary(e.t), append([]string{"status"}, args...)...)
	cmd.Env = e.environ()
	cmd.Dir = e.dir
	return cmd
}

// finish returns how cmd ended, failing the test unless it ran and
// exited with a status.
func (e *env) finish(cmd *exec.Cmd, err error, stdout, stderr *bytes.Buffer) command {
	e.t.Helper()
	return finish(e.t, cmd, err, stdout, stderr)
}

// finish is env.finish for a command run outside an env.
func finish(t *testing.T, cmd *exec.Cmd, err error, stdout, stderr *bytes.Buffer) command {
	t.Helper()
	c := command{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.Exited():
		c.code = exit.ExitCode()
	default:
		t.Fatalf("%v: %v\n%s", cmd.Args, err, stderr)
	}
	return c
}

// run runs cmd and returns how it ended.
func run(t *testing.T, cmd *exec.Cmd) command {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return finish(t, cmd, cmd.Run(), &stdout, &stderr)
}

// row returns the table row of the identity name in the status command's
// output, split into its columns, after checking the header.
func row(t *testing.T, out, name string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if h := strings.Fields(lines[0]); strings.Join(h, " ") != "NAME USER STATE EXPIRES-IN NEXT-REFRESH LAST-ERROR" {
		t.Fatalf("table header %q:\n%s", lines[0], out)
	}
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) >= 6 && f[0] == name {
			return f
		}
	}
	t.Fatalf("no row for %s in:\n%s", name, out)
	return nil
}

// noSecret fails the test if any of texts holds a secret of the
// simulator's users or the proxy's token.
func (e *env) noSecret(texts ...string) {
	e.t.Helper()
	secrets := []string{apicsim.DefaultProviderPassword, apicsim.DefaultClientSecret, e.vars["APIC_PASSWORD"]}
	for _, a := range e.upstreamAuth() {
		if tok, ok := strings.CutPrefix(a, "Bearer "); ok && len(tok) > 40 {
			secrets = append(secrets, tok[:40])
		}
	}
	for _, s := range texts {
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				e.t.Fatalf("output holds a secret or the token:\n%s", s)
			}
		}
	}
}

// TestReadyAndStatusNoTokenThenValid: before the first request the
// identity has no token, so /apic_auth/ready answers 503 and the status
// command exits 2; once a request has logged in, 200 and 0. The metric
// follows, HEAD works, ?name= picks one identity.
func TestReadyAndStatusNoTokenThenValid(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAuth("name ci-developer"))
	metric := `caddy_apic_auth_ready{identity="ci-developer"}`

	code, rd, retry := e.ready("")
	if code != http.StatusServiceUnavailable || len(rd) != 1 || rd[0].Name != "ci-developer" || rd[0].Ready || rd[0].State != "no_token" || retry != "" {
		t.Fatalf("ready before any request: %d %+v Retry-After %q", code, rd, retry)
	}
	if s, body := e.adminDo(http.MethodHead, "/apic_auth/ready"); s != http.StatusServiceUnavailable || body != "" {
		t.Fatalf("HEAD ready before any request: %d %q", s, body)
	}
	if v, ok := metricValue(e.metrics(), metric); !ok || v != 0 {
		t.Fatalf("%s = %v (%v), want 0", metric, v, ok)
	}
	c := e.runStatus()
	if f := row(t, c.stdout, "ci-developer"); c.code != 2 || f[1] != apicsim.DefaultProviderUsername || f[2] != "no_token" || f[3] != "-" || f[4] != "-" || f[5] != "-" {
		t.Fatalf("status before any request: exit %d\n%s%s", c.code, c.stdout, c.stderr)
	}

	e.mustOK("/api/me", "first request")
	code, rd, retry = e.ready("")
	if code != http.StatusOK || len(rd) != 1 || !rd[0].Ready || rd[0].State != "valid" || rd[0].TokenExpires == nil || rd[0].LastError != "" || retry != "" {
		t.Fatalf("ready with a token: %d %+v Retry-After %q", code, rd, retry)
	}
	if s, body := e.adminDo(http.MethodHead, "/apic_auth/ready?name=ci-developer"); s != http.StatusOK || body != "" {
		t.Fatalf("HEAD ready with a token: %d %q", s, body)
	}
	if s, _ := e.adminDo(http.MethodHead, "/apic_auth/ready?name=nobody"); s != http.StatusNotFound {
		t.Fatalf("ready of an unknown identity: %d, want 404", s)
	}
	if s, _ := e.adminDo(http.MethodPost, "/apic_auth/ready"); s != http.StatusMethodNotAllowed {
		t.Fatalf("POST ready: %d, want 405", s)
	}
	if v, ok := metricValue(e.metrics(), metric); !ok || v != 1 {
		t.Fatalf("%s = %v (%v), want 1", metric, v, ok)
	}
	if st := e.identity(); !st.Ready || st.State != "valid" {
		t.Fatalf("status with a token: %+v", st)
	}

	c = e.runStatus()
	f := row(t, c.stdout, "ci-developer")
	if c.code != 0 || f[2] != "valid" || f[5] != "-" {
		t.Fatalf("status with a token: exit %d\n%s%s", c.code, c.stdout, c.stderr)
	}
	// The simulator's tokens live 8 h, refreshed 2 h before expiry.
	if !strings.HasPrefix(f[3], "7h59m") && f[3] != "8h0m" || !strings.HasPrefix(f[4], "5h59m") && f[4] != "6h0m" {
		t.Errorf("EXPIRES-IN %q NEXT-REFRESH %q, want about 8h0m and 6h0m", f[3], f[4])
	}
	c = e.runStatus("--name", "ci-developer")
	if c.code != 0 || len(strings.Split(strings.TrimSpace(c.stdout), "\n")) != 2 {
		t.Fatalf("status --name: exit %d\n%s%s", c.code, c.stdout, c.stderr)
	}
	c = e.runStatus("--name", "nobody")
	if c.code != 2 || c.stdout != "" || !strings.Contains(c.stderr, `no apic_auth identity named "nobody"`) {
		t.Fatalf("status --name nobody: exit %d\n%s%s", c.code, c.stdout, c.stderr)
	}

	// --format json prints the endpoint's JSON; the admin address comes
	// from the config file as well as from --address.
	c = e.runStatus("--format", "json", "--config", filepath.Join(e.dir, "Caddyfile"), "--adapter", "caddyfile")
	var st []identityStatus
	if err := json.Unmarshal([]byte(c.stdout), &st); err != nil || c.code != 0 || len(st) != 1 || st[0].State != "valid" || !st[0].Ready || st[0].Counts.TokenRequests["password"]["ok"] != 1 {
		t.Fatalf("status --format json --config: exit %d (%v)\n%s%s", c.code, err, c.stdout, c.stderr)
	}
	e.noSecret(c.stdout)
	if c := e.runStatus("--format", "yaml"); c.code != 1 || !strings.Contains(c.stderr, "--format: want table or json") {
		t.Fatalf("status --format yaml: exit %d\n%s", c.code, c.stderr)
	}
}

// TestReadyAndStatusCoolingDown: a wrong password puts the identity in
// its cool-down: /apic_auth/ready answers 503 with the cause and the
// scrubbed error and Retry-After, the status command exits 2 and shows
// the error short in the table and whole in JSON, never a secret.
func TestReadyAndStatusCoolingDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAuth("name ci-developer"), withVar("APIC_PASSWORD", "not-the-pa55word"))
	if s, _, _ := e.do(http.MethodGet, "/api/me", nil); s != http.StatusBadGateway {
		t.Fatalf("request with a wrong password: %d, want 502", s)
	}
	code, rd, retry := e.ready("?name=ci-developer")
	if code != http.StatusServiceUnavailable || len(rd) != 1 || rd[0].Ready || rd[0].State != "cooling_down" || rd[0].Cause != "refused" ||
		rd[0].RetryAt == nil || !strings.Contains(rd[0].LastError, "status 401") {
		t.Fatalf("ready while cooling down: %d %+v", code, rd)
	}
	if secs, err := strconv.Atoi(retry); err != nil || secs < 1 || secs > 30 {
		t.Fatalf("Retry-After %q, want 1 to 30 seconds (the first cool-down)", retry)
	}
	_, body := e.adminDo(http.MethodGet, "/apic_auth/ready")
	e.noSecret(body)
	if v, ok := metricValue(e.metrics(), `caddy_apic_auth_ready{identity="ci-developer"}`); !ok || v != 0 {
		t.Fatalf("ready metric %v (%v), want 0", v, ok)
	}

	c := e.runStatus()
	f := row(t, c.stdout, "ci-developer")
	if c.code != 2 || f[2] != "cooling_down" || f[3] != "-" || !strings.HasSuffix(f[4], "s") || !strings.Contains(c.stdout, "status 401") {
		t.Fatalf("status while cooling down: exit %d\n%s%s", c.code, c.stdout, c.stderr)
	}
	for _, l := range strings.Split(c.stdout, "\n") {
		if n := len([]rune(l)); n > 160 {
			t.Errorf("a table line of %d characters: the error is not shortened:\n%s", n, l)
		}
	}
	j := e.runStatus("--format", "json")
	var st []identityStatus
	if err := json.Unmarshal([]byte(j.stdout), &st); err != nil || j.code != 2 || len(st) != 1 || st[0].State != "cooling_down" ||
		!strings.HasPrefix(st[0].LastError, "token endpoint "+e.simURL+"/api/token refused the credentials") {
		t.Fatalf("status --format json while cooling down: exit %d (%v)\n%s%s", j.code, err, j.stdout, j.stderr)
	}
	e.noSecret(c.stdout, c.stderr, j.stdout, j.stderr)

	// --wait gives up after its duration, and says so.
	start := time.Now()
	w := e.runStatus("--wait", "1s")
	if took := time.Since(start); w.code != 2 || took < time.Second || !strings.Contains(w.stderr, "not ready within 1s") || row(t, w.stdout, "ci-developer")[2] != "cooling_down" {
		t.Fatalf("status --wait 1s while cooling down: exit %d after %s\n%s%s", w.code, took, w.stdout, w.stderr)
	}
}

// TestStatusWaitUntilReady: status --wait, started while the identity has
// no token, exits 0 once a request has logged in.
func TestStatusWaitUntilReady(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAuth("name ci-developer"))
	cmd := e.statusCmd("--wait", fmt.Sprint(awaitBound))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.mustOK("/api/me", "the login")
	c := e.finish(cmd, cmd.Wait(), &stdout, &stderr)
	if c.code != 0 || row(t, c.stdout, "ci-developer")[2] != "valid" || c.stderr != "" {
		t.Fatalf("status --wait: exit %d\n%s%s", c.code, c.stdout, c.stderr)
	}
}

// TestReadyWithoutIdentity: with no apic_auth in the config there is
// nothing to be ready for: 503 saying so, and exit 2.
func TestReadyWithoutIdentity(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withCaddyfile(func(e *env) string { return e.caddyfileSite("respond ok") }))
	s, body := e.adminDo(http.MethodGet, "/apic_auth/ready")
	if s != http.StatusServiceUnavailable || !strings.Contains(body, "no apic_auth identity is configured") {
		t.Fatalf("ready without apic_auth: %d %s", s, body)
	}
	c := e.runStatus()
	if c.code != 2 || c.stdout != "" || !strings.Contains(c.stderr, "no apic_auth identity is configured") {
		t.Fatalf("status without apic_auth: exit %d\n%s%s", c.code, c.stdout, c.stderr)
	}
}

// TestStatusUnreachable: without an admin API at the address, the status
// command exits 1 naming the address and how to turn the admin API on,
// with --wait too, after its duration.
func TestStatusUnreachable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withoutAdmin())
	addr := "unix/" + filepath.Join(e.dir, "no-admin.sock")
	for _, args := range [][]string{{"--address", addr}, {"--address", addr, "--wait", "300ms"}} {
		c := e.runStatus(args...)
		if c.code != 1 || c.stdout != "" || !strings.Contains(c.stderr, "admin API at "+addr) || !strings.Contains(c.stderr, "admin global option") {
			t.Fatalf("status %v: exit %d\n%s%s", args, c.code, c.stdout, c.stderr)
		}
	}
}

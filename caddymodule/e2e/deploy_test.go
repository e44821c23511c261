package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// readmeCaddyfile returns the Caddyfile block of README that holds
// marker: the safe-deployment configurations are tested as README shows
// them. The env's APIC_* variables point them at the simulator, and the
// tests move the listener to the env's unix socket; everything else,
// admin off included, runs as written.
func readmeCaddyfile(t *testing.T, marker string) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile("(?s)```caddyfile\n(.*?)```").FindAllSubmatch(readme, -1) {
		if strings.Contains(string(m[1]), marker) {
			return string(m[1])
		}
	}
	t.Fatalf("README has no caddyfile block with %q", marker)
	return ""
}

// replaceOnce replaces old, which must occur exactly once, with new.
func replaceOnce(t *testing.T, text, old, new string) string {
	t.Helper()
	if n := strings.Count(text, old); n != 1 {
		t.Fatalf("the Caddyfile has %q %d times, want once", old, n)
	}
	return strings.Replace(text, old, new, 1)
}

// readmeOnSocket is README's Caddyfile block with marker, its loopback
// listener moved to the env's unix socket. The site address, and so its
// host matcher, stay: requests are sent with Host 127.0.0.1:9080.
func readmeOnSocket(t *testing.T, marker string) func(*env) string {
	return func(e *env) string {
		return replaceOnce(t, readmeCaddyfile(t, marker), "\tbind 127.0.0.1\n", "\tbind unix/"+e.sock+"\n")
	}
}

const deployHost = "127.0.0.1:9080"

// doHost is env.do with a Host header and Basic credentials (none when
// user is empty).
func (e *env) doHost(host, method, path, user, password string) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://"+host+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := e.proxy.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

func TestDeployUnixSocketMode0600(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withoutAdmin(), withCaddyfile(func(e *env) string {
		return replaceOnce(t, readmeCaddyfile(t, "proxy.sock|0600"), "/run/apic-auth-proxy/proxy.sock", e.sock)
	}))

	fi, err := os.Stat(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want a socket of mode 0600", e.sock, fi.Mode())
	}
	status, _, body := e.do("GET", "/api/me", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /api/me through the socket: %d %s", status, body)
	}
	var me struct{ Username string }
	if err := json.Unmarshal(body, &me); err != nil || me.Username != apicsim.DefaultProviderUsername {
		t.Fatalf("GET /api/me answered %s", body)
	}
}

func TestDeployBasicAuthBeforeAPICAuth(t *testing.T) {
	t.Parallel()
	const user, password = "ci", "sidecar-Passw0rd"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, withoutAdmin(), withVar("APIC_PROXY_PASSWORD_HASH", string(hash)),
		withCaddyfile(readmeOnSocket(t, "basic_auth {")))

	// The adapter puts basic_auth (the authentication handler) first.
	cfgJSON := string(e.adapt(readmeOnSocket(t, "basic_auth {")(e)))
	authAt := strings.Index(cfgJSON, `"handler":"authentication"`)
	apicAt := strings.Index(cfgJSON, `"handler":"apic_auth"`)
	if authAt < 0 || apicAt < 0 || authAt > apicAt {
		t.Fatalf("basic_auth does not run before apic_auth: %s", cfgJSON)
	}

	// The config logs in at start: count what the requests add.
	logins := e.awaitFirstLogin()
	for _, c := range []struct{ user, password string }{{"", ""}, {user, "wrong"}} {
		status, hdr, body := e.doHost(deployHost, "GET", "/api/me", c.user, c.password)
		if status != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Basic ") {
			t.Fatalf("credentials %q: %d %v %s, want basic_auth's 401", c.user, status, hdr, body)
		}
	}
	if n := e.sim.TokenRequests("", ""); n != logins {
		t.Fatalf("%d token requests before any client authenticated, want the %d at start", n, logins)
	}
	if seen := e.upstreamAuth(); len(seen) != 0 {
		t.Fatalf("refused requests reached API Manager: %q", seen)
	}

	status, _, body := e.doHost(deployHost, "GET", "/api/me", user, password)
	if status != http.StatusOK {
		t.Fatalf("GET /api/me with the right credentials: %d %s", status, body)
	}
	seen := e.upstreamAuth()
	if len(seen) != 1 || !strings.HasPrefix(seen[0], "Bearer ey") {
		t.Fatalf("upstream saw Authorization %q, want the proxy's bearer token", seen)
	}
	if n := e.sim.TokenRequests("password", "ok"); n != 1 {
		t.Fatalf("token requests = %d, want 1", n)
	}
}

func TestDeployReadOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withoutAdmin(), withCaddyfile(readmeOnSocket(t, "@write not method GET HEAD")))

	refused := func() {
		t.Helper()
		// sign-out would be answered 204 by apic_auth itself, the
		// rest by API Manager.
		for _, r := range []struct{ method, path string }{
			{"POST", "/api/me/sign-out"}, {"POST", "/api/catalogs/org1/sandbox/publish"},
			{"PUT", "/api/orgs"}, {"PATCH", "/api/orgs"}, {"DELETE", "/api/orgs"},
		} {
			status, hdr, body := e.doHost(deployHost, r.method, r.path, "", "")
			if status != http.StatusMethodNotAllowed || hdr.Get("Allow") != "GET, HEAD" {
				t.Fatalf("%s %s: %d %v %s, want 405 with Allow", r.method, r.path, status, hdr, body)
			}
			if code, msg := simtest.APIError(t, body); code != 405 || msg[0] != "This proxy is read-only." {
				t.Fatalf("%s %s answered %s", r.method, r.path, body)
			}
		}
	}
	logins := e.awaitFirstLogin()
	refused()
	if n := e.sim.TokenRequests("", ""); n != logins {
		t.Fatalf("%d token requests for refused writes, want the %d at start", n, logins)
	}
	if seen := e.upstreamAuth(); len(seen) != 0 {
		t.Fatalf("writes reached API Manager: %q", seen)
	}

	for _, path := range []string{"/api/me", "/api/orgs"} {
		status, _, body := e.doHost(deployHost, "GET", path, "", "")
		if status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, status, body)
		}
	}
	// HEAD goes through too; the simulator refuses it with its own 405
	// (the document declares GET and PUT on /me).
	if status, hdr, _ := e.doHost(deployHost, "HEAD", "/api/me", "", ""); status != http.StatusMethodNotAllowed || hdr.Get("Allow") != "GET, PUT" {
		t.Fatalf("HEAD /api/me: %d %v, want the simulator's answer", status, hdr)
	}
	refused()
	seen := e.upstreamAuth()
	if len(seen) != 3 || !strings.HasPrefix(seen[0], "Bearer ey") || seen[1] != seen[0] || seen[2] != seen[0] {
		t.Fatalf("upstream saw Authorization %q, want the two GETs and the HEAD with the bearer token", seen)
	}
	if n := e.sim.TokenRequests("", ""); n != 1 {
		t.Fatalf("token requests = %d, want 1", n)
	}
	// The token itself can only read: API Manager refuses a write that
	// got past the matchers.
	scopes, _ := apic.TokenScopes(strings.TrimPrefix(seen[0], "Bearer "))
	if want := []string{"api-drafts:view", "child:view", "my:view", "org:view", "product-drafts:view", "product:view"}; !slices.Equal(apic.CanonicalScopes(scopes), want) {
		t.Fatalf("the token's scopes are %q, want %q", scopes, want)
	}
	e.stop()
	if n := e.sim.Stats().Paths["/api/me/sign-out"]; n != 0 {
		t.Fatalf("%d sign-outs at stop with a token that cannot sign out", n)
	}
}

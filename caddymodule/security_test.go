package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/guard"
)

// securityEnv is a proxy in front of the simulator that listens both on
// the test's unix socket and on a loopback TCP port (handed to Caddy as a
// file descriptor, so that no port is picked in advance).
type securityEnv struct {
	*testEnv
	tcpAddr string
	tcp     *http.Client
}

func newSecurityEnv(t *testing.T, extra ...string) *securityEnv {
	t.Helper()
	setSecrets(t)
	e := newTestEnv(t, apicsim.DefaultConfig())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // f holds the listening socket
	t.Cleanup(func() { f.Close() })
	cf := e.caddyfile(e.authBlock(extra...))
	cf = strings.Replace(cf, "bind unix/"+e.sock, fmt.Sprintf("bind unix/%s fd/%d", e.sock, f.Fd()), 1)
	// The upstream's own CORS headers, which the proxy must not pass on.
	cf = strings.Replace(cf, "reverse_proxy "+e.simSrv.URL, "reverse_proxy "+e.simSrv.URL+" {\n\t\theader_down Access-Control-Allow-Origin *\n\t\theader_down Access-Control-Allow-Credentials true\n\t}", 1)
	e.mustLoad(cf)
	return &securityEnv{testEnv: e, tcpAddr: addr, tcp: &http.Client{}}
}

// attack is one row of the security suite: a request and what must become
// of it.
type attack struct {
	name   string
	method string
	target string // request target as sent, verbatim
	host   string // Host header; "" for the proxy's own address
	header http.Header
	body   string
	unix   bool // over the unix socket instead of TCP
	want   int
	// forwarded says the simulator must see the request (with the token).
	forwarded bool
}

func (se *securityEnv) send(t *testing.T, a attack) (int, http.Header, []byte) {
	t.Helper()
	method := a.method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, "http://"+se.tcpAddr+"/", strings.NewReader(a.body))
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = a.target
	req.Host = se.tcpAddr
	if a.host != "" {
		req.Host = a.host
	}
	for k, v := range a.header {
		req.Header[k] = v
	}
	c := se.tcp
	if a.unix {
		c = se.client
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body
}

func TestSecuritySuite(t *testing.T) {
	se := newSecurityEnv(t,
		"allowed_hosts proxy.tools.svc",
		"allowed_origins https://tools.example.com",
	)
	port := se.tcpAddr[strings.LastIndex(se.tcpAddr, ":")+1:]
	origin := func(o string) http.Header { return http.Header{"Origin": {o}} }
	rows := []attack{
		// DNS rebinding: a page whose name resolves to 127.0.0.1.
		{name: "rebinding host evil.example", target: "/api/me", host: "evil.example:" + port, want: 403},
		{name: "rebinding host localhost.evil.example", target: "/api/me", host: "localhost.evil.example:" + port, want: 403},
		{name: "rebinding host 127.0.0.1.evil.example", target: "/api/me", host: "127.0.0.1.evil.example", want: 403},
		{name: "rebinding host 0.0.0.0", target: "/api/me", host: "0.0.0.0:" + port, want: 403},
		{name: "rebinding host allowed name as a suffix", target: "/api/me", host: "evil.proxy.tools.svc", want: 403},
		{name: "host 127.0.0.1", target: "/api/me", want: 200, forwarded: true},
		{name: "host localhost", target: "/api/me", host: "localhost:" + port, want: 200, forwarded: true},
		{name: "host LOCALHOST. (case, trailing dot)", target: "/api/me", host: "LOCALHOST.:" + port, want: 200, forwarded: true},
		{name: "host [::1]", target: "/api/me", host: "[::1]:" + port, want: 200, forwarded: true},
		{name: "host 127.1.2.3", target: "/api/me", host: "127.1.2.3", want: 200, forwarded: true},
		{name: "host in allowed_hosts", target: "/api/me", host: "proxy.tools.svc:" + port, want: 200, forwarded: true},
		{name: "any host over the unix socket", target: "/api/me", host: "evil.example", unix: true, want: 200, forwarded: true},

		// Cross-site requests from a page in the user's browser.
		{name: "cross-site text/plain POST creating an API key", method: "POST", target: "/api/cloud/api-keys",
			header: http.Header{"Origin": {"https://evil.example"}, "Content-Type": {"text/plain"}, "Sec-Fetch-Site": {"cross-site"}},
			body:   `{"client_type":"toolkit"}`, want: 403},
		{name: "cross-site HTML form publishing", method: "POST", target: "/api/catalogs/o/c/publish",
			header: http.Header{"Origin": {"https://evil.example"}, "Content-Type": {"application/x-www-form-urlencoded"}},
			body:   "a=b", want: 403},
		{name: "cross-site registration POST", method: "POST", target: "/api/cloud/registrations",
			header: http.Header{"Origin": {"http://127.0.0.1.evil.example"}, "Content-Type": {"text/plain"}},
			body:   `{"name":"evil","client_id":"evil","client_secret":"evil"}`, want: 403},
		{name: "Origin null (sandboxed page)", target: "/api/me", header: origin("null"), want: 403},
		{name: "Origin of the proxy itself, not allowed", target: "/api/me", header: origin("http://" + se.tcpAddr), want: 403},
		{name: "Sec-Fetch-Site cross-site without Origin", target: "/api/me", header: http.Header{"Sec-Fetch-Site": {"cross-site"}}, want: 403},
		{name: "Sec-Fetch-Site same-site without Origin", target: "/api/me", header: http.Header{"Sec-Fetch-Site": {"same-site"}}, want: 403},
		{name: "Sec-Fetch-Site same-origin, origin not allowed", target: "/api/me", header: http.Header{"Sec-Fetch-Site": {"same-origin"}}, want: 403},
		{name: "preflight from a page not allowed", method: "OPTIONS", target: "/api/cloud/api-keys",
			header: http.Header{"Origin": {"https://evil.example"}, "Access-Control-Request-Method": {"POST"}}, want: 403},
		{name: "Sec-Fetch-Site none (typed in the address bar)", target: "/api/me", header: http.Header{"Sec-Fetch-Site": {"none"}}, want: 200, forwarded: true},
		{name: "allowed origin", target: "/api/me", header: origin("https://tools.example.com"), want: 200, forwarded: true},
		{name: "allowed origin, preflight answered here", method: "OPTIONS", target: "/api/cloud/api-keys",
			header: http.Header{"Origin": {"https://tools.example.com"}, "Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"content-type"}}, want: 204},

		// Headers that would strip the token on the way out.
		{name: "Connection: Authorization", target: "/api/me", header: http.Header{"Connection": {"Authorization"}}, want: 200, forwarded: true},
		{name: "Connection: keep-alive, Proxy-Authorization, authorization", target: "/api/me",
			header: http.Header{"Connection": {"keep-alive, Proxy-Authorization, authorization"}}, want: 200, forwarded: true},

		// Paths that could leave the server prefix, or are not API calls.
		{name: "encoded slashes ..%2f", target: "/api/..%2f..%2f..%2f..%2fother", want: 400},
		{name: "encoded slashes upper-case ..%2F", target: "/api/..%2F..%2Fother", want: 400},
		{name: "dot-segments", target: "/api/../../other", want: 400},
		{name: "encoded dot-segments %2e%2e", target: "/api/%2e%2e/%2e%2e/other", want: 400},
		{name: "mixed .%2e", target: "/api/.%2e/other", want: 400},
		{name: "double-encoded %252e%252e", target: "/api/%252e%252e/%252e%252e/other", want: 400},
		{name: "double-encoded slash %252f", target: "/api/..%252f..%252fother", want: 400},
		{name: "path parameter ..;", target: "/api/..;/other", want: 400},
		{name: "backslash", target: `/api/..\..\other`, want: 400},
		{name: "encoded backslash %5c", target: "/api/..%5c..%5cother", want: 400},
		{name: "single dot-segment", target: "/api/./me", want: 400},
		{name: "path outside /api/", target: "/other", want: 404},
		{name: "root", target: "/", want: 404},
		{name: "/apiother is not /api/", target: "/apiother/me", want: 404},
		{name: "_sim control path", target: "/_sim/stats", want: 404},

		// Sign-out of the session every client shares.
		{name: "sign-out", method: "POST", target: "/api/me/sign-out", want: 204},
		{name: "sign-out trailing slash", method: "POST", target: "/api/me/sign-out/", want: 204},
		{name: "sign-out repeated slashes", method: "POST", target: "/api//me/sign-out", want: 204},
		{name: "sign-out upper case", method: "POST", target: "/API/ME/Sign-Out", want: 204},
		{name: "sign-out encoded slash", method: "POST", target: "/api/me/sign-out%2F", want: 400},
		{name: "sign-out percent-encoded letters", method: "POST", target: "/api/me/sign%2dout", want: 204},
	}
	for _, a := range rows {
		t.Run(a.name, func(t *testing.T) {
			before := se.sim.Stats()
			beforeAuth := se.seenAuthCount()
			status, hdr, body := se.send(t, a)
			after := se.sim.Stats()
			forwarded := se.seenAuthCount() - beforeAuth
			t.Logf("row %q: %s %s host %q -> %d, forwarded %d", a.name, a.method, a.target, a.host, status, forwarded)
			if status != a.want {
				t.Fatalf("status %d, want %d: %s", status, a.want, body)
			}
			if status >= 400 {
				if s, msg := apiError(t, body); s != status || msg[0] == "" {
					t.Fatalf("error body %s", body)
				}
			}
			if a.forwarded != (forwarded == 1) || forwarded > 1 {
				t.Fatalf("requests forwarded with the token: %d, want forwarded=%v", forwarded, a.forwarded)
			}
			if after.OutsideAPI != before.OutsideAPI {
				t.Fatal("a request reached the simulator outside /api/")
			}
			for p, n := range after.Paths {
				if n != before.Paths[p] && !a.forwarded {
					t.Fatalf("the simulator saw %s", p)
				}
			}
			if hdr.Get("Access-Control-Allow-Credentials") != "" {
				t.Fatalf("the upstream's CORS headers reached the client: %v", hdr)
			}
			switch acao := hdr.Get("Access-Control-Allow-Origin"); {
			case a.header.Get("Origin") == "https://tools.example.com":
				if acao != "https://tools.example.com" {
					t.Fatalf("allowed origin answered with Access-Control-Allow-Origin %q", acao)
				}
			case acao != "":
				t.Fatalf("Access-Control-Allow-Origin %q for a request from no allowed origin", acao)
			}
		})
	}
	if got := se.sim.TokenRequests("", ""); got != 1 {
		t.Fatalf("token requests = %d, want 1 for the whole suite", got)
	}
	if n := se.sim.Stats().Paths["/api/me/sign-out"]; n != 0 {
		t.Fatalf("the simulator saw %d sign-outs", n)
	}
}

// seenAuthCount counts the requests that reached the simulator's API
// (not its token endpoint) with the proxy's token.
func (e *testEnv) seenAuthCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, a := range e.seenAuth {
		if strings.HasPrefix(a, "Bearer ey") {
			n++
		}
	}
	return n
}

func TestRequireHeader(t *testing.T) {
	se := newSecurityEnv(t, "require_header X-Requested-By")
	if s, _, body := se.send(t, attack{target: "/api/me"}); s != 403 || !strings.Contains(string(body), "X-Requested-By") {
		t.Fatalf("without the header: %d %s", s, body)
	}
	if s, _, body := se.send(t, attack{target: "/api/me", header: http.Header{"X-Requested-By": {"ci"}}}); s != 200 {
		t.Fatalf("with the header: %d %s", s, body)
	}
}

// TestAlwaysUnauthorizedPathCostsFewLogins: a resource that answers 401
// to every token makes one new login and replay, then its 401s go to the
// client; many such paths at once pause re-logins for the identity; a
// revocation is still recovered, twice in a row.
func TestAlwaysUnauthorizedPathCostsFewLogins(t *testing.T) {
	setSecrets(t)
	e, clock := newClockedEnv(t, nil)
	adminSock := filepath.Join(filepath.Dir(e.sock), "admin.sock")
	e.mustLoad(withAdmin(e.caddyfile(e.authBlock()), adminSock))
	admin := e.adminClient(adminSock)
	e.sim.RefusePath("/api/orgs")
	for i := range 30 {
		if s, _, body := e.do("GET", "/api/orgs", nil); s != 401 {
			t.Fatalf("request %d: %d %s", i, s, body)
		}
	}
	if got := e.sim.TokenRequests("", ""); got > 4 {
		t.Fatalf("30 requests to an always-401 path made %d token requests, want at most 4", got)
	}
	t.Logf("30 requests to an always-401 path: %d token requests", e.sim.TokenRequests("", ""))
	_, body := adminDo(t, admin, "GET", "/apic_auth/status")
	var st []identityStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil || len(st) != 1 || st[0].SuppressedPaths != 1 || st[0].Counts.Replays["suppressed"] < 28 {
		t.Fatalf("status %s", body)
	}
	_, metrics := adminDo(t, admin, "GET", "/metrics")
	if !strings.Contains(metrics, `caddy_apic_auth_replays_total{identity="`) || !strings.Contains(metrics, `outcome="suppressed"}`) {
		t.Fatal("metrics do not count the suppressed replays")
	}

	// Other paths still recover from revocations, even two in a second.
	for range 2 {
		e.sim.RevokeAll()
		if s, _, body := e.do("GET", "/api/me", nil); s != 200 {
			t.Fatalf("after a revocation: %d %s", s, body)
		}
	}
	before := e.sim.TokenRequests("", "")

	// Many different always-401 paths: the pause becomes the identity's.
	for i := range 10 {
		p := fmt.Sprintf("/api/catalogs/o/c%d/products", i)
		e.sim.RefusePath(p)
		for range 3 {
			if s, _, _ := e.do("GET", p, nil); s != 401 {
				t.Fatalf("%s: %d", p, s)
			}
		}
	}
	if got := e.sim.TokenRequests("", "") - before; got > guard.SuppressSpread {
		t.Fatalf("10 always-401 paths made %d token requests, want at most %d", got, guard.SuppressSpread)
	}
	t.Logf("10 always-401 paths, 3 requests each: %d token requests", e.sim.TokenRequests("", "")-before)

	// Past the pause, a revocation is recovered again.
	clock.Advance(guard.SuppressMax + guard.SuppressMin)
	e.sim.RevokeAll()
	if s, _, body := e.do("GET", "/api/me", nil); s != 200 {
		t.Fatalf("after the pause: %d %s", s, body)
	}
}

// TestSecretsScrubbedInEveryForm: a token endpoint that echoes the request
// puts the credentials in its error; none of them, in any encoding or cut
// short, reaches the 502 body, the status, the events or the logs.
func TestSecretsScrubbedInEveryForm(t *testing.T) {
	for name, password := range map[string]string{
		"html and quotes": `S3cr<t&P>ss"\"`,
		"non-ASCII":       "pässwörd-日本語-ünïcödé",
		"long":            strings.Repeat("Zq9-xW7_", 9) + "!",
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("TEST_APIC_PASSWORD", password)
			t.Setenv("TEST_APIC_CLIENT_SECRET", apicsim.DefaultClientSecret)
			e := newTestEnv(t, apicsim.DefaultConfig())
			e.sim.FailTokenRequests(-1, apicsim.Fault{Echo: true})
			adminSock := filepath.Join(filepath.Dir(e.sock), "admin.sock")
			recorded.mu.Lock()
			recorded.events = nil
			recorded.mu.Unlock()
			e.loadForwardingEvents(withAdmin(e.caddyfile(e.authBlock()), adminSock))
			admin := e.adminClient(adminSock)
			s, _, body := e.do("GET", "/api/me", nil)
			if s != 502 || !strings.Contains(string(body), "[REDACTED]") {
				t.Fatalf("%d %s", s, body)
			}
			_, status := adminDo(t, admin, "GET", "/apic_auth/status")
			var events strings.Builder
			recorded.mu.Lock()
			for _, ev := range recorded.events {
				fmt.Fprint(&events, ev.Data)
			}
			recorded.mu.Unlock()
			for where, text := range map[string]string{"502 body": string(body), "status": status, "logs": e.logText(), "events": events.String()} {
				checkNoSecretForms(t, where, text, password, apicsim.DefaultClientSecret)
			}
		})
	}
}

// checkNoSecretForms fails if text holds a secret raw, JSON-escaped,
// URL-encoded, or any 8-character piece of these.
func checkNoSecretForms(t *testing.T, where, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		goJSON, _ := json.Marshal(s)
		for _, form := range []string{s, string(goJSON[1 : len(goJSON)-1]), url.QueryEscape(s), url.PathEscape(s)} {
			for i := 0; i+8 <= len(form); i++ {
				if strings.Contains(text, form[i:i+8]) {
					t.Fatalf("%s holds %q, a piece of a secret", where, form[i:i+8])
				}
			}
		}
	}
}

func TestHugeAccessTokenFailsTheLogin(t *testing.T) {
	setSecrets(t)
	e := newTestEnv(t, apicsim.DefaultConfig())
	e.sim.FailTokenRequests(-1, apicsim.Fault{Set: map[string]any{"access_token": strings.Repeat("x", 800<<10)}})
	e.mustLoad(e.caddyfile(e.authBlock()))
	s, _, body := e.do("GET", "/api/me", nil)
	if s != 502 || !strings.Contains(string(body), "819200 bytes") {
		t.Fatalf("%d %s", s, body)
	}
	if n := e.sim.APICalls(0); n != 0 {
		t.Fatalf("%d requests reached API Manager with the huge token", n)
	}
}

func TestPlainHTTPWarning(t *testing.T) {
	for server, want := range map[string]bool{
		"http://apim.example.com": true, "http://10.1.2.3:9443": true,
		"http://127.0.0.1:2000": false, "http://localhost": false, "http://[::1]:80": false,
		"https://apim.example.com": false,
	} {
		if got := plainHTTPBeyondLoopback(server); got != want {
			t.Errorf("plainHTTPBeyondLoopback(%q) = %v", server, got)
		}
	}
	for listen, want := range map[string]bool{
		":9080": true, "0.0.0.0:9080": true, "tcp/10.0.0.1:9080": true, "[::]:9080": true,
		"127.0.0.1:9080": false, "localhost:9080": false, "[::1]:9080": false, "unix//run/p.sock|0600": false,
	} {
		if got := beyondLoopback(listen); got != want {
			t.Errorf("beyondLoopback(%q) = %v", listen, got)
		}
	}
}

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// newSecurityEnv is a proxy that listens both on the env's unix socket and
// on a loopback TCP port, and whose upstream sends CORS headers of its own
// that the proxy must not pass on.
func newSecurityEnv(t *testing.T, opts ...option) *env {
	t.Helper()
	return newEnv(t, append(opts, withTCP(), withCaddyfile(func(e *env) string {
		return strings.Replace(e.caddyfile(e.authBlock()), "reverse_proxy "+e.simURL,
			"reverse_proxy "+e.simURL+" {\n\t\theader_down Access-Control-Allow-Origin *\n\t\theader_down Access-Control-Allow-Credentials true\n\t}", 1)
	}))...)
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

func (e *env) sendAttack(t *testing.T, a attack) (int, http.Header, []byte) {
	t.Helper()
	method := a.method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, "http://"+e.tcpAddr+"/", strings.NewReader(a.body))
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = a.target
	req.Host = e.tcpAddr
	if a.host != "" {
		req.Host = a.host
	}
	for k, v := range a.header {
		req.Header[k] = v
	}
	c := e.tcp.client
	if a.unix {
		c = e.proxy.client
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
	t.Parallel()
	e := newSecurityEnv(t, withAuth(
		"allowed_hosts proxy.tools.svc",
		"allowed_origins https://tools.example.com",
	))
	port := e.tcpAddr[strings.LastIndex(e.tcpAddr, ":")+1:]
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
		{name: "Origin of the proxy itself, not allowed", target: "/api/me", header: origin("http://" + e.tcpAddr), want: 403},
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
	refusals := map[int]int{}
	for _, a := range rows {
		t.Run(a.name, func(t *testing.T) {
			before := e.sim.Stats()
			beforeAuth := e.bearerCalls()
			status, hdr, body := e.sendAttack(t, a)
			after := e.sim.Stats()
			forwarded := e.bearerCalls() - beforeAuth
			t.Logf("row %q: %s %s host %q -> %d, forwarded %d", a.name, a.method, a.target, a.host, status, forwarded)
			if status != a.want {
				t.Fatalf("status %d, want %d: %s", status, a.want, body)
			}
			if status >= 400 {
				refusals[status]++
				if s, msg := simtest.APIError(t, body); s != status || msg[0] == "" {
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
	if got := e.sim.TokenRequests("", ""); got != 1 {
		t.Fatalf("token requests = %d, want 1 for the whole suite", got)
	}
	if n := e.sim.Stats().Paths["/api/me/sign-out"]; n != 0 {
		t.Fatalf("the simulator saw %d sign-outs", n)
	}
	// The status counts what the guard refused, by status.
	if got := e.identity().Counts.Refused; fmt.Sprint(got) != fmt.Sprint(map[string]int{"400": refusals[400], "403": refusals[403], "404": refusals[404]}) {
		t.Fatalf("status counts refusals %v, the suite saw %v", got, refusals)
	}
}

func TestRequireHeader(t *testing.T) {
	t.Parallel()
	e := newSecurityEnv(t, withAuth("require_header X-Requested-By"))
	var forwarded atomic.Value
	e.beforeAPI(func(r *http.Request) { forwarded.Store(r.Header.Values("X-Requested-By")) })
	if s, _, body := e.sendAttack(t, attack{target: "/api/me"}); s != 403 || !strings.Contains(string(body), "X-Requested-By") {
		t.Fatalf("without the header: %d %s", s, body)
	}
	if s, _, body := e.sendAttack(t, attack{target: "/api/me", header: http.Header{"X-Requested-By": {"ci"}}}); s != 200 {
		t.Fatalf("with the header: %d %s", s, body)
	}
	// The header is the proxy's: it is removed before forwarding.
	if got, ok := forwarded.Load().([]string); !ok || len(got) != 0 {
		t.Fatalf("the simulator saw X-Requested-By %q (a call seen: %v), want none", got, ok)
	}
}

// TestAlwaysUnauthorizedPathCostsFewLogins: a resource that answers 401
// to every token makes one new login and replay, then its 401s go to the
// client; many such paths at once pause re-logins for the identity; a
// revocation is still recovered, twice in a row.
func TestAlwaysUnauthorizedPathCostsFewLogins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
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
	st := e.identity()
	if st.SuppressedPaths != 1 || st.Counts.Replays["suppressed"] < 28 {
		t.Fatalf("status %+v, want one suppressed path and at least 28 suppressed replays", st)
	}
	metrics := e.metrics()
	if v, ok := metricValue(metrics, fmt.Sprintf(`caddy_apic_auth_replays_total{identity=%q,outcome="suppressed"}`, st.Name)); !ok || v < 28 {
		t.Fatalf("metrics count %v suppressed replays (found %v), want at least 28", v, ok)
	}

	// Other paths still recover from revocations, even two in a second.
	for range 2 {
		e.sim.RevokeAll()
		if s, _, body := e.do("GET", "/api/me", nil); s != 200 {
			t.Fatalf("after a revocation: %d %s", s, body)
		}
	}
	before := e.sim.TokenRequests("", "")

	// Many different always-401 paths: the pause becomes the identity's
	// once three of them refused new tokens.
	for i := range 10 {
		p := fmt.Sprintf("/api/catalogs/o/c%d/products", i)
		e.sim.RefusePath(p)
		for range 3 {
			if s, _, _ := e.do("GET", p, nil); s != 401 {
				t.Fatalf("%s: %d", p, s)
			}
		}
	}
	if got := e.sim.TokenRequests("", "") - before; got > 3 {
		t.Fatalf("10 always-401 paths made %d token requests, want at most 3", got)
	}
	t.Logf("10 always-401 paths, 3 requests each: %d token requests", e.sim.TokenRequests("", "")-before)
	if st := e.identity(); st.ReloginsSuppressedUntil == nil {
		t.Fatalf("status %+v, want re-logins paused for the identity", st)
	}
}

// TestSecretsScrubbedInEveryForm: a token endpoint that echoes the request
// puts the credentials in its error; none of them, in any encoding or cut
// short, reaches the 502 body, the status, the events or the logs.
func TestSecretsScrubbedInEveryForm(t *testing.T) {
	t.Parallel()
	for name, password := range map[string]string{
		"html and quotes": `S3cr<t&P>ss"\"`,
		"non-ASCII":       "pässwörd-日本語-ünïcödé",
		"long":            strings.Repeat("Zq9-xW7_", 9) + "!",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withVar("APIC_PASSWORD", password), withEvents())
			e.sim.FailTokenRequests(-1, apicsim.Fault{Echo: true})
			s, _, body := e.do("GET", "/api/me", nil)
			if s != 502 || !strings.Contains(string(body), "[REDACTED]") {
				t.Fatalf("%d %s", s, body)
			}
			_, status := e.adminDo("GET", "/apic_auth/status")
			var events strings.Builder
			for _, ev := range e.loggedEvents() {
				fmt.Fprint(&events, ev.Data)
			}
			if events.Len() == 0 {
				t.Fatal("no event logged")
			}
			e.stop()
			for where, text := range map[string]string{"502 body": string(body), "status": status, "logs": e.logText(), "events": events.String(), "standard error": e.stderr()} {
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
	t.Parallel()
	e := newEnv(t)
	e.sim.FailTokenRequests(-1, apicsim.Fault{Set: map[string]any{"access_token": strings.Repeat("x", 800<<10)}})
	s, _, body := e.do("GET", "/api/me", nil)
	if s != 502 || !strings.Contains(string(body), "819200 bytes") {
		t.Fatalf("%d %s", s, body)
	}
	if n := e.sim.APICalls(0); n != 0 {
		t.Fatalf("%d requests reached API Manager with the huge token", n)
	}
}

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

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// call sends one request with a JSON body (none when body is "") over a
// new connection and returns the status and body.
func call(t *testing.T, addr, method, path, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: awaitBound}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, addr, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, data
}

// simTokenRequests reads the simulator's /_sim/token-requests: each token
// request's grant and body field names, as they arrived.
func simTokenRequests(t *testing.T, simURL string) []apicsim.TokenRequestRecord {
	t.Helper()
	resp, err := http.Get(simURL + "/_sim/token-requests")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var recs []apicsim.TokenRequestRecord
	if err := json.NewDecoder(resp.Body).Decode(&recs); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /_sim/token-requests: %d %v", resp.StatusCode, err)
	}
	return recs
}

// TestQuickStartScope runs the quick start with --scope (or APIC_SCOPE):
// the token request carries the scope, a read answers 200, a write that
// needs my:manage gets API Manager's own 403 naming it, and the stop
// attempts no sign-out, which the token could not make. With my:manage in
// the scope the same write succeeds and the stop signs out.
func TestQuickStartScope(t *testing.T) {
	const readOnly = "product:view my:view org:view"
	for _, tc := range []struct {
		name      string
		vars      map[string]string
		args      []string
		scope     string // as the ready line names it
		canManage bool
	}{
		{"flag", nil, []string{"--scope", readOnly}, "my:view org:view product:view", false},
		{"variable", map[string]string{"APIC_SCOPE": readOnly}, nil, "my:view org:view product:view", false},
		{"with my:manage", nil, []string{"--scope", readOnly + " my:manage"}, "my:manage my:view org:view product:view", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := simtest.Start(t)
			p := startProc(t, srv.URL, tc.vars, append([]string{"apic-proxy", "--from", "127.0.0.1:0"}, tc.args...)...)
			addr := readyAddr(t, p.awaitReady(), srv.URL, "developer (provider/default-idp-2) with scope "+tc.scope)

			recs := simTokenRequests(t, srv.URL)
			if len(recs) != 1 || recs[0].Status != http.StatusOK || !slices.Contains(recs[0].Fields, "scope") {
				t.Fatalf("token requests %+v, want one, with scope, answered 200", recs)
			}
			if status, body := call(t, addr, "GET", "/api/me", ""); status != http.StatusOK || !strings.Contains(string(body), `"username":"developer"`) {
				t.Fatalf("GET /api/me: %d %s", status, body)
			}
			status, body := call(t, addr, "POST", "/api/cloud/api-keys", `{"client_type":"toolkit","description":"made by a test"}`)
			if tc.canManage {
				if status != http.StatusCreated {
					t.Fatalf("POST /api/cloud/api-keys with my:manage: %d %s", status, body)
				}
			} else {
				code, msg := simtest.APIError(t, body)
				if status != http.StatusForbidden || code != http.StatusForbidden || len(msg) != 1 || !strings.Contains(msg[0], "my:manage") {
					t.Fatalf("POST /api/cloud/api-keys: %d %s, want the server's 403 naming my:manage", status, body)
				}
			}
			// The proxy answers a client's sign-out itself, as always.
			if status, body := call(t, addr, "POST", "/api/me/sign-out", ""); status != http.StatusNoContent {
				t.Fatalf("POST /api/me/sign-out: %d %s, want the proxy's 204", status, body)
			}

			if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			if code := p.awaitExit(); code != 0 {
				t.Fatalf("exit code %d after SIGINT:\n%s", code, p.stderr())
			}
			want := 0
			if tc.canManage {
				want = 1
			}
			if n := sim.Stats().Paths["/api/me/sign-out"]; n != want {
				t.Fatalf("%d sign-outs reached the server, want %d (the stop's)", n, want)
			}
			if n := sim.TokenRequests("", ""); n != 1 {
				t.Fatalf("%d token requests, want 1", n)
			}
		})
	}
}

// TestScopeSignOutRefusedUpstream: with pass_sign_out, a client's sign-out
// reaches API Manager, which refuses the read-only token with 403 naming
// my:manage; the session goes on, the status shows the scope asked for and
// the token's, and the stop signs nothing out.
func TestScopeSignOutRefusedUpstream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAuth("scope my:view org:view", "scope product:view", "pass_sign_out"))
	e.mustOK("/api/me", "a read")
	status, _, body := e.do("POST", "/api/me/sign-out", nil)
	code, msg := simtest.APIError(t, body)
	if status != http.StatusForbidden || code != http.StatusForbidden || len(msg) != 1 || !strings.Contains(msg[0], "my:manage") {
		t.Fatalf("POST /api/me/sign-out: %d %s, want the server's 403 naming my:manage", status, body)
	}
	e.mustOK("/api/orgs", "a read after the refused sign-out")
	if n := e.sim.TokenRequests("", ""); n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
	st := e.identity()
	want := []string{"my:view", "org:view", "product:view"}
	if !slices.Equal(st.Scope, want) || !slices.Equal(apic.CanonicalScopes(st.TokenScopes), want) {
		t.Fatalf("status scope %q, token_scopes %q, want %q for both", st.Scope, st.TokenScopes, want)
	}
	if !strings.HasSuffix(st.Name, " (scope my:view org:view product:view)") {
		t.Errorf("name %q does not name the scope", st.Name)
	}
	if recs := simTokenRequests(t, e.simURL); len(recs) != 1 || !slices.Contains(recs[0].Fields, "scope") {
		t.Fatalf("token requests %+v, want one with scope", recs)
	}

	e.stop()
	if n := e.sim.Stats().Paths["/api/me/sign-out"]; n != 1 {
		t.Fatalf("%d sign-outs reached the server, want the client's alone", n)
	}
	if log := e.logText(); !strings.Contains(log, "the session is not signed out at stop: scope leaves out my:manage") {
		t.Errorf("the log does not say why no sign-out is attempted:\n%s", log)
	}
}

// TestReadmeReadOnlyTokenDemo runs README's read-only token example as it
// is written: the demo with its --scope, its GET answered 200 and its POST
// answered with the 403 README shows.
func TestReadmeReadOnlyTokenDemo(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)\napic-auth-proxy apic-proxy --demo --scope "([^"]+)"\n.*?\ncurl -s -w ' %\{http_code\}\\n' http://127\.0\.0\.1:9080(/api/me)\n# .* 200\ncurl -s -w ' %\{http_code\}\\n' -X POST http://127\.0\.0\.1:9080(/api/cloud/api-keys) -H 'Content-Type: application/json' -d '([^']+)'\n# (\{.*\}) 403\n`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no read-only token demo with a GET and a POST")
	}
	scope, get, post, postBody, answer := string(m[1]), string(m[2]), string(m[3]), string(m[4]), string(m[5])
	p := startProc(t, "", nil, "apic-proxy", "--demo", "--from", "127.0.0.1:0", "--scope", scope)
	line := p.awaitReady()
	want := "admin (admin/default-idp-1) with scope " + strings.Join(apic.CanonicalScopes(strings.Fields(scope)), " ")
	addr := readyAddr(t, line, strings.Fields(line)[3], want)
	if status, body := call(t, addr, "GET", get, ""); status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", get, status, body)
	}
	if status, body := call(t, addr, "POST", post, postBody); status != http.StatusForbidden || strings.TrimSpace(string(body)) != answer {
		t.Fatalf("POST %s: %d %s, want README's 403 %s", post, status, body, answer)
	}
}

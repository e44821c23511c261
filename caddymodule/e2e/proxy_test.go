package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

func TestInjectsTokenAndReplacesClientAuthorization(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	status, _, body := e.do("GET", "/api/me", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}})
	if status != 200 {
		t.Fatalf("GET /api/me: %d %s", status, body)
	}
	var me struct{ Username string }
	if err := json.Unmarshal(body, &me); err != nil || me.Username != apicsim.DefaultProviderUsername {
		t.Fatalf("GET /api/me answered %s", body)
	}
	e.mustOK("/api/orgs", "second request")
	seen := e.upstreamAuth()
	if len(seen) != 2 || !strings.HasPrefix(seen[0], "Bearer ey") || seen[0] != seen[1] {
		t.Fatalf("upstream saw Authorization %q, want the same bearer token twice", seen)
	}
	if got := e.sim.TokenRequests("", ""); got != 1 {
		t.Fatalf("token requests = %d, want 1", got)
	}
	recs := e.sim.RecentTokenRequests()
	want := "client_id,client_secret,grant_type,password,realm,username"
	if got := strings.Join(recs[0].Fields, ","); got != want || recs[0].ContentType != "application/json" || recs[0].Accept != "application/json" {
		t.Fatalf("token request %+v, want fields %s as JSON", recs[0], want)
	}
}

// TestColdStartConcurrentRequestsShareOneToken: 100 requests reach a
// proxy that holds no token; the token request is held until every one of
// them has been sent, and all share its token.
func TestColdStartConcurrentRequestsShareOneToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 100
	sent := newCountdown(n)
	e.beforeToken(func(i int, r *http.Request) {
		if i == 1 {
			select {
			case <-sent.done:
			case <-r.Context().Done():
			}
		}
	})
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { sent.count() }}

	var wg sync.WaitGroup
	statuses := make(chan int, n)
	for range n {
		wg.Go(func() {
			req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://localhost/api/me", nil)
			if err != nil {
				t.Error(err)
				return
			}
			status, _, body, err := e.send(req)
			if err != nil {
				t.Error(err)
				return
			}
			if status != 200 {
				t.Errorf("a request got %d: %s", status, body)
			}
			statuses <- status
		})
	}
	wg.Wait()
	close(statuses)
	if len(statuses) != n {
		t.Fatalf("%d of %d requests answered", len(statuses), n)
	}
	if got := e.sim.TokenRequests("", ""); got != 1 {
		t.Fatalf("%d concurrent cold requests made %d token requests, want 1", n, got)
	}
}

// shortTokens are the simulator's 3-second tokens, refreshed 1.5 s before
// their expiry (the most refresh_before can be: half the lifetime); a
// token is retired a tenth of its lifetime (0.3 s) before its expiry, so a
// refresh has 1.2 s to arrive.
var shortTokens = []option{
	withSim(func(c *apicsim.Config) { c.TokenTTL = 3 * time.Second }),
	withAuth("refresh_before 1500ms"),
}

// TestRefreshBeforeExpiryUnderLoad: clients send requests back to back
// while 3-second tokens are refreshed in the background, until requests
// have carried three tokens. No request fails, API Manager refuses none,
// no request waits for a token, and each token is fetched at its refresh
// time, not before.
func TestRefreshBeforeExpiryUnderLoad(t *testing.T) {
	t.Parallel()
	e := newEnv(t, shortTokens...)
	e.mustOK("/api/me", "first request")

	const tokens = 3
	stop := make(chan struct{})
	res, wait := runLoad(t, e, 2, false, stop, nil)
	e.await("requests carrying the third token", func() bool { return e.upstreamTokens() >= tokens })
	close(stop)
	wait()

	bad, _ := res.non2xx()
	if bad > 0 || res.total == 0 {
		t.Fatalf("client-visible errors during refresh: %v of %d; samples %v", res.byStatus, res.total, res.sample)
	}
	if n := e.sim.APICalls(401); n != 0 {
		t.Fatalf("API Manager refused %d requests", n)
	}
	st := e.identity()
	if st.Waits != 0 {
		t.Fatalf("%d requests waited for a token", st.Waits)
	}
	if v, ok := metricValue(e.metrics(), `caddy_apic_auth_token_waits_total{identity="`+st.Name+`"}`); !ok || v != 0 {
		t.Fatalf("token_waits_total = %v (found %v), want 0", v, ok)
	}
	// Each token was fetched at its refresh time, 1.5 s (the lifetime
	// minus refresh_before) after the one before arrived.
	at := e.tokenArrivals()
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 1200*time.Millisecond {
			t.Fatalf("token request %d came %s after the one before, want 1.5 s (all: %v)", i+1, gap, at)
		}
	}
	t.Logf("%d requests over %d tokens, all 200", res.total, len(at))
}

// TestRefreshTokenUsedAndFallback: with refresh tokens on, the background
// refresh uses the refresh token; once everything is revoked (right after
// that refresh), the next refresh's refresh token is refused and the proxy
// logs in with the password in the same fetch.
func TestRefreshTokenUsedAndFallback(t *testing.T) {
	t.Parallel()
	e := newEnv(t, append([]option{withSim(func(c *apicsim.Config) { c.RefreshTokens = true })}, shortTokens...)...)
	e.afterToken(func(n int) {
		if n == 2 {
			// The refresh token just issued dies too; the token of the
			// fallback login lives long enough to end the test.
			e.sim.RevokeAll()
			ttl := time.Hour
			e.sim.UpdateSettings(apicsim.Settings{TokenTTL: &ttl})
		}
	})
	e.mustOK("/api/me", "first request")
	e.await("the login after the refused refresh token", func() bool { return e.sim.TokenRequests("password", "ok") >= 2 })
	e.mustOK("/api/me", "after the fallback")

	for _, c := range []struct {
		grant, outcome string
		want           int
	}{
		{"refresh_token", "ok", 1},
		{"refresh_token", "bad_credentials", 1},
		{"password", "ok", 2},
	} {
		if got := e.sim.TokenRequests(c.grant, c.outcome); got != c.want {
			t.Errorf("%s grants answered %s = %d, want %d", c.grant, c.outcome, got, c.want)
		}
	}
	if !strings.Contains(e.logText(), "refresh token refused; logging in again") {
		t.Fatal("the fallback was not logged")
	}
}

// TestWrongPasswordCoolsDown: a refused login is answered 502 with API
// Connect's message and a Retry-After of the 30 s cool-down; requests
// during it fail at once without a token request. Forced refreshes (the
// admin API ignores the cool-down) show it doubling to 15 minutes.
func TestWrongPasswordCoolsDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withVar("APIC_PASSWORD", "not-the-pa55word"))

	check := func(step string, wantRA int) {
		t.Helper()
		status, hdr, body := e.do("GET", "/api/me", nil)
		if status != http.StatusBadGateway {
			t.Fatalf("%s: status %d, want 502", step, status)
		}
		s, msg := simtest.APIError(t, body)
		if s != 502 || !strings.Contains(msg[0], "refused the credentials (password grant): status 401") || !strings.Contains(msg[0], "Invalid username or password.") {
			t.Fatalf("%s: body %s", step, body)
		}
		// Rounded up; a little time may have passed since the attempt.
		if ra, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || ra > wantRA || ra < wantRA-5 {
			t.Fatalf("%s: Retry-After %q, want %d", step, hdr.Get("Retry-After"), wantRA)
		}
	}
	check("first request", 30)
	for i := range 20 {
		check("request "+strconv.Itoa(i+2)+" in the cool-down", 30)
	}
	if got := e.sim.TokenRequests("", ""); got != 1 {
		t.Fatalf("21 requests in the cool-down made %d token requests, want 1", got)
	}
	st := e.identity()
	if st.State != "cooling_down" || st.RetryAt == nil || !strings.Contains(st.LastError, "refused the credentials") {
		t.Fatalf("status %+v, want cooling_down with the refusal", st)
	}

	for i, want := range []int{60, 120, 240, 480, 900, 900} {
		code, body := e.adminDo("POST", "/apic_auth/refresh")
		if code != http.StatusBadGateway || !strings.Contains(body, `"ok":false`) || !strings.Contains(body, "Invalid username or password.") {
			t.Fatalf("forced refresh %d: %d %s", i+1, code, body)
		}
		check("after forced refresh "+strconv.Itoa(i+1), want)
	}
	if got := e.sim.TokenRequests("password", "bad_credentials"); got != 7 {
		t.Fatalf("token requests = %d, want 7 (one request, six forced refreshes)", got)
	}
}

// TestBackoffKeepsServingValidToken: the token endpoint fails (503) from
// the first token's refresh time on. The proxy keeps serving the valid
// token while it retries with back-off, then answers 502 naming the
// failure with a Retry-After; a forced refresh recovers once the endpoint
// is back.
func TestBackoffKeepsServingValidToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, shortTokens...)
	e.mustOK("/api/me", "first request")
	e.sim.FailTokenRequests(-1, apicsim.Fault{Status: 503})
	e.await("a failed refresh", func() bool { return e.sim.TokenRequests("", "fault") > 0 })

	// Requests back to back until the first that is not 200: the token
	// is retired 2.7 s after it came, 1.2 s after its refresh time.
	var (
		served int
		status int
		hdr    http.Header
		body   []byte
	)
	deadline := time.Now().Add(awaitBound)
	for {
		status, hdr, body = e.do("GET", "/api/me", nil)
		if status != http.StatusOK {
			break
		}
		served++
		if time.Now().After(deadline) {
			t.Fatalf("still served after %s with the token endpoint failing", awaitBound)
		}
	}
	faults := e.sim.TokenRequests("", "fault")
	t.Logf("%d requests served after a failed refresh; %d failed token requests", served, faults)
	if served == 0 {
		t.Fatal("no request was served with the valid token after a refresh failed")
	}
	// Back-off from 1 s with jitter: a few attempts, not one a request.
	if faults < 1 || faults > 4 {
		t.Fatalf("token requests while failing = %d, want a handful", faults)
	}
	if status != http.StatusBadGateway {
		t.Fatalf("after expiry: %d %s", status, body)
	}
	if _, msg := simtest.APIError(t, body); !strings.Contains(msg[0], "status 503") {
		t.Fatalf("message %q does not name the failure", msg[0])
	}
	if ra, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Fatalf("Retry-After %q", hdr.Get("Retry-After"))
	}

	e.sim.ClearFaults()
	if code, body := e.adminDo("POST", "/apic_auth/refresh"); code != http.StatusOK || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("forced refresh after recovery: %d %s", code, body)
	}
	e.mustOK("/api/me", "after recovery")
}

func TestReloadKeepsTokenAndChangedCredentialsGetNewOne(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cf := e.caddyfile(e.authBlock())
	e.mustOK("/api/me", "first request")
	// The same identity in a changed config: no new token request.
	e.mustReload(strings.Replace(cf, "reverse_proxy", "header X-Reloaded yes\n\treverse_proxy", 1))
	status, hdr, _ := e.do("GET", "/api/me", nil)
	if status != 200 || hdr.Get("X-Reloaded") != "yes" {
		t.Fatalf("after reload: %d, X-Reloaded %q", status, hdr.Get("X-Reloaded"))
	}
	if got := e.sim.TokenRequests("", ""); got != 1 {
		t.Fatalf("token requests after reload = %d, want 1", got)
	}
	if n := e.sim.Stats().Paths["/api/me/sign-out"]; n != 0 {
		t.Fatalf("the session was signed out %d times across a reload that kept it", n)
	}
	// Another user: a new token.
	other := strings.NewReplacer(
		"realm "+apicsim.DefaultProviderRealm, "realm "+apicsim.DefaultAdminRealm,
		"username "+apicsim.DefaultProviderUsername, "username "+apicsim.DefaultAdminUsername,
		"{env.APIC_PASSWORD}", "{env.APIC_ADMIN_PASSWORD}",
	).Replace(cf)
	e.mustReload(other)
	status, _, body := e.do("GET", "/api/me", nil)
	if status != 200 || !strings.Contains(string(body), `"username":"admin"`) {
		t.Fatalf("after credential change: %d %s", status, body)
	}
	if got := e.sim.TokenRequests("", ""); got != 2 {
		t.Fatalf("token requests after credential change = %d, want 2", got)
	}
	// The old identity's session was stopped with the config that used
	// it last, and signed out.
	if st := e.identity(); st.User != apicsim.DefaultAdminUsername {
		t.Fatalf("the live identity is %+v, want the admin's", st)
	}
	if n := e.sim.Stats().Paths["/api/me/sign-out"]; n != 1 {
		t.Fatalf("the old session was signed out %d times, want 1", n)
	}
}

func TestLogsNeverHoldSecrets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withSim(func(c *apicsim.Config) { c.RefreshTokens = true }), withVar("APIC_WRONG_PASSWORD", "wr0ng-Passw0rd"))
	for range 3 {
		if status, _, _ := e.do("GET", "/api/me", http.Header{"Authorization": {"Bearer client-own-token"}}); status != 200 {
			t.Fatal(status)
		}
	}
	// A refused login logs too: reload with a wrong password.
	e.mustReload(strings.Replace(e.caddyfile(e.authBlock()), "{env.APIC_PASSWORD}", "{env.APIC_WRONG_PASSWORD}", 1))
	if status, _, _ := e.do("GET", "/api/me", nil); status != 502 {
		t.Fatalf("wrong password: %d, want 502", status)
	}
	token := strings.TrimPrefix(e.upstreamAuth()[0], "Bearer ")
	e.stop()

	logs := e.logText()
	for _, want := range []string{"obtained API Connect token", "bearer token set", "API Connect token request failed", "no token for request"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	for name, secret := range map[string]string{
		"password":       apicsim.DefaultProviderPassword,
		"wrong password": "wr0ng-Passw0rd",
		"client secret":  apicsim.DefaultClientSecret,
		"access token":   token,
		"token payload":  strings.Split(token, ".")[1][:40],
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs hold the %s", name)
		}
	}
}

// countdown closes done once it has been counted down n times.
type countdown struct {
	left atomic.Int64
	done chan struct{}
}

func newCountdown(n int) *countdown {
	c := &countdown{done: make(chan struct{})}
	c.left.Store(int64(n))
	return c
}

func (c *countdown) count() {
	if c.left.Add(-1) == 0 {
		close(c.done)
	}
}

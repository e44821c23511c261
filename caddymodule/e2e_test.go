package caddymodule

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

func TestInjectsTokenAndReplacesClientAuthorization(t *testing.T) {
	setSecrets(t)
	e := newTestEnv(t, apicsim.DefaultConfig())
	e.mustLoad(e.caddyfile(e.authBlock()))

	status, _, body := e.do("GET", "/api/me", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}})
	if status != 200 {
		t.Fatalf("GET /api/me: %d %s", status, body)
	}
	var me struct{ Username string }
	if err := json.Unmarshal(body, &me); err != nil || me.Username != apicsim.DefaultProviderUsername {
		t.Fatalf("GET /api/me answered %s", body)
	}
	status, _, _ = e.do("GET", "/api/orgs", nil)
	if status != 200 {
		t.Fatalf("GET /api/orgs: %d", status)
	}
	e.mu.Lock()
	seen := append([]string(nil), e.seenAuth...)
	e.mu.Unlock()
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

func TestColdStartConcurrentRequestsShareOneToken(t *testing.T) {
	setSecrets(t)
	e := newTestEnv(t, apicsim.DefaultConfig())
	// Hold the token request until every client request is waiting on it.
	e.sim.FailTokenRequests(1, apicsim.Fault{Hang: 300 * time.Millisecond})
	e.mustLoad(e.caddyfile(e.authBlock()))

	const n = 100
	var wg sync.WaitGroup
	statuses := make(chan int, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", "http://localhost/api/me", nil)
			resp, err := e.client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != 200 {
			t.Fatalf("a request got %d", s)
		}
	}
	if got := e.sim.TokenRequests("", ""); got != 1 {
		t.Fatalf("%d concurrent cold requests made %d token requests, want 1", n, got)
	}
}

func TestRefreshBeforeExpiryUnderLoad(t *testing.T) {
	setSecrets(t)
	e, clock := newClockedEnv(t, func(cfg *apicsim.Config) { cfg.TokenTTL = 100 * time.Second })
	events := e.loadForwardingEvents(e.caddyfile(e.authBlock()))
	if status, _, body := e.do("GET", "/api/me", nil); status != 200 {
		t.Fatalf("first request: %d %s", status, body)
	}
	// refreshAt is the latest token's refresh time, from its event.
	var refreshAt time.Time
	take := func(ev caddy.Event) {
		if ev.Name() != EventTokenObtained {
			t.Fatalf("event %s: %v", ev.Name(), ev.Data)
		}
		if at := ev.Data["refresh_at"].(time.Time); at.After(refreshAt) {
			refreshAt = at
		}
	}
	take(<-events)

	// The clock moves on 2 s at a time through ten token lifetimes; at
	// each step eight clients send a request at once, and the step ends
	// when all are answered, so that no request straddles a step.
	bad := map[int]int{}
	total := 0
	for range 500 {
		clock.Advance(2 * time.Second)
		statuses := make(chan int, 8)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				req, _ := http.NewRequest("GET", "http://localhost/api/me", nil)
				resp, err := e.client.Do(req)
				if err != nil {
					t.Error(err)
					statuses <- 0
					return
				}
				resp.Body.Close()
				statuses <- resp.StatusCode
			})
		}
		wg.Wait()
		close(statuses)
		for st := range statuses {
			total++
			if st != 200 {
				bad[st]++
			}
		}
		for drained := false; !drained; {
			select {
			case ev := <-events:
				take(ev)
			default:
				drained = true
			}
		}
		// A refresh is due: it takes real time (an RSA signature under
		// the race detector), and the fake clock waits for its token
		// rather than outrun it.
		if !clock.Now().Before(refreshAt) {
			bound := time.NewTimer(10 * time.Second)
			for !clock.Now().Before(refreshAt) {
				select {
				case ev := <-events:
					take(ev)
				case <-bound.C:
					t.Fatalf("no token within 10 s of its refresh time %s", refreshAt)
				}
			}
			bound.Stop()
		}
	}
	if len(bad) > 0 {
		t.Fatalf("client-visible errors during refresh: %v of %d", bad, total)
	}
	// 1000 s of 100 s tokens refreshed at 75 s: about 13 tokens.
	got := e.sim.TokenRequests("password", "ok")
	if got < 10 || got > 16 {
		t.Fatalf("token requests over 1000 s = %d, want about 13", got)
	}
	// Every token was replaced before its expiry: API Manager refused
	// none, and no request waited for a token.
	if n := e.sim.APICalls(401); n != 0 {
		t.Fatalf("API Manager refused %d requests", n)
	}
	var waits int
	identities.Range(func(_, v any) bool { waits += v.(*identity).sess.Status().Waited; return true })
	if waits != 0 {
		t.Fatalf("%d requests waited for a token", waits)
	}
}

func TestRefreshTokenUsedAndFallback(t *testing.T) {
	setSecrets(t)
	e, clock := newClockedEnv(t, func(cfg *apicsim.Config) { cfg.RefreshTokens = true })
	e.mustLoad(e.caddyfile(e.authBlock()))

	mustOK := func() {
		t.Helper()
		if status, _, body := e.do("GET", "/api/me", nil); status != 200 {
			t.Fatalf("GET /api/me: %d %s", status, body)
		}
	}
	mustOK()
	// Past the token's expiry the next request waits for a new token,
	// which the refresh token gets.
	clock.Advance(8 * time.Hour)
	mustOK()
	if got := e.sim.TokenRequests("refresh_token", "ok"); got != 1 {
		t.Fatalf("refresh_token grants = %d, want 1", got)
	}
	// Revoking everything kills the refresh token too: the proxy falls
	// back to the password grant in the same fetch.
	e.sim.RevokeAll()
	clock.Advance(8 * time.Hour)
	mustOK()
	if got := e.sim.TokenRequests("refresh_token", "bad_credentials"); got != 1 {
		t.Fatalf("refused refresh_token grants = %d, want 1", got)
	}
	if got := e.sim.TokenRequests("password", "ok"); got != 2 {
		t.Fatalf("password grants = %d, want 2 (start and fallback)", got)
	}
	if !strings.Contains(e.logText(), "refresh token refused; logging in again") {
		t.Fatal("the fallback was not logged")
	}
}

func TestWrongPasswordCoolsDown(t *testing.T) {
	t.Setenv("TEST_APIC_PASSWORD", "not-the-pa55word")
	t.Setenv("TEST_APIC_CLIENT_SECRET", apicsim.DefaultClientSecret)
	e, clock := newClockedEnv(t, nil)
	e.mustLoad(e.caddyfile(e.authBlock()))

	// Ten simulated minutes of steady load: a request every second.
	for i := range 600 {
		status, hdr, body := e.do("GET", "/api/me", nil)
		if status != http.StatusBadGateway {
			t.Fatalf("request %d: status %d, want 502", i, status)
		}
		s, msg := apiError(t, body)
		if s != 502 || !strings.Contains(msg[0], "refused the credentials") || !strings.Contains(msg[0], "Invalid username or password.") {
			t.Fatalf("request %d: body %s", i, body)
		}
		ra, err := strconv.Atoi(hdr.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 900 {
			t.Fatalf("request %d: Retry-After %q", i, hdr.Get("Retry-After"))
		}
		clock.Advance(time.Second)
	}
	// Cool-downs of 30, 60, 120, 240 s: attempts at 0, 30, 90, 210, 450 s.
	if got := e.sim.TokenRequests("password", "bad_credentials"); got != 5 {
		t.Fatalf("token requests in ten minutes = %d, want 5", got)
	}
	if got := e.sim.TokenRequests("", ""); got != 5 {
		t.Fatalf("all token requests = %d, want 5", got)
	}
}

func TestBackoffKeepsServingValidToken(t *testing.T) {
	setSecrets(t)
	e, clock := newClockedEnv(t, func(cfg *apicsim.Config) { cfg.TokenTTL = 1000 * time.Second })
	e.mustLoad(e.caddyfile(e.authBlock()))
	if status, _, _ := e.do("GET", "/api/me", nil); status != 200 {
		t.Fatal(status)
	}
	// From now on the token endpoint fails. Past the refresh time the
	// proxy retries with back-off while serving the valid token.
	e.sim.FailTokenRequests(-1, apicsim.Fault{Status: 503})
	clock.Advance(800 * time.Second) // refresh at 750 s, valid until 990 s
	for i := range 180 {
		if status, _, body := e.do("GET", "/api/me", nil); status != 200 {
			t.Fatalf("request %d at +%ds: %d %s", i, 800+i, status, body)
		}
		clock.Advance(time.Second)
	}
	// 180 s of back-off doubling from 1 s (with jitter) to 60 s: a few
	// attempts, not 180.
	faults := e.sim.TokenRequests("", "fault")
	if faults < 3 || faults > 12 {
		t.Fatalf("token requests while failing = %d, want a handful", faults)
	}
	// Past the token's end, requests fail at once with 502 and a
	// Retry-After until the next attempt.
	clock.Advance(20 * time.Second)
	status, hdr, body := e.do("GET", "/api/me", nil)
	if status != 502 {
		t.Fatalf("after expiry: %d %s", status, body)
	}
	if _, msg := apiError(t, body); !strings.Contains(msg[0], "status 503") {
		t.Fatalf("message %q does not name the failure", msg[0])
	}
	if hdr.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	e.sim.ClearFaults()
	clock.Advance(2 * time.Minute)
	if status, _, body := e.do("GET", "/api/me", nil); status != 200 {
		t.Fatalf("after recovery: %d %s", status, body)
	}
}

func TestReloadKeepsTokenAndChangedCredentialsGetNewOne(t *testing.T) {
	setSecrets(t)
	e := newTestEnv(t, apicsim.DefaultConfig())
	cf := e.caddyfile(e.authBlock())
	e.mustLoad(cf)
	if status, _, _ := e.do("GET", "/api/me", nil); status != 200 {
		t.Fatal(status)
	}
	// The same identity in a changed config: no new token request.
	e.mustLoad(strings.Replace(cf, "reverse_proxy", "header X-Reloaded yes\n\treverse_proxy", 1))
	status, hdr, _ := e.do("GET", "/api/me", nil)
	if status != 200 || hdr.Get("X-Reloaded") != "yes" {
		t.Fatalf("after reload: %d, X-Reloaded %q", status, hdr.Get("X-Reloaded"))
	}
	if got := e.sim.TokenRequests("", ""); got != 1 {
		t.Fatalf("token requests after reload = %d, want 1", got)
	}
	// Another user: a new token.
	other := strings.NewReplacer(
		"realm "+apicsim.DefaultProviderRealm, "realm "+apicsim.DefaultAdminRealm,
		"username "+apicsim.DefaultProviderUsername, "username "+apicsim.DefaultAdminUsername,
	).Replace(cf)
	t.Setenv("TEST_APIC_PASSWORD", apicsim.DefaultAdminPassword)
	e.mustLoad(other)
	status, _, body := e.do("GET", "/api/me", nil)
	if status != 200 || !strings.Contains(string(body), `"username":"admin"`) {
		t.Fatalf("after credential change: %d %s", status, body)
	}
	if got := e.sim.TokenRequests("", ""); got != 2 {
		t.Fatalf("token requests after credential change = %d, want 2", got)
	}
	// The old identity's session was stopped by the last Cleanup.
	n := 0
	identities.Range(func(_, _ any) bool { n++; return true })
	if n != 1 {
		t.Fatalf("%d sessions alive, want 1", n)
	}
}

func TestLogsNeverHoldSecrets(t *testing.T) {
	setSecrets(t)
	cfg := apicsim.DefaultConfig()
	cfg.RefreshTokens = true
	e := newTestEnv(t, cfg)
	e.mustLoad(e.caddyfile(e.authBlock()))
	for range 3 {
		if status, _, _ := e.do("GET", "/api/me", http.Header{"Authorization": {"Bearer client-own-token"}}); status != 200 {
			t.Fatal(status)
		}
	}
	// A refused login logs too: reload with a wrong password.
	t.Setenv("TEST_APIC_PASSWORD", "wr0ng-Passw0rd")
	e.mustLoad(e.caddyfile(e.authBlock()))
	if status, _, _ := e.do("GET", "/api/me", nil); status != 502 {
		t.Fatalf("wrong password: %d, want 502", status)
	}

	logs := e.logText()
	for _, want := range []string{"obtained API Connect token", "bearer token set", "API Connect token request failed", "no token for request"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	e.mu.Lock()
	token := strings.TrimPrefix(e.seenAuth[0], "Bearer ")
	e.mu.Unlock()
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

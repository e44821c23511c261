package session_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
	"github.com/apic-tools/apic-auth-proxy/internal/session"
)

// simEnv is a simulator on a loopback server sharing a fake clock with
// the Manager under test.
type simEnv struct {
	sim   *apicsim.Server
	ts    *httptest.Server
	clock *fakeClock
}

func startSim(t *testing.T, changes ...func(*apicsim.Config)) *simEnv {
	t.Helper()
	// Its server closes after the Manager's Close, registered later.
	e := simtest.Start(t, newFakeClock(), changes...)
	return &simEnv{sim: e.Sim, ts: e.TS, clock: e.Clock}
}

// client is a token client of the simulator for the developer user with
// the given password.
func (e *simEnv) client(password string) *apic.Client {
	return &apic.Client{
		Server: e.ts.URL,
		Credentials: apic.Credentials{
			Realm: apicsim.DefaultProviderRealm, Username: apicsim.DefaultProviderUsername, Password: password,
			ClientID: apicsim.DefaultClientID, ClientSecret: apicsim.DefaultClientSecret,
		},
		HTTP: e.ts.Client(),
		Now:  e.clock.Now,
	}
}

// me calls GET /api/me with a token's header and returns the status.
func (e *simEnv) me(t *testing.T, tok *session.Token) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.ts.URL+"/api/me", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", tok.Header)
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// recordingFetcher notes the fake time of every Login.
type recordingFetcher struct {
	session.Fetcher
	clock *fakeClock
	mu    sync.Mutex
	at    []time.Duration // since t0
}

func (r *recordingFetcher) Login(ctx context.Context) (*apic.Token, error) {
	r.mu.Lock()
	r.at = append(r.at, r.clock.Now().Sub(t0))
	r.mu.Unlock()
	return r.Fetcher.Login(ctx)
}

// Against the simulator: login, background refresh with the refresh
// token, a revoked token invalidated, a refused refresh token.
func TestSimulatorLifeCycle(t *testing.T) {
	e := startSim(t, func(c *apicsim.Config) { c.RefreshTokens = true })
	h := newHarnessClock(t, e.clock, 0, func(o *session.Options) {
		o.Fetcher = e.client(apicsim.DefaultProviderPassword)
	})

	tok1 := h.get()
	recv(t, h.tokens, "first token")
	if tok1.Grant != apic.GrantPassword || tok1.RefreshToken == "" {
		t.Fatalf("first token: grant %q, refresh token %v", tok1.Grant, tok1.RefreshToken != "")
	}
	if !tok1.Expiry.Equal(t0.Add(28800*time.Second)) || !tok1.RefreshAt.Equal(t0.Add(21600*time.Second)) ||
		!tok1.ValidUntil.Equal(t0.Add(28790*time.Second)) || !tok1.RefreshExpiry.Equal(t0.Add(57600*time.Second)) {
		t.Errorf("schedule: expiry %v, refresh at %v, valid until %v, refresh expiry %v",
			tok1.Expiry, tok1.RefreshAt, tok1.ValidUntil, tok1.RefreshExpiry)
	}
	if s := e.me(t, tok1); s != http.StatusOK {
		t.Fatalf("GET /api/me with the token: %d", s)
	}

	// Background renewal with the refresh token.
	e.clock.Set(tok1.RefreshAt)
	h.m.Poke()
	tok2 := recv(t, h.tokens, "renewed token")
	if tok2.Grant != apic.GrantRefreshToken || tok2.AccessToken == tok1.AccessToken {
		t.Fatalf("renewed token: grant %q", tok2.Grant)
	}
	if n := e.sim.TokenRequests(apicsim.GrantRefreshToken, apicsim.OutcomeOK); n != 1 {
		t.Errorf("%d refresh_token grants, want 1", n)
	}
	if s := e.me(t, tok2); s != http.StatusOK {
		t.Fatalf("GET /api/me with the renewed token: %d", s)
	}

	// The server revokes the token: the caller invalidates it, the next
	// Get logs in again.
	e.sim.RevokeAll()
	if s := e.me(t, tok2); s != http.StatusUnauthorized {
		t.Fatalf("GET /api/me with a revoked token: %d, want 401", s)
	}
	h.m.Invalidate(tok2)
	tok3 := h.get()
	recv(t, h.tokens, "token after invalidation")
	if tok3.Grant != apic.GrantPassword || e.me(t, tok3) != http.StatusOK {
		t.Fatalf("token after invalidation: grant %q", tok3.Grant)
	}

	// A refused refresh token falls back to the password grant.
	e.sim.RevokeAll()
	e.clock.Set(tok3.RefreshAt)
	h.m.Poke()
	tok4 := recv(t, h.tokens, "token after the refused refresh")
	err := recv(t, h.refused, "OnRefreshRefused")
	var ae *apic.Error
	if !errors.As(err, &ae) || !ae.Refused() || ae.Status != 401 || ae.Grant != apic.GrantRefreshToken {
		t.Errorf("OnRefreshRefused(%v), want a refused refresh_token grant", err)
	}
	if tok4.Grant != apic.GrantPassword || e.me(t, tok4) != http.StatusOK {
		t.Errorf("token after fallback: grant %q", tok4.Grant)
	}
	if n := e.sim.TokenRequests(apicsim.GrantPassword, apicsim.OutcomeOK); n != 3 {
		t.Errorf("%d password grants, want 3", n)
	}
	if n := e.sim.TokenRequests(apicsim.GrantRefreshToken, apicsim.OutcomeBadCredentials); n != 1 {
		t.Errorf("%d refused refresh_token grants, want 1", n)
	}
}

// 8. Ten minutes of steady load with a wrong password: a handful of
// logins, not six hundred.
func TestSimulatorRefusedUnderLoad(t *testing.T) {
	e := startSim(t)
	rec := &recordingFetcher{Fetcher: e.client("wr0ng-pa55word"), clock: e.clock}
	h := newHarnessClock(t, e.clock, 0, func(o *session.Options) { o.Fetcher = rec })

	for i := range 600 {
		tok, err := h.m.Get(context.Background())
		var u *session.Unavailable
		var ae *apic.Error
		switch {
		case err == nil:
			t.Fatalf("second %d: got a token with a wrong password: %v", i, tok)
		case !errors.As(err, &u):
			t.Fatalf("second %d: error %T %v, want *session.Unavailable", i, err, err)
		case !errors.As(u.Err, &ae) || !ae.Refused():
			t.Fatalf("second %d: Unavailable wraps %T %v, want a refused *apic.Error", i, u.Err, u.Err)
		case !u.RetryAt.After(e.clock.Now()):
			t.Fatalf("second %d: RetryAt %v is not in the future", i, u.RetryAt)
		}
		e.clock.Advance(time.Second)
	}
	n := e.sim.TokenRequests(apicsim.GrantPassword, "")
	if n < 4 || n > 6 {
		t.Errorf("%d logins in ten minutes, want 4 to 6", n)
	}
	if bad := e.sim.TokenRequests(apicsim.GrantPassword, apicsim.OutcomeBadCredentials); bad != n {
		t.Errorf("%d of %d logins refused as bad credentials", bad, n)
	}
	// Cool-downs of 30 s, 60 s, 120 s and 240 s after the attempts.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := []time.Duration{0, 30 * time.Second, 90 * time.Second, 210 * time.Second, 450 * time.Second}
	if len(rec.at) != len(want) || len(rec.at) != n {
		t.Fatalf("logins at %v (server saw %d), want at %v", rec.at, n, want)
	}
	for i := range want {
		if rec.at[i] != want[i] {
			t.Errorf("login %d at %v, want %v", i, rec.at[i], want[i])
		}
	}
}

// Options.Timeout bounds a token request to a server that does not answer.
func TestSimulatorTimeout(t *testing.T) {
	e := startSim(t)
	e.sim.FailTokenRequests(1, apicsim.Fault{Hang: time.Minute})
	h := newHarnessClock(t, e.clock, 0, func(o *session.Options) {
		o.Fetcher = e.client(apicsim.DefaultProviderPassword)
		o.Timeout = 100 * time.Millisecond
		o.Jitter = func() float64 { return 0.5 }
	})
	u := h.getUnavailable()
	var ae *apic.Error
	if !errors.As(u, &ae) || ae.Kind != apic.KindTimeout {
		t.Fatalf("Get: %v, want a timeout", u)
	}
	if want := t0.Add(750 * time.Millisecond); !u.RetryAt.Equal(want) {
		t.Errorf("RetryAt = %v, want %v", u.RetryAt, want)
	}
	e.clock.Set(u.RetryAt)
	if tok := h.get(); e.me(t, tok) != http.StatusOK {
		t.Error("the token after the timeout does not work")
	}
}

package session_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
	"github.com/apic-tools/apic-auth-proxy/internal/session"
)

// simEnv is a simulator serving a Manager in the same synctest bubble,
// through handlerTransport: the simulator's clock is the bubble's.
type simEnv struct {
	sim  *apicsim.Server
	http *http.Client
}

// startSim makes a simulator with DefaultConfig changed by changes. Call it
// inside the bubble: it listens on no port.
func startSim(t *testing.T, changes ...func(*apicsim.Config)) *simEnv {
	t.Helper()
	sim := simtest.New(t, changes...)
	return &simEnv{sim: sim, http: &http.Client{Transport: handlerTransport{sim}}}
}

// simURL is where the in-process simulator answers.
const simURL = "https://apic.example.com"

// client is a token client of the simulator for the developer user with
// the given password.
func (e *simEnv) client(password string) *apic.Client {
	return &apic.Client{
		Server: simURL,
		Credentials: apic.Credentials{
			Realm: apicsim.DefaultProviderRealm, Username: apicsim.DefaultProviderUsername, Password: password,
			ClientID: apicsim.DefaultClientID, ClientSecret: apicsim.DefaultClientSecret,
		},
		HTTP: e.http,
	}
}

// me calls GET /api/me with a token's header and returns the status.
func (e *simEnv) me(t *testing.T, tok *session.Token) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, simURL+"/api/me", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", tok.Header)
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// recordingFetcher notes the time of every Login, since t0.
type recordingFetcher struct {
	session.Fetcher
	mu sync.Mutex
	at []time.Duration
}

func (r *recordingFetcher) Login(ctx context.Context) (*apic.Token, error) {
	r.mu.Lock()
	r.at = append(r.at, time.Since(t0))
	r.mu.Unlock()
	return r.Fetcher.Login(ctx)
}

// Against the simulator: login, background refresh with the refresh
// token, a revoked token invalidated, a refused refresh token.
func TestSimulatorLifeCycle(t *testing.T) { synctest.Test(t, testSimulatorLifeCycle) }

func testSimulatorLifeCycle(t *testing.T) {
	e := startSim(t, func(c *apicsim.Config) { c.RefreshTokens = true })
	h := newHarness(t, 0, func(o *session.Options) {
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
	at(t, tok1.RefreshAt)
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
	at(t, tok3.RefreshAt)
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

// 8. Ten minutes of steady load (a request a second) with a wrong
// password: a handful of logins, not six hundred. The cool-down (30 s
// doubling) makes 5 attempts, at 0, 30, 90, 210 and 450 s: an identity
// provider that locks accounts after 6 failed logins in a row never locks;
// one that locks after 3 does, and then the caller sees its own "locked"
// message while the attempts stay at 5.
func TestSimulatorRefusedUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		lockout    int
		wantLocked bool
	}{{0, false}, {6, false}, {3, true}} {
		runBubble(t, fmt.Sprintf("lockout after %d", tc.lockout), func(t *testing.T) {
			e := startSim(t)
			if tc.lockout > 0 {
				e.sim.SetLockout(tc.lockout, 15*time.Minute)
			}
			rec := &recordingFetcher{Fetcher: e.client("wr0ng-pa55word")}
			h := newHarness(t, 0, func(o *session.Options) { o.Fetcher = rec })

			var lastMsg string
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
				case !u.RetryAt.After(time.Now()):
					t.Fatalf("second %d: RetryAt %v is not in the future", i, u.RetryAt)
				case h.m.Status().State != session.StateCoolingDown:
					t.Fatalf("second %d: state %s, want cooling_down", i, h.m.Status().State)
				}
				lastMsg = strings.Join(ae.Messages, "; ")
				time.Sleep(time.Second)
			}
			n := e.sim.TokenRequests(apicsim.GrantPassword, "")
			bad := e.sim.TokenRequests(apicsim.GrantPassword, apicsim.OutcomeBadCredentials)
			locked := e.sim.TokenRequests(apicsim.GrantPassword, apicsim.OutcomeLocked)
			switch {
			case !tc.wantLocked && (bad != n || locked != 0):
				t.Errorf("%d of %d logins refused as bad credentials, %d as locked; want all bad", bad, n, locked)
			case tc.wantLocked && (bad != tc.lockout || locked != n-tc.lockout || !strings.Contains(lastMsg, "locked")):
				t.Errorf("bad_credentials=%d locked=%d of %d, last message %q; want %d bad, then the identity provider's locked message",
					bad, locked, n, lastMsg, tc.lockout)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			want := []time.Duration{0, 30 * time.Second, 90 * time.Second, 210 * time.Second, 450 * time.Second}
			if fmt.Sprint(rec.at) != fmt.Sprint(want) || n != len(want) {
				t.Fatalf("logins at %v (server saw %d), want at %v", rec.at, n, want)
			}
			h.wantRequests(session.Requests{{apic.GrantPassword, "refused"}: 5})
		})
	}
}

// Options.Timeout bounds a token request to a server that does not answer.
func TestSimulatorTimeout(t *testing.T) { synctest.Test(t, testSimulatorTimeout) }

func testSimulatorTimeout(t *testing.T) {
	e := startSim(t)
	e.sim.FailTokenRequests(1, apicsim.Fault{Hang: time.Minute})
	h := newHarness(t, 0, func(o *session.Options) {
		o.Fetcher = e.client(apicsim.DefaultProviderPassword)
		o.Timeout = 100 * time.Millisecond
	})
	r := <-h.getAsync(context.Background()) // after the 100 ms timeout
	var u *session.Unavailable
	var ae *apic.Error
	if !errors.As(r.err, &u) || !errors.As(u, &ae) || ae.Kind != apic.KindTimeout {
		t.Fatalf("Get: %v, want a timeout", r.err)
	}
	// The timeout, then a back-off of half to all of BackoffMin.
	if d := u.RetryAt.Sub(t0.Add(100 * time.Millisecond)); d < session.DefaultBackoffMin/2 || d > session.DefaultBackoffMin {
		t.Errorf("RetryAt = %v, want a back-off of 0.5 to 1 s after the timeout at %v", u.RetryAt, t0.Add(100*time.Millisecond))
	}
	at(t, u.RetryAt)
	if tok := h.get(); e.me(t, tok) != http.StatusOK {
		t.Error("the token after the timeout does not work")
	}
}

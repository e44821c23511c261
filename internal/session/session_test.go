package session_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/session"
)

const life8h = 8 * time.Hour

// 1. One request for any number of cold callers.
func TestColdStartSingleFlight(t *testing.T) { synctest.Test(t, testColdStartSingleFlight) }

func testColdStartSingleFlight(t *testing.T) {
	h := newHarness(t, life8h)
	gate := make(chan struct{})
	h.f.setGate(gate)

	const n = 100
	var started sync.WaitGroup
	started.Add(n)
	results := make(chan getResult, n)
	for range n {
		go func() {
			started.Done()
			tok, err := h.m.Get(context.Background())
			results <- getResult{tok, err}
		}()
	}
	if c := recv(t, h.f.entered, "token request"); c.kind != "login" || !c.at.Equal(t0) {
		t.Fatalf("first call %s at %v, want login at %v", c.kind, c.at, t0)
	}
	started.Wait()
	if st := h.m.Status(); st.State != session.StateRefreshing || st.Token != nil {
		t.Errorf("Status while fetching: State %v, Token %v", st.State, st.Token)
	}
	close(gate)

	var first *session.Token
	for i := range n {
		r := recv(t, results, "Get result")
		if r.err != nil {
			t.Fatalf("Get %d: %v", i, r.err)
		}
		if first == nil {
			first = r.tok
		}
		if r.tok != first {
			t.Fatalf("Get %d returned another *Token (%s, want %s)", i, r.tok.AccessToken, first.AccessToken)
		}
	}
	h.wantCounts(1, 0)
	if first.Header != "Bearer "+first.AccessToken || first.AccessToken != "access-1" {
		t.Errorf("Header = %q for access token %q", first.Header, first.AccessToken)
	}
	if len(first.HeaderValues) != 1 || first.HeaderValues[0] != first.Header {
		t.Errorf("HeaderValues = %q, want [Header]", first.HeaderValues)
	}
	if first.Grant != apic.GrantPassword || !first.Obtained.Equal(t0) {
		t.Errorf("Grant %q obtained %v, want password at %v", first.Grant, first.Obtained, t0)
	}
	if st := h.m.Status(); st.State != session.StateValid || st.Token != first || !st.LastObtained.Equal(t0) || st.Waited != 0 {
		t.Errorf("Status = %+v", st)
	}
	h.wantRequests(session.Requests{{apic.GrantPassword, session.OutcomeOK}: 1})
	if got := recv(t, h.tokens, "OnToken"); got != first {
		t.Error("OnToken saw another token")
	}
}

// 2. A caller that gives up does not stop the request for the others.
func TestWaiterCancelled(t *testing.T) { synctest.Test(t, testWaiterCancelled) }

func testWaiterCancelled(t *testing.T) {
	h := newHarness(t, life8h)
	gate := make(chan struct{})
	h.f.setGate(gate)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quitter := h.getAsync(ctx)
	stayer := h.getAsync(context.Background())
	recv(t, h.f.entered, "token request")
	late := h.getAsync(context.Background())

	cancel()
	r := recv(t, quitter, "cancelled Get")
	if !errors.Is(r.err, context.Canceled) || r.tok != nil {
		t.Fatalf("cancelled Get = %v, %v; want context.Canceled", r.tok, r.err)
	}
	if h.m.Status().State != session.StateRefreshing {
		t.Fatal("the token request stopped with its first caller")
	}

	close(gate)
	a, b := recv(t, stayer, "Get result"), recv(t, late, "Get result")
	if a.err != nil || b.err != nil {
		t.Fatalf("waiters: %v, %v", a.err, b.err)
	}
	if a.tok != b.tok || a.tok.AccessToken != "access-1" {
		t.Errorf("waiters got %s and %s, want both access-1", a.tok.AccessToken, b.tok.AccessToken)
	}
	h.wantCounts(1, 0)
}

// 3. The schedule of a token.
func TestSchedule(t *testing.T) {
	cases := []struct {
		name          string
		life          time.Duration
		refreshBefore time.Duration
		before        time.Duration // RefreshAt = Expiry - before
		leeway        time.Duration // ValidUntil = Expiry - leeway
	}{
		{"default 8h", life8h, 0, 2 * time.Hour, 10 * time.Second},
		{"default 1h", time.Hour, 0, 15 * time.Minute, 10 * time.Second},
		{"default 60s", time.Minute, 0, 15 * time.Second, 6 * time.Second},
		{"default 20s", 20 * time.Second, 0, 5 * time.Second, 2 * time.Second},
		{"option 1h of 8h", life8h, time.Hour, time.Hour, 10 * time.Second},
		{"option at half", time.Minute, 30 * time.Second, 30 * time.Second, 6 * time.Second},
		{"option above half", life8h, 6 * time.Hour, 4 * time.Hour, 10 * time.Second},
		{"option above the lifetime", time.Minute, time.Hour, 30 * time.Second, 6 * time.Second},
		{"option under twice the leeway", life8h, 5 * time.Second, 20 * time.Second, 10 * time.Second},
		{"option under twice the leeway, short life", time.Minute, time.Second, 12 * time.Second, 6 * time.Second},
	}
	for _, tc := range cases {
		runBubble(t, tc.name, func(t *testing.T) {
			h := newHarness(t, tc.life, func(o *session.Options) { o.RefreshBefore = tc.refreshBefore })
			tok := h.get()
			if want := t0.Add(tc.life); !tok.Expiry.Equal(want) {
				t.Fatalf("Expiry = %v, want %v", tok.Expiry, want)
			}
			if got := tok.Expiry.Sub(tok.RefreshAt); got != tc.before {
				t.Errorf("RefreshAt is %v before expiry, want %v", got, tc.before)
			}
			if got := tok.Expiry.Sub(tok.ValidUntil); got != tc.leeway {
				t.Errorf("ValidUntil is %v before expiry, want %v", got, tc.leeway)
			}
			if !tok.Obtained.Equal(t0) || !tok.RefreshExpiry.IsZero() {
				t.Errorf("Obtained %v, RefreshExpiry %v", tok.Obtained, tok.RefreshExpiry)
			}
		})
	}
}

func TestTokenDetails(t *testing.T) { synctest.Test(t, testTokenDetails) }

func testTokenDetails(t *testing.T) {
	h := newHarness(t, life8h, func(o *session.Options) { o.Grant = apic.GrantAPIKey })
	h.f.refreshLife = 16 * time.Hour
	tok := h.get()
	if tok.Grant != apic.GrantAPIKey {
		t.Errorf("Grant = %q, want api_key (Options.Grant)", tok.Grant)
	}
	if want := t0.Add(16 * time.Hour); !tok.RefreshExpiry.Equal(want) {
		t.Errorf("RefreshExpiry = %v, want %v", tok.RefreshExpiry, want)
	}
	s := tok.String()
	if strings.Contains(s, tok.AccessToken) || strings.Contains(s, tok.RefreshToken) {
		t.Errorf("String() = %q shows the token", s)
	}
	if want := "token (api_key grant) expiring 2000-01-01T08:00:00Z, refresh at 2000-01-01T06:00:00Z"; s != want {
		t.Errorf("String() = %q, want %q", s, want)
	}
	if h.m.Current() != tok {
		t.Error("Current() is not the token")
	}
}

// 4. The token is renewed in the background, and nobody waits for it.
func TestBackgroundRefresh(t *testing.T) { synctest.Test(t, testBackgroundRefresh) }

func testBackgroundRefresh(t *testing.T) {
	// The held request must outlast the token, not time out.
	h := newHarness(t, life8h, func(o *session.Options) { o.Timeout = 24 * time.Hour })
	tok1 := h.get()
	recv(t, h.tokens, "first token")
	recv(t, h.f.entered, "first call")
	gate := make(chan struct{})
	h.f.setGate(gate)

	// A second before RefreshAt: nothing happens (a request would begin at
	// this time, and show in the call's time below).
	at(t, tok1.RefreshAt.Add(-time.Second))
	if got := h.get(); got != tok1 {
		t.Fatal("Get before RefreshAt did not return the held token")
	}
	at(t, tok1.RefreshAt)
	if c := recv(t, h.f.entered, "background token request"); c.kind != "login" || !c.at.Equal(tok1.RefreshAt) {
		t.Fatalf("background call %s at %v, want login at RefreshAt %v", c.kind, c.at, tok1.RefreshAt)
	}

	// The request is held; Get answers at once with the held token.
	for _, d := range []time.Duration{0, time.Hour, tok1.ValidUntil.Sub(tok1.RefreshAt) - time.Nanosecond} {
		at(t, tok1.RefreshAt.Add(d))
		if got := h.get(); got != tok1 {
			t.Fatalf("Get at RefreshAt+%v returned %v, want the held token", d, got)
		}
	}
	if st := h.m.Status(); st.State != session.StateRefreshing || !st.Ready {
		t.Errorf("during the background request: state %s, ready %v; want refreshing and ready", st.State, st.Ready)
	}
	h.wantCounts(2, 0)

	close(gate)
	tok2 := recv(t, h.tokens, "background token")
	if tok2 == tok1 || tok2.AccessToken != "access-2" {
		t.Fatalf("background token %s, want access-2", tok2.AccessToken)
	}
	if h.m.Current() != tok2 || h.get() != tok2 {
		t.Error("the new token is not the one handed out")
	}
	h.wantCounts(2, 0)
}

// The refresher keeps its own time: its timers renew the token and retry
// a failed renewal with no Get.
func TestRefresherTimers(t *testing.T) { synctest.Test(t, testRefresherTimers) }

func testRefresherTimers(t *testing.T) {
	const lifetime = 200 * time.Millisecond // renewal due 150 ms after a token
	h := newHarness(t, lifetime, func(o *session.Options) { o.BackoffMin = 2 * time.Millisecond })
	tok1 := h.get()
	recv(t, h.tokens, "first token")
	h.f.setLoginErr(func(n int) error {
		if n == 2 {
			return apicErr(apic.KindServer, 500)
		}
		return nil
	})
	at(t, tok1.RefreshAt)
	fl := recv(t, h.failures, "failed renewal")
	if d := fl.retryAt.Sub(tok1.RefreshAt); d < time.Millisecond || d > 2*time.Millisecond {
		t.Fatalf("retry %v after the failure, want 1 to 2 ms", d)
	}
	if st := h.m.Status(); st.State != session.StateBackingOff || st.Cause != "server_error" || !st.Ready {
		t.Errorf("after the failed renewal: state %s, cause %q, ready %v; want backing_off, server_error and ready (the token is still handed out)", st.State, st.Cause, st.Ready)
	}
	at(t, fl.retryAt)
	tok2 := recv(t, h.tokens, "renewed token")
	if !tok2.Obtained.Equal(fl.retryAt) {
		t.Errorf("renewed at %v, want %v", tok2.Obtained, fl.retryAt)
	}
	h.wantCounts(3, 0)
	h.wantRequests(session.Requests{{apic.GrantPassword, session.OutcomeOK}: 2, {apic.GrantPassword, "server_error"}: 1})
}

// 5. Past ValidUntil, Get waits for a new token and never returns the old:
// here the background renewal that began at RefreshAt is held, and time
// runs past ValidUntil before it ends.
func TestGetAfterValidUntilWaits(t *testing.T) {
	cases := []struct {
		name string
		at   func(*session.Token) time.Time
	}{
		{"at ValidUntil", func(t *session.Token) time.Time { return t.ValidUntil }},
		{"between ValidUntil and expiry", func(t *session.Token) time.Time { return t.Expiry.Add(-time.Second) }},
		{"at expiry", func(t *session.Token) time.Time { return t.Expiry }},
		{"a day after expiry", func(t *session.Token) time.Time { return t.Expiry.Add(24 * time.Hour) }},
	}
	for _, tc := range cases {
		runBubble(t, tc.name, func(t *testing.T) {
			h := newHarness(t, life8h, func(o *session.Options) { o.Timeout = 48 * time.Hour })
			tok1 := h.get()
			recv(t, h.f.entered, "first call")
			gate := make(chan struct{})
			h.f.setGate(gate)
			at(t, tok1.RefreshAt)
			if c := recv(t, h.f.entered, "background token request"); c.kind != "login" || !c.at.Equal(tok1.RefreshAt) {
				t.Fatalf("call %s at %v, want login at %v", c.kind, c.at, tok1.RefreshAt)
			}
			now := tc.at(tok1)
			at(t, now)

			res := h.getAsync(context.Background())
			synctest.Wait()
			select {
			case r := <-res:
				t.Fatalf("Get past ValidUntil returned %v, %v without waiting", r.tok, r.err)
			default:
			}
			if st := h.m.Status(); st.State != session.StateRefreshing {
				t.Errorf("state %s, want refreshing", st.State)
			}
			close(gate)
			r := recv(t, res, "Get result")
			if r.err != nil {
				t.Fatalf("Get: %v", r.err)
			}
			if r.tok == tok1 || r.tok.AccessToken == tok1.AccessToken {
				t.Fatal("Get returned the token past its ValidUntil")
			}
			if !now.Before(r.tok.ValidUntil) || !r.tok.Obtained.Equal(now) {
				t.Errorf("new token obtained %v valid until %v, at %v", r.tok.Obtained, r.tok.ValidUntil, now)
			}
			if st := h.m.Status(); st.Waited != 1 {
				t.Errorf("Status().Waited = %d, want 1", st.Waited)
			}
			h.wantCounts(2, 0)
		})
	}
}

// An expired token is not renewed in the background: an idle session asks
// for nothing until the next Get, which starts the request at its time.
func TestExpiredTokenWaitsForGet(t *testing.T) { synctest.Test(t, testExpiredTokenWaitsForGet) }

func testExpiredTokenWaitsForGet(t *testing.T) {
	h := newHarness(t, life8h)
	tok1 := h.get()
	h.f.setLoginErr(always(apicErr(apic.KindServer, 503)))
	// The renewal fails and is retried until the token expires.
	at(t, tok1.Expiry)
	l, _ := h.f.counts()
	if l < 3 {
		t.Fatalf("%d logins by the expiry, want the first and retried renewals", l)
	}
	if st := h.m.Status(); st.State != session.StateExpired && st.State != session.StateBackingOff {
		t.Errorf("at expiry: state %s", st.State)
	}
	at(t, tok1.Expiry.Add(24*time.Hour))
	h.wantCounts(l, 0)
	if st := h.m.Status(); st.State != session.StateExpired || st.Ready {
		t.Errorf("a day after expiry: state %s, ready %v; want expired, not ready", st.State, st.Ready)
	}
	h.f.setLoginErr(nil)
	now := time.Now()
	tok2 := h.get()
	if !tok2.Obtained.Equal(now) {
		t.Errorf("token obtained at %v, want at the Get (%v)", tok2.Obtained, now)
	}
	h.wantCounts(l+1, 0)
}

// 6. The refresh token, and falling back to the primary grant.
func TestRefreshToken(t *testing.T) {
	runBubble(t, "used when held", func(t *testing.T) {
		h := newHarness(t, life8h)
		h.f.refreshLife = 16 * time.Hour
		tok1 := h.get()
		recv(t, h.tokens, "first token")
		if tok1.Grant != apic.GrantPassword || tok1.RefreshToken != "refresh-1" {
			t.Fatalf("first token: grant %q refresh token %q", tok1.Grant, tok1.RefreshToken)
		}
		tok := tok1
		for i := 2; i <= 3; i++ {
			at(t, tok.RefreshAt)
			next := recv(t, h.tokens, "refreshed token")
			if next.Grant != apic.GrantRefreshToken {
				t.Errorf("token %d: grant %q, want refresh_token", i, next.Grant)
			}
			tok = next
		}
		h.wantCounts(1, 2)
		h.f.mu.Lock()
		args := strings.Join(h.f.refreshArgs, ",")
		h.f.mu.Unlock()
		if args != "refresh-1,refresh-2" {
			t.Errorf("refreshed with %s, want refresh-1,refresh-2 (the latest each time)", args)
		}
		if len(h.refused) != 0 {
			t.Error("OnRefreshRefused called")
		}
	})

	runBubble(t, "refused falls back to login", func(t *testing.T) {
		h := newHarness(t, life8h)
		h.f.refreshLife = 16 * time.Hour
		tok1 := h.get()
		recv(t, h.tokens, "first token")
		refusal := apicErr(apic.KindRefused, 401)
		refusal.Grant = apic.GrantRefreshToken
		h.f.setRefreshErr(always(refusal))
		at(t, tok1.RefreshAt)
		tok2 := recv(t, h.tokens, "token after the refused refresh")
		if tok2.Grant != apic.GrantPassword || tok2 == tok1 {
			t.Errorf("token after fallback: grant %q", tok2.Grant)
		}
		if err := recv(t, h.refused, "OnRefreshRefused"); !errors.Is(err, refusal) {
			t.Errorf("OnRefreshRefused(%v), want the refusal", err)
		}
		h.wantCounts(2, 1)
		if st := h.m.Status(); !st.LastFailure.IsZero() || st.LastError != nil {
			t.Errorf("a fallback that worked counted as a failure: %+v", st)
		}
		h.wantRequests(session.Requests{
			{apic.GrantPassword, session.OutcomeOK}: 2, {apic.GrantRefreshToken, "refused"}: 1,
		})
	})

	runBubble(t, "a refused refresh token is not tried again", func(t *testing.T) {
		h := newHarness(t, life8h)
		h.f.refreshLife = 16 * time.Hour
		tok1 := h.get()
		recv(t, h.tokens, "first token")
		h.f.setRefreshErr(always(apicErr(apic.KindRefused, 401)))
		// The fallback login fails once, then works.
		h.f.setLoginErr(func(n int) error {
			if n == 2 {
				return apicErr(apic.KindServer, 503)
			}
			return nil
		})
		at(t, tok1.RefreshAt)
		f := recv(t, h.failures, "failed fallback login")
		at(t, f.retryAt)
		if tok := recv(t, h.tokens, "token after the retry"); tok.Grant != apic.GrantPassword {
			t.Errorf("grant %q, want password", tok.Grant)
		}
		h.wantCounts(3, 1)
	})

	for _, tc := range []struct {
		name string
		err  error
	}{
		{"server error does not fall back", apicErr(apic.KindServer, 503)},
		{"unreachable does not fall back", apicErr(apic.KindUnreachable, 0)},
		{"rate limited does not fall back", apicErr(apic.KindRateLimited, 429)},
		{"other error does not fall back", errors.New("not an apic error")},
		{"untrusted certificate does not fall back", apicErr(apic.KindTLS, 0)},
	} {
		runBubble(t, tc.name, func(t *testing.T) {
			h := newHarness(t, life8h)
			h.f.refreshLife = 16 * time.Hour
			tok1 := h.get()
			h.f.setRefreshErr(always(tc.err))
			at(t, tok1.RefreshAt)
			fl := recv(t, h.failures, "OnFailure")
			if !errors.Is(fl.err, tc.err) {
				t.Errorf("OnFailure(%v), want %v", fl.err, tc.err)
			}
			wantState := session.StateBackingOff
			if session.Lasting(tc.err) {
				wantState = session.StateCoolingDown
				if d := fl.retryAt.Sub(tok1.RefreshAt); d != session.DefaultCooldownMin {
					t.Errorf("retry %v after the failure, want the cool-down's %v", d, session.DefaultCooldownMin)
				}
			} else if d := fl.retryAt.Sub(tok1.RefreshAt); d < session.DefaultBackoffMin/2 || d > session.DefaultBackoffMin {
				t.Errorf("retry %v after the failure, want 0.5 to 1 s", d)
			}
			h.wantCounts(1, 1)
			if len(h.refused) != 0 {
				t.Error("OnRefreshRefused called")
			}
			if got := h.get(); got != tok1 {
				t.Error("Get did not return the held token")
			}
			if st := h.m.Status(); !errors.Is(st.LastError, tc.err) || st.State != wantState || !st.RetryAt.Equal(fl.retryAt) || st.Cause != session.Cause(tc.err) {
				t.Errorf("Status = %+v", st)
			}
		})
	}

	runBubble(t, "expired refresh token is not used", func(t *testing.T) {
		h := newHarness(t, life8h)
		h.f.refreshLife = time.Hour // gone by RefreshAt
		tok1 := h.get()
		recv(t, h.tokens, "first token")
		at(t, tok1.RefreshAt)
		if tok2 := recv(t, h.tokens, "second token"); tok2.Grant != apic.GrantPassword {
			t.Errorf("grant %q, want password", tok2.Grant)
		}
		h.wantCounts(2, 0)
	})
}

// step is one failed token request of a retry schedule: the error it
// gets (made at the time of the request) and the pause expected after it:
// wait exactly, or, when jitter is set, from half of wait to wait (the
// back-off's jitter).
type step struct {
	err    func(now time.Time) error
	wait   time.Duration
	jitter bool
}

func fails(kind apic.Kind, status int) func(time.Time) error {
	return func(time.Time) error { return apicErr(kind, status) }
}

func rateLimited(after time.Duration) func(time.Time) error {
	return func(now time.Time) error {
		e := apicErr(apic.KindRateLimited, 429)
		e.RetryAt = now.Add(after)
		return e
	}
}

// 7 and 8. Back-off after failures that may heal, cool-down after refusals.
func TestRetrySchedule(t *testing.T) {
	server := fails(apic.KindServer, 500)
	refused := fails(apic.KindRefused, 401)
	untrusted := fails(apic.KindTLS, 0)
	cases := []struct {
		name  string
		opts  func(*session.Options)
		steps []step
	}{
		{"backoff doubles to BackoffMax", nil, []step{
			{server, time.Second, true}, {server, 2 * time.Second, true}, {server, 4 * time.Second, true},
			{server, 8 * time.Second, true}, {server, 8 * time.Second, true}, {server, 8 * time.Second, true},
		}},
		{"backoff of every kind that may heal", nil, []step{
			{fails(apic.KindUnreachable, 0), time.Second, true}, {fails(apic.KindTimeout, 0), 2 * time.Second, true},
			{fails(apic.KindBadResponse, 200), 4 * time.Second, true}, {fails(apic.KindRateLimited, 429), 8 * time.Second, true},
			{func(time.Time) error { return errors.New("plain error") }, 8 * time.Second, true},
		}},
		// A certificate not trusted stays so until someone changes the
		// configuration or the server: the cool-down, as for a refusal.
		{"cool-down after an untrusted certificate", nil, []step{
			{untrusted, 30 * time.Second, false}, {untrusted, time.Minute, false}, {untrusted, 2 * time.Minute, false},
			{untrusted, 4 * time.Minute, false}, {untrusted, 8 * time.Minute, false}, {untrusted, 15 * time.Minute, false},
			{untrusted, 15 * time.Minute, false},
		}},
		{"refusal and untrusted certificate share the cool-down", nil, []step{
			{untrusted, 30 * time.Second, false}, {refused, time.Minute, false}, {untrusted, 2 * time.Minute, false},
			{server, time.Second, true}, {untrusted, 30 * time.Second, false},
		}},
		{"Retry-After later than the backoff wins", nil, []step{
			{rateLimited(40 * time.Second), 40 * time.Second, false}, {server, 2 * time.Second, true},
		}},
		{"Retry-After earlier than the backoff loses", nil, []step{
			{rateLimited(100 * time.Millisecond), time.Second, true},
			{rateLimited(-time.Minute), 2 * time.Second, true},
		}},
		{"Retry-After capped at CooldownMax", nil, []step{
			{rateLimited(time.Hour), 15 * time.Minute, false},
		}},
		{"Retry-After capped at a set CooldownMax", func(o *session.Options) { o.CooldownMax = 20 * time.Minute }, []step{
			{rateLimited(time.Hour), 20 * time.Minute, false},
		}},
		{"cool-down after refusals, without jitter", nil, []step{
			{refused, 30 * time.Second, false}, {refused, time.Minute, false}, {refused, 2 * time.Minute, false},
			{refused, 4 * time.Minute, false}, {refused, 8 * time.Minute, false}, {refused, 15 * time.Minute, false},
			{refused, 15 * time.Minute, false},
		}},
		{"cool-down with set bounds", func(o *session.Options) { o.CooldownMin, o.CooldownMax = time.Minute, 3*time.Minute }, []step{
			{refused, time.Minute, false}, {refused, 2 * time.Minute, false}, {refused, 3 * time.Minute, false}, {refused, 3 * time.Minute, false},
		}},
		{"refusal and failure reset each other", nil, []step{
			{server, time.Second, true}, {server, 2 * time.Second, true}, {refused, 30 * time.Second, false},
			{refused, time.Minute, false}, {server, time.Second, true}, {refused, 30 * time.Second, false},
		}},
	}
	for _, tc := range cases {
		runBubble(t, tc.name, func(t *testing.T) {
			h := newHarness(t, life8h, func(o *session.Options) {
				o.BackoffMin, o.BackoffMax = 2*time.Second, 16*time.Second
				if tc.opts != nil {
					tc.opts(o)
				}
			})
			// BackoffMin 2 s makes the first back-off 1 to 2 s: the waits
			// above are the jitter's upper bounds.
			for i := range tc.steps {
				if tc.steps[i].jitter {
					tc.steps[i].wait *= 2
				}
			}
			runSteps(t, h, tc.steps, 0)
		})
	}
}

// runSteps makes each step's token request fail and checks the pause
// after it: Get fails at once without a request until the retry time, and
// asks again from it. logins is the number of Login calls before.
func runSteps(t *testing.T, h *harness, steps []step, logins int) {
	t.Helper()
	for i, st := range steps {
		now := time.Now()
		want := st.err(now)
		h.f.setLoginErr(always(want))
		u := h.getUnavailable()
		logins++
		h.wantCounts(logins, 0)
		if !errors.Is(u, want) || !errors.Is(u.Err, want) || u.Error() != want.Error() {
			t.Fatalf("step %d: error %v, want %v", i, u, want)
		}
		got := u.RetryAt.Sub(now)
		if lo := st.wait / 2; st.jitter && (got < lo || got > st.wait) || !st.jitter && got != st.wait {
			t.Fatalf("step %d: retry %v after the failure, want %v (jitter %v)", i, got, st.wait, st.jitter)
		}
		if fl := recv(t, h.failures, "OnFailure"); !fl.retryAt.Equal(u.RetryAt) || !errors.Is(fl.err, want) {
			t.Errorf("step %d: OnFailure(%v, %v)", i, fl.err, fl.retryAt)
		}
		// Until RetryAt, Get fails at once with the same error.
		for _, when := range []time.Time{now, u.RetryAt.Add(-time.Nanosecond)} {
			at(t, when)
			again := h.getUnavailable()
			if !again.RetryAt.Equal(u.RetryAt) || !errors.Is(again, want) {
				t.Fatalf("step %d: during the pause: %v until %v", i, again, again.RetryAt)
			}
			h.wantCounts(logins, 0)
		}
		wantState := session.StateBackingOff
		if session.Lasting(want) {
			wantState = session.StateCoolingDown
		}
		if st := h.m.Status(); !st.RetryAt.Equal(u.RetryAt) || !errors.Is(st.LastError, want) || !st.LastFailure.Equal(now) || st.State != wantState {
			t.Errorf("step %d: Status = %+v, want state %s", i, st, wantState)
		}
		at(t, u.RetryAt)
	}
}

func TestBackoffResetBySuccess(t *testing.T) { synctest.Test(t, testBackoffResetBySuccess) }

func testBackoffResetBySuccess(t *testing.T) {
	h := newHarness(t, life8h)
	server := fails(apic.KindServer, 502)
	runSteps(t, h, []step{{server, time.Second, true}, {server, 2 * time.Second, true}, {server, 4 * time.Second, true}}, 0)
	h.f.setLoginErr(nil)
	tok := h.get()
	if st := h.m.Status(); st.LastError != nil || !st.RetryAt.IsZero() || st.State != session.StateValid || st.Cause != "" {
		t.Errorf("after a success: Status = %+v", st)
	}
	h.m.Invalidate(tok)
	runSteps(t, h, []step{{server, time.Second, true}}, 4)
	h.wantRequests(session.Requests{{apic.GrantPassword, session.OutcomeOK}: 1, {apic.GrantPassword, "server_error"}: 4})
}

// The default back-off is jittered: from half of BackoffMin to all of it.
func TestBackoffDefaultJitter(t *testing.T) {
	seen := make(map[time.Duration]bool)
	for range 20 {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, life8h)
			h.f.setLoginErr(always(apicErr(apic.KindServer, 500)))
			d := time.Until(h.getUnavailable().RetryAt)
			if d < session.DefaultBackoffMin/2 || d > session.DefaultBackoffMin {
				t.Fatalf("first backoff %v, want within [%v, %v]", d, session.DefaultBackoffMin/2, session.DefaultBackoffMin)
			}
			seen[d] = true
		})
	}
	if len(seen) < 2 {
		t.Errorf("20 back-offs all of %v: no jitter", seen)
	}
}

// 9. A valid token is handed out while its renewal keeps failing.
func TestValidTokenKeptWhileRefreshFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"server error", apicErr(apic.KindServer, 500)},
		{"refused", apicErr(apic.KindRefused, 401)},
		{"unreachable", apicErr(apic.KindUnreachable, 0)},
		{"untrusted certificate", apicErr(apic.KindTLS, 0)},
	} {
		runBubble(t, tc.name, func(t *testing.T) {
			h := newHarness(t, life8h)
			tok1 := h.get()
			h.f.setLoginErr(always(tc.err))
			at(t, tok1.RefreshAt)
			if fl := recv(t, h.failures, "failed background refresh"); !errors.Is(fl.err, tc.err) {
				t.Fatalf("OnFailure(%v)", fl.err)
			}
			// Every minute until ValidUntil, and just before it.
			for when := tok1.RefreshAt; when.Before(tok1.ValidUntil); when = when.Add(time.Minute) {
				at(t, when)
				if got := h.get(); got != tok1 {
					t.Fatalf("at %v Get returned %v, want the held token", when, got)
				}
			}
			at(t, tok1.ValidUntil.Add(-time.Nanosecond))
			if got := h.get(); got != tok1 {
				t.Fatal("Get just before ValidUntil did not return the held token")
			}
			at(t, tok1.ValidUntil)
			u := h.getUnavailable()
			if !errors.Is(u, tc.err) {
				t.Errorf("Get at ValidUntil: %v, want %v", u, tc.err)
			}
			if l, _ := h.f.counts(); l < 2 {
				t.Errorf("%d logins, want the initial one and at least one renewal", l)
			}
		})
	}
}

// 10. Invalidate retires exactly the token given.
func TestInvalidate(t *testing.T) { synctest.Test(t, testInvalidate) }

func testInvalidate(t *testing.T) {
	h := newHarness(t, life8h)
	tok1 := h.get()

	h.m.Invalidate(nil)
	h.m.Invalidate(&session.Token{Token: tok1.Token, Header: tok1.Header}) // a copy is another token
	if h.m.Current() != tok1 || h.get() != tok1 {
		t.Fatal("Invalidate of another token retired the held one")
	}
	h.wantCounts(1, 0)

	h.m.Invalidate(tok1)
	if h.m.Current() != nil {
		t.Fatal("Invalidate left the token held")
	}
	tok2 := h.get()
	if tok2 == tok1 || tok2.AccessToken != "access-2" {
		t.Fatalf("Get after Invalidate returned %s, want access-2", tok2.AccessToken)
	}
	h.wantCounts(2, 0)

	h.m.Invalidate(tok1) // stale: a late caller with the old token
	if h.m.Current() != tok2 || h.get() != tok2 {
		t.Fatal("Invalidate of an old token retired the new one")
	}
	h.wantCounts(2, 0)
}

// 11. Refresh asks for a new token whatever the state.
func TestForcedRefresh(t *testing.T) {
	runBubble(t, "valid token held", func(t *testing.T) {
		h := newHarness(t, life8h)
		tok1 := h.get()
		tok2, err := h.m.Refresh(context.Background())
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		if tok2 == tok1 || tok2.AccessToken != "access-2" {
			t.Fatalf("Refresh returned %s, want access-2", tok2.AccessToken)
		}
		if h.get() != tok2 {
			t.Error("Get does not return the forced token")
		}
		h.wantCounts(2, 0)
	})
	runBubble(t, "with a refresh token", func(t *testing.T) {
		h := newHarness(t, life8h)
		h.f.refreshLife = time.Hour
		h.get()
		tok, err := h.m.Refresh(context.Background())
		if err != nil || tok.Grant != apic.GrantRefreshToken {
			t.Fatalf("Refresh: %v, %v", tok, err)
		}
		h.wantCounts(1, 1)
	})
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"during cool-down", apicErr(apic.KindRefused, 401)},
		{"during back-off", apicErr(apic.KindServer, 500)},
	} {
		runBubble(t, tc.name, func(t *testing.T) {
			h := newHarness(t, life8h)
			h.f.setLoginErr(func(n int) error {
				if n == 1 {
					return tc.err
				}
				return nil
			})
			u := h.getUnavailable()
			if !u.RetryAt.After(time.Now()) {
				t.Fatalf("no pause after %v", tc.err)
			}
			h.getUnavailable()
			h.wantCounts(1, 0)
			tok, err := h.m.Refresh(context.Background())
			if err != nil {
				t.Fatalf("Refresh during the pause: %v", err)
			}
			h.wantCounts(2, 0)
			if h.get() != tok {
				t.Error("Get does not return the forced token")
			}
			if st := h.m.Status(); st.LastError != nil || !st.RetryAt.IsZero() {
				t.Errorf("the pause outlived a success: %+v", st)
			}
		})
	}
	runBubble(t, "failing", func(t *testing.T) {
		h := newHarness(t, life8h)
		tok1 := h.get()
		h.f.setLoginErr(always(apicErr(apic.KindServer, 500)))
		_, err := h.m.Refresh(context.Background())
		var u *session.Unavailable
		if !errors.As(err, &u) {
			t.Fatalf("Refresh: %v, want *Unavailable", err)
		}
		if h.get() != tok1 {
			t.Error("a failed forced refresh lost the valid token")
		}
	})
}

// 12. Close stops everything.
func TestClose(t *testing.T) {
	checkClosed := func(t *testing.T, m *session.Manager) {
		t.Helper()
		if tok, err := m.Get(context.Background()); !errors.Is(err, session.ErrClosed) || tok != nil {
			t.Errorf("Get after Close = %v, %v; want ErrClosed", tok, err)
		}
		if tok, err := m.Refresh(context.Background()); !errors.Is(err, session.ErrClosed) || tok != nil {
			t.Errorf("Refresh after Close = %v, %v; want ErrClosed", tok, err)
		}
		if err := m.Close(); err != nil { // twice is harmless
			t.Errorf("second Close: %v", err)
		}
	}
	runBubble(t, "idle", func(t *testing.T) {
		h := newHarness(t, life8h)
		h.m.Close()
		checkClosed(t, h.m)
		h.wantCounts(0, 0)
	})
	runBubble(t, "token held", func(t *testing.T) {
		h := newHarness(t, life8h)
		h.get()
		h.m.Close()
		checkClosed(t, h.m)
		h.wantCounts(1, 0)
	})
	runBubble(t, "during a request", func(t *testing.T) {
		h := newHarness(t, life8h)
		h.f.setGate(make(chan struct{})) // never released: Close must end it
		waiter := h.getAsync(context.Background())
		recv(t, h.f.entered, "token request")
		closed := make(chan struct{})
		go func() {
			h.m.Close()
			close(closed)
		}()
		recv(t, closed, "Close to return")
		if r := recv(t, waiter, "Get result"); !errors.Is(r.err, session.ErrClosed) {
			t.Errorf("waiter got %v, %v; want ErrClosed", r.tok, r.err)
		}
		checkClosed(t, h.m)
	})
	runBubble(t, "during a background refresh", func(t *testing.T) {
		h := newHarness(t, life8h)
		tok := h.get()
		recv(t, h.f.entered, "first call")
		h.f.setGate(make(chan struct{}))
		at(t, tok.RefreshAt)
		recv(t, h.f.entered, "background token request")
		h.m.Close()
		checkClosed(t, h.m)
	})
}

// Close while callers keep asking: no token request starts after Close
// returns, and nothing leaks.
func TestCloseWhileBusy(t *testing.T) {
	for range 30 {
		synctest.Test(t, func(t *testing.T) { closeWhileBusy(t) })
	}
}

func closeWhileBusy(t *testing.T) {
	{
		f := newFakeFetcher(time.Minute)
		var closed atomic.Bool
		var late atomic.Int32
		f.onCall = func() {
			if closed.Load() {
				late.Add(1)
			}
		}
		m := session.New(session.Options{Fetcher: f})
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				for {
					var err error
					if i%2 == 0 {
						_, err = m.Refresh(context.Background())
					} else {
						var tok *session.Token
						if tok, err = m.Get(context.Background()); err == nil {
							m.Invalidate(tok)
						}
					}
					if errors.Is(err, session.ErrClosed) {
						return
					}
				}
			})
		}
		<-f.entered // the callers spin, so the bubble never settles: block instead
		m.Close()
		closed.Store(true)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		recv(t, done, "callers to see ErrClosed")
		if n := late.Load(); n != 0 {
			t.Fatalf("%d token requests started after Close returned", n)
		}
	}
}

// 13. Many callers while time runs and tokens are renewed: every token
// handed out is valid when it is handed out.
func TestConcurrentGetWhileTimeRuns(t *testing.T) { synctest.Test(t, testConcurrentGetWhileTimeRuns) }

func testConcurrentGetWhileTimeRuns(t *testing.T) {
	const lifetime = 100 * time.Second // RefreshAt +75 s, ValidUntil +90 s
	h := newHarness(t, lifetime)
	h.get()
	recv(t, h.tokens, "first token")

	const steps = 300 // seconds
	var wg sync.WaitGroup
	var gets atomic.Int64
	for i := range 16 {
		wg.Go(func() {
			// Each caller asks at its own offset within every second.
			time.Sleep(time.Duration(i) * time.Second / 16)
			for range steps {
				tok, err := h.m.Get(context.Background())
				now := time.Now()
				gets.Add(1)
				switch {
				case err != nil:
					t.Errorf("Get: %v", err)
					return
				case !now.Before(tok.ValidUntil):
					t.Errorf("at %v Get returned %s, valid until %v", now, tok.AccessToken, tok.ValidUntil)
					return
				case now.Before(tok.Obtained):
					t.Errorf("at %v Get returned a token obtained at %v", now, tok.Obtained)
					return
				}
				_ = h.m.Status()
				time.Sleep(time.Second)
			}
		})
	}
	wg.Wait()
	// Tokens at 0, 75, 150, 225 and 300 s (the callers' last second ends
	// at 300 s or just before).
	if l, r := h.f.counts(); l < 4 || l > 5 || r != 0 {
		t.Errorf("%d logins and %d refreshes, want 4 or 5 and 0", l, r)
	}
	if n := gets.Load(); n != 16*steps {
		t.Errorf("%d Gets, want %d", n, 16*steps)
	}
	if st := h.m.Status(); st.Waited != 0 {
		t.Errorf("%d Gets waited for a token, want 0: every renewal came in time", st.Waited)
	}
}

// runBubble runs f as subtest name in a synctest bubble of its own.
func runBubble(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	t.Run(name, func(t *testing.T) { synctest.Test(t, f) })
}

// 14. Close signs the held token out while it is valid, and only then.
func TestSignOutOnClose(t *testing.T) {
	errSignOut := errors.New("sign-out refused")
	for _, tc := range []struct {
		name     string
		token    bool          // a token is obtained first
		after    time.Duration // time passed after it, before Close
		err      error         // what SignOut returns
		wantCall bool
	}{
		{"no token", false, 0, nil, false},
		{"valid token", true, time.Hour, nil, true},
		{"valid token, sign-out fails", true, 0, errSignOut, true},
		{"past ValidUntil", true, life8h, nil, false},
	} {
		runBubble(t, tc.name, func(t *testing.T) {
			var calls []*session.Token
			var deadline time.Duration
			f := newFakeFetcher(life8h)
			f.setRefreshErr(always(apicErr(apic.KindServer, 500))) // no renewal at RefreshAt
			f.setLoginErr(func(n int) error {
				if n > 1 {
					return apicErr(apic.KindServer, 500)
				}
				return nil
			})
			m := session.New(session.Options{Fetcher: f, SignOut: func(ctx context.Context, tok *session.Token) error {
				d, _ := ctx.Deadline()
				deadline = time.Until(d)
				calls = append(calls, tok)
				return tc.err
			}})
			var held *session.Token
			if tc.token {
				var err error
				if held, err = m.Get(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(tc.after)
			if err := m.Close(); !errors.Is(err, tc.err) {
				t.Errorf("Close = %v, want %v", err, tc.err)
			}
			switch {
			case !tc.wantCall && len(calls) != 0:
				t.Errorf("SignOut called %d times, want none", len(calls))
			case tc.wantCall && (len(calls) != 1 || calls[0] != held):
				t.Errorf("SignOut calls %v, want one with the held token", calls)
			case tc.wantCall && deadline != session.SignOutTimeout:
				t.Errorf("SignOut had %v, want SignOutTimeout", deadline)
			}
		})
	}
}

// Status's state, cause and counts through a session's life.
func TestStatus(t *testing.T) { synctest.Test(t, testStatus) }

func testStatus(t *testing.T) {
	h := newHarness(t, life8h)
	if st := h.m.Status(); st.State != session.StateNoToken || st.Token != nil || len(st.Requests) != 0 || st.Ready {
		t.Fatalf("new session: %+v", st)
	}
	h.f.setLoginErr(func(n int) error {
		if n == 1 {
			return apicErr(apic.KindRefused, 401)
		}
		return nil
	})
	h.getUnavailable()
	if st := h.m.Status(); st.State != session.StateCoolingDown || st.Cause != "refused" || !st.RetryAt.Equal(t0.Add(session.DefaultCooldownMin)) || st.Ready {
		t.Fatalf("after a refusal: %+v", st)
	}
	at(t, t0.Add(session.DefaultCooldownMin))
	tok := h.get()
	if st := h.m.Status(); st.State != session.StateValid || st.Token != tok || st.LastError != nil || st.Cause != "" || !st.Ready {
		t.Fatalf("after a token: %+v", st)
	}
	h.wantRequests(session.Requests{{apic.GrantPassword, "refused"}: 1, {apic.GrantPassword, session.OutcomeOK}: 1})
	h.m.Invalidate(tok)
	if st := h.m.Status(); st.State != session.StateNoToken || st.Ready {
		t.Errorf("after Invalidate: state %s, ready %v; want no_token, not ready", st.State, st.Ready)
	}
	tok = h.get()
	if !h.m.Status().Ready {
		t.Fatal("not ready with a new token")
	}
	_ = h.m.Close()
	if st := h.m.Status(); st.Ready {
		t.Errorf("ready after Close (state %s)", st.State)
	}
	if got := session.Cause(h.getAsyncErr()); got != "closing" {
		t.Errorf("Cause after Close = %q, want closing", got)
	}
	if got := session.Cause(errors.New("plain")); got != "unknown" {
		t.Errorf("Cause of a plain error = %q, want unknown", got)
	}
}

// getAsyncErr is the error of one Get.
func (h *harness) getAsyncErr() error { return (<-h.getAsync(context.Background())).err }

// Keep: a token is requested with no Get, renewed before expiry, and,
// after a failure outlasting the token, renewed once it has expired, at
// the pace of the back-off and the cool-down. Released, an expired token
// is left to the next Get again.
func TestKeep(t *testing.T) { synctest.Test(t, testKeep) }

func testKeep(t *testing.T) {
	const lifetime = time.Minute
	h := newHarness(t, lifetime)
	release := h.m.Keep()
	tok1 := recv(t, h.tokens, "token with no Get")
	if !tok1.Obtained.Equal(t0) {
		t.Fatalf("kept token obtained at %v, want at once (%v)", tok1.Obtained, t0)
	}
	h.wantCounts(1, 0)

	// Renewals fail past the expiry; the background carries on after it.
	h.f.setLoginErr(always(apicErr(apic.KindServer, 503)))
	at(t, tok1.Expiry.Add(10*time.Minute))
	l, _ := h.f.counts()
	if l < 8 {
		t.Fatalf("%d logins in the 10 minutes after the expiry, want renewals at the back-off's pace (at most 1 min apart)", l)
	}
	h.f.setLoginErr(nil)
	st := h.m.Status()
	at(t, st.RetryAt)
	tok2 := recv(t, h.tokens, "token after the outage")
	if !tok2.Obtained.Equal(st.RetryAt) {
		t.Fatalf("renewed at %v, want at the retry time %v", tok2.Obtained, st.RetryAt)
	}

	// Refused credentials: renewed at the cool-down's pace only.
	h.f.setLoginErr(always(apicErr(apic.KindRefused, 401)))
	at(t, tok2.Expiry.Add(10*time.Minute))
	l2, _ := h.f.counts()
	// RefreshAt (45 s), then 30 s, 1 min, 2 min, 4 min: 5 by 10.5 min.
	if n := l2 - l - 1; n != 5 {
		t.Fatalf("%d refused logins in 10.75 minutes, want 5 (the cool-down doubling from 30 s)", n)
	}
	if h.m.Status().State != session.StateCoolingDown {
		t.Fatalf("state %s, want cooling_down", h.m.Status().State)
	}

	// Released twice (a no-op), nothing renews an expired token.
	release()
	release()
	h.f.setLoginErr(nil)
	at(t, time.Now().Add(24*time.Hour))
	h.wantCounts(l2, 0)
	if st := h.m.Status(); st.State != session.StateExpired {
		t.Fatalf("a day after release: state %s, want expired", st.State)
	}
}

// Keep nests: the background keeps a token until every Keep is released;
// a token invalidated after a 401 is replaced at once.
func TestKeepNested(t *testing.T) { synctest.Test(t, testKeepNested) }

func testKeepNested(t *testing.T) {
	h := newHarness(t, time.Minute)
	r1, r2 := h.m.Keep(), h.m.Keep()
	tok1 := recv(t, h.tokens, "kept token")
	h.wantCounts(1, 0)
	h.m.Invalidate(tok1)
	h.m.Keep()() // a third Keep, released at once, pokes the refresher
	tok2 := recv(t, h.tokens, "token after the invalidation")
	if tok2 == tok1 || !tok2.Obtained.Equal(t0) {
		t.Fatalf("no new token at once after the invalidation: %v", tok2)
	}
	// One Keep left: an expired token is still renewed.
	r1()
	h.f.setLoginErr(always(apicErr(apic.KindServer, 503)))
	at(t, tok2.Expiry.Add(5*time.Minute))
	h.f.setLoginErr(nil)
	at(t, h.m.Status().RetryAt)
	tok3 := recv(t, h.tokens, "token renewed after the expiry")
	// None left: once the token expires, nothing renews it.
	r2()
	h.f.setLoginErr(always(apicErr(apic.KindServer, 503)))
	at(t, tok3.Expiry)
	l, _ := h.f.counts()
	at(t, time.Now().Add(time.Hour))
	h.wantCounts(l, 0)
}

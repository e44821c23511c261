package session_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/session"
)

const life8h = 8 * time.Hour

// 1. One request for any number of cold callers.
func TestColdStartSingleFlight(t *testing.T) {
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
	if st := h.m.Status(); !st.Fetching || st.Token != nil {
		t.Errorf("Status while fetching: Fetching %v, Token %v", st.Fetching, st.Token)
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
	if st := h.m.Status(); st.Obtained != 1 || st.Failed != 0 || st.Fetching || st.Token != first || !st.LastObtained.Equal(t0) {
		t.Errorf("Status = %+v", st)
	}
	if got := recv(t, h.tokens, "OnToken"); got != first {
		t.Error("OnToken saw another token")
	}
}

// 2. A caller that gives up does not stop the request for the others.
func TestWaiterCancelled(t *testing.T) {
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
	if !h.m.Status().Fetching {
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
		t.Run(tc.name, func(t *testing.T) {
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

func TestTokenDetails(t *testing.T) {
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
	if want := "token (api_key grant) expiring 2026-03-01T20:00:00Z, refresh at 2026-03-01T18:00:00Z"; s != want {
		t.Errorf("String() = %q, want %q", s, want)
	}
	if h.m.Current() != tok {
		t.Error("Current() is not the token")
	}
	select {
	case <-h.m.Context().Done():
		t.Error("Context() is done before Close")
	default:
	}
	h.m.Close()
	recv(t, h.m.Context().Done(), "Context() done after Close")
}

// 4. The token is renewed in the background, and nobody waits for it.
func TestBackgroundRefresh(t *testing.T) {
	h := newHarness(t, life8h)
	tok1 := h.get()
	recv(t, h.tokens, "first token")
	recv(t, h.f.entered, "first call")
	gate := make(chan struct{})
	h.f.setGate(gate)

	// A second before RefreshAt: nothing happens (a request would begin at
	// this time, and show in the call's time below).
	h.clock.Set(tok1.RefreshAt.Add(-time.Second))
	h.m.Poke()
	if got := h.get(); got != tok1 {
		t.Fatal("Get before RefreshAt did not return the held token")
	}
	h.clock.Set(tok1.RefreshAt)
	h.m.Poke()
	if c := recv(t, h.f.entered, "background token request"); c.kind != "login" || !c.at.Equal(tok1.RefreshAt) {
		t.Fatalf("background call %s at %v, want login at RefreshAt %v", c.kind, c.at, tok1.RefreshAt)
	}

	// The request is held; Get answers at once with the held token.
	for _, d := range []time.Duration{0, time.Hour, tok1.ValidUntil.Sub(tok1.RefreshAt) - time.Nanosecond} {
		h.clock.Set(tok1.RefreshAt.Add(d))
		if got := h.get(); got != tok1 {
			t.Fatalf("Get at RefreshAt+%v returned %v, want the held token", d, got)
		}
	}
	if !h.m.Status().Fetching {
		t.Error("Status().Fetching is false during the background request")
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

// A Get past RefreshAt is enough to start the renewal: nobody pokes.
// (The refresher may still be handling the wake-up that follows the first
// token, and renew by itself: then Get may already see the new token.
// Without the Get's own wake-up the renewal would mostly not happen.)
func TestGetPastRefreshAtStartsRenewal(t *testing.T) {
	h := newHarness(t, life8h)
	tok1 := h.get()
	recv(t, h.tokens, "first token")
	h.clock.Set(tok1.RefreshAt.Add(time.Minute))
	if got := h.get(); got != tok1 && got.AccessToken != "access-2" {
		t.Fatalf("Get returned %s, want the held token or its renewal", got.AccessToken)
	}
	tok2 := recv(t, h.tokens, "renewed token")
	if !tok2.Obtained.Equal(tok1.RefreshAt.Add(time.Minute)) {
		t.Errorf("renewed at %v", tok2.Obtained)
	}
	h.wantCounts(2, 0)
}

// The refresher keeps its own time: with short durations, its timers
// renew the token and retry a failed renewal without any Poke or Get.
func TestRefresherTimers(t *testing.T) {
	const lifetime = 200 * time.Millisecond // renewal due 150 ms after a token
	h := newHarness(t, lifetime, func(o *session.Options) {
		o.BackoffMin = 2 * time.Millisecond
		o.Jitter = func() float64 { return 0 }
	})
	tok1 := h.get()
	recv(t, h.tokens, "first token")
	h.f.setLoginErr(func(n int) error {
		if n == 2 {
			return apicErr(apic.KindServer, 500)
		}
		return nil
	})
	// The fake clock reaches RefreshAt; the refresher's timer, set for
	// 150 ms, finds it there.
	h.clock.Set(tok1.RefreshAt)
	fl := recv(t, h.failures, "failed renewal")
	if want := tok1.RefreshAt.Add(time.Millisecond); !fl.retryAt.Equal(want) {
		t.Fatalf("retry at %v, want %v", fl.retryAt, want)
	}
	// And the retry, 1 ms later, again by timer.
	h.clock.Set(fl.retryAt)
	tok2 := recv(t, h.tokens, "renewed token")
	if !tok2.Obtained.Equal(fl.retryAt) {
		t.Errorf("renewed at %v, want %v", tok2.Obtained, fl.retryAt)
	}
	h.wantCounts(3, 0)
}

// 5. Past ValidUntil, Get waits for a new token and never returns the old.
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
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, life8h)
			tok1 := h.get()
			recv(t, h.f.entered, "first call")
			gate := make(chan struct{})
			h.f.setGate(gate)
			now := tc.at(tok1)
			h.clock.Set(now)

			res := h.getAsync(context.Background())
			if c := recv(t, h.f.entered, "token request"); c.kind != "login" || !c.at.Equal(now) {
				t.Fatalf("call %s at %v, want login at %v", c.kind, c.at, now)
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
			h.wantCounts(2, 0)
		})
	}
}

// 6. The refresh token, and falling back to the primary grant.
func TestRefreshToken(t *testing.T) {
	t.Run("used when held", func(t *testing.T) {
		h := newHarness(t, life8h)
		h.f.refreshLife = 16 * time.Hour
		tok1 := h.get()
		recv(t, h.tokens, "first token")
		if tok1.Grant != apic.GrantPassword || tok1.RefreshToken != "refresh-1" {
			t.Fatalf("first token: grant %q refresh token %q", tok1.Grant, tok1.RefreshToken)
		}
		tok := tok1
		for i := 2; i <= 3; i++ {
			h.clock.Set(tok.RefreshAt)
			h.m.Poke()
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

	t.Run("refused falls back to login", func(t *testing.T) {
		h := newHarness(t, life8h)
		h.f.refreshLife = 16 * time.Hour
		tok1 := h.get()
		recv(t, h.tokens, "first token")
		refusal := apicErr(apic.KindRefused, 401)
		refusal.Grant = apic.GrantRefreshToken
		h.f.setRefreshErr(always(refusal))
		h.clock.Set(tok1.RefreshAt)
		h.m.Poke()
		tok2 := recv(t, h.tokens, "token after the refused refresh")
		if tok2.Grant != apic.GrantPassword || tok2 == tok1 {
			t.Errorf("token after fallback: grant %q", tok2.Grant)
		}
		if err := recv(t, h.refused, "OnRefreshRefused"); !errors.Is(err, refusal) {
			t.Errorf("OnRefreshRefused(%v), want the refusal", err)
		}
		h.wantCounts(2, 1)
		if st := h.m.Status(); st.Failed != 0 || st.LastError != nil {
			t.Errorf("a fallback that worked counted as a failure: %+v", st)
		}
	})

	t.Run("a refused refresh token is not tried again", func(t *testing.T) {
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
		h.clock.Set(tok1.RefreshAt)
		h.m.Poke()
		f := recv(t, h.failures, "failed fallback login")
		h.clock.Set(f.retryAt)
		h.m.Poke()
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, life8h, func(o *session.Options) { o.Jitter = func() float64 { return 0 } })
			h.f.refreshLife = 16 * time.Hour
			tok1 := h.get()
			h.f.setRefreshErr(always(tc.err))
			h.clock.Set(tok1.RefreshAt)
			h.m.Poke()
			fl := recv(t, h.failures, "OnFailure")
			if !errors.Is(fl.err, tc.err) {
				t.Errorf("OnFailure(%v), want %v", fl.err, tc.err)
			}
			if want := tok1.RefreshAt.Add(500 * time.Millisecond); !fl.retryAt.Equal(want) {
				t.Errorf("retry at %v, want %v", fl.retryAt, want)
			}
			h.wantCounts(1, 1)
			if len(h.refused) != 0 {
				t.Error("OnRefreshRefused called")
			}
			if got := h.get(); got != tok1 {
				t.Error("Get did not return the held token")
			}
			if st := h.m.Status(); !errors.Is(st.LastError, tc.err) || st.Failed != 1 || !st.RetryAt.Equal(fl.retryAt) {
				t.Errorf("Status = %+v", st)
			}
		})
	}

	t.Run("expired refresh token is not used", func(t *testing.T) {
		h := newHarness(t, life8h)
		h.f.refreshLife = time.Hour // gone by RefreshAt
		tok1 := h.get()
		recv(t, h.tokens, "first token")
		h.clock.Set(tok1.RefreshAt)
		h.m.Poke()
		if tok2 := recv(t, h.tokens, "second token"); tok2.Grant != apic.GrantPassword {
			t.Errorf("grant %q, want password", tok2.Grant)
		}
		h.wantCounts(2, 0)
	})
}

// step is one failed token request of a retry schedule: the error it
// gets (made at the fake now) and the pause expected after it.
type step struct {
	err  func(now time.Time) error
	wait time.Duration
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
	cases := []struct {
		name   string
		jitter float64
		opts   func(*session.Options)
		steps  []step
	}{
		{"backoff without jitter", 0, nil, []step{
			{server, 500 * time.Millisecond}, {server, time.Second}, {server, 2 * time.Second},
			{server, 4 * time.Second}, {server, 4 * time.Second}, {server, 4 * time.Second},
		}},
		{"backoff with jitter 0.5", 0.5, nil, []step{
			{server, 750 * time.Millisecond}, {server, 1500 * time.Millisecond}, {server, 3 * time.Second},
			{server, 6 * time.Second}, {server, 6 * time.Second},
		}},
		{"backoff with jitter 0.75", 0.75, nil, []step{
			{server, 875 * time.Millisecond}, {server, 1750 * time.Millisecond},
		}},
		{"backoff of every kind that may heal", 0, nil, []step{
			{fails(apic.KindUnreachable, 0), 500 * time.Millisecond}, {fails(apic.KindTimeout, 0), time.Second},
			{fails(apic.KindTLS, 0), 2 * time.Second}, {fails(apic.KindBadResponse, 200), 4 * time.Second},
			{fails(apic.KindRateLimited, 429), 4 * time.Second},
			{func(time.Time) error { return errors.New("plain error") }, 4 * time.Second},
		}},
		{"Retry-After later than the backoff wins", 0, nil, []step{
			{rateLimited(40 * time.Second), 40 * time.Second}, {server, time.Second},
		}},
		{"Retry-After earlier than the backoff loses", 0.5, nil, []step{
			{rateLimited(100 * time.Millisecond), 750 * time.Millisecond},
			{rateLimited(-time.Minute), 1500 * time.Millisecond},
		}},
		{"Retry-After capped at CooldownMax", 0, nil, []step{
			{rateLimited(time.Hour), 15 * time.Minute},
		}},
		{"Retry-After capped at a set CooldownMax", 0, func(o *session.Options) { o.CooldownMax = 20 * time.Minute }, []step{
			{rateLimited(time.Hour), 20 * time.Minute},
		}},
		{"cool-down after refusals", 0.5, nil, []step{
			{refused, 30 * time.Second}, {refused, time.Minute}, {refused, 2 * time.Minute},
			{refused, 4 * time.Minute}, {refused, 8 * time.Minute}, {refused, 15 * time.Minute},
			{refused, 15 * time.Minute},
		}},
		{"cool-down with set bounds", 0.5, func(o *session.Options) { o.CooldownMin, o.CooldownMax = time.Minute, 3*time.Minute }, []step{
			{refused, time.Minute}, {refused, 2 * time.Minute}, {refused, 3 * time.Minute}, {refused, 3 * time.Minute},
		}},
		{"refusal and failure reset each other", 0, nil, []step{
			{server, 500 * time.Millisecond}, {server, time.Second}, {refused, 30 * time.Second},
			{refused, time.Minute}, {server, 500 * time.Millisecond}, {refused, 30 * time.Second},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, life8h, func(o *session.Options) {
				o.BackoffMin, o.BackoffMax = time.Second, 8*time.Second
				o.Jitter = func() float64 { return tc.jitter }
				if tc.opts != nil {
					tc.opts(o)
				}
			})
			runSteps(t, h, tc.steps, 0)
		})
	}
}

// runSteps makes each step's token request fail and checks the pause
// after it: Get fails at once without a request until the retry time, and
// asks again from it. logins is the number of Login calls before.
func runSteps(t *testing.T, h *harness, steps []step, logins int) {
	t.Helper()
	failed := h.m.Status().Failed
	for i, st := range steps {
		now := h.clock.Now()
		want := st.err(now)
		h.f.setLoginErr(always(want))
		u := h.getUnavailable()
		logins++
		h.wantCounts(logins, 0)
		if !errors.Is(u, want) || !errors.Is(u.Err, want) || u.Error() != want.Error() {
			t.Fatalf("step %d: error %v, want %v", i, u, want)
		}
		if got := u.RetryAt.Sub(now); got != st.wait {
			t.Fatalf("step %d: retry %v after the failure, want %v", i, got, st.wait)
		}
		if fl := recv(t, h.failures, "OnFailure"); !fl.retryAt.Equal(u.RetryAt) || !errors.Is(fl.err, want) {
			t.Errorf("step %d: OnFailure(%v, %v)", i, fl.err, fl.retryAt)
		}
		// Until RetryAt, Get fails at once with the same error.
		for _, at := range []time.Time{now, u.RetryAt.Add(-time.Nanosecond)} {
			h.clock.Set(at)
			again := h.getUnavailable()
			if !again.RetryAt.Equal(u.RetryAt) || !errors.Is(again, want) {
				t.Fatalf("step %d: during the pause: %v until %v", i, again, again.RetryAt)
			}
			h.wantCounts(logins, 0)
		}
		if st := h.m.Status(); !st.RetryAt.Equal(u.RetryAt) || !errors.Is(st.LastError, want) || st.Failed != failed+i+1 {
			t.Errorf("step %d: Status = %+v", i, st)
		}
		h.clock.Set(u.RetryAt)
	}
}

func TestBackoffResetBySuccess(t *testing.T) {
	h := newHarness(t, life8h, func(o *session.Options) { o.Jitter = func() float64 { return 0 } })
	server := fails(apic.KindServer, 502)
	runSteps(t, h, []step{{server, 500 * time.Millisecond}, {server, time.Second}, {server, 2 * time.Second}}, 0)
	h.f.setLoginErr(nil)
	tok := h.get()
	if st := h.m.Status(); st.LastError != nil || !st.RetryAt.IsZero() {
		t.Errorf("after a success: Status = %+v", st)
	}
	h.m.Invalidate(tok)
	runSteps(t, h, []step{{server, 500 * time.Millisecond}}, 4)
}

func TestBackoffDefaultJitter(t *testing.T) {
	for range 20 {
		h := newHarness(t, life8h)
		h.f.setLoginErr(always(apicErr(apic.KindServer, 500)))
		now := h.clock.Now()
		u := h.getUnavailable()
		if d := u.RetryAt.Sub(now); d < session.DefaultBackoffMin/2 || d > session.DefaultBackoffMin {
			t.Fatalf("first backoff %v, want within [%v, %v]", d, session.DefaultBackoffMin/2, session.DefaultBackoffMin)
		}
		h.m.Close()
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, life8h)
			tok1 := h.get()
			h.f.setLoginErr(always(tc.err))
			h.clock.Set(tok1.RefreshAt)
			h.m.Poke()
			if fl := recv(t, h.failures, "failed background refresh"); !errors.Is(fl.err, tc.err) {
				t.Fatalf("OnFailure(%v)", fl.err)
			}
			// Every minute until ValidUntil, and just before it.
			for at := tok1.RefreshAt; at.Before(tok1.ValidUntil); at = at.Add(time.Minute) {
				h.clock.Set(at)
				if got := h.get(); got != tok1 {
					t.Fatalf("at %v Get returned %v, want the held token", at, got)
				}
			}
			h.clock.Set(tok1.ValidUntil.Add(-time.Nanosecond))
			if got := h.get(); got != tok1 {
				t.Fatal("Get just before ValidUntil did not return the held token")
			}
			h.clock.Set(tok1.ValidUntil)
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
func TestInvalidate(t *testing.T) {
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
	t.Run("valid token held", func(t *testing.T) {
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
	t.Run("with a refresh token", func(t *testing.T) {
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
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, life8h)
			h.f.setLoginErr(func(n int) error {
				if n == 1 {
					return tc.err
				}
				return nil
			})
			u := h.getUnavailable()
			if !u.RetryAt.After(h.clock.Now()) {
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
	t.Run("failing", func(t *testing.T) {
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
		m.Poke()  // harmless
		m.Close() // twice is harmless
		goleak.VerifyNone(t)
	}
	t.Run("idle", func(t *testing.T) {
		h := newHarness(t, life8h)
		h.m.Close()
		checkClosed(t, h.m)
		h.wantCounts(0, 0)
	})
	t.Run("token held", func(t *testing.T) {
		h := newHarness(t, life8h)
		h.get()
		h.m.Close()
		checkClosed(t, h.m)
		h.wantCounts(1, 0)
	})
	t.Run("during a request", func(t *testing.T) {
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
	t.Run("during a background refresh", func(t *testing.T) {
		h := newHarness(t, life8h)
		tok := h.get()
		recv(t, h.f.entered, "first call")
		h.f.setGate(make(chan struct{}))
		h.clock.Set(tok.RefreshAt)
		h.m.Poke()
		recv(t, h.f.entered, "background token request")
		h.m.Close()
		checkClosed(t, h.m)
	})
}

// Close while callers keep asking: no token request starts after Close
// returns, and nothing leaks.
func TestCloseWhileBusy(t *testing.T) {
	for range 30 {
		clock := newFakeClock()
		f := newFakeFetcher(clock, time.Minute)
		var closed atomic.Bool
		var late atomic.Int32
		f.onCall = func() {
			if closed.Load() {
				late.Add(1)
			}
		}
		m := session.New(session.Options{Fetcher: f, Now: clock.Now})
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
		recv(t, f.entered, "a token request")
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

// 13. Many callers while the clock runs and tokens are renewed: every
// token handed out is valid when it is handed out.
func TestConcurrentGetWhileClockMoves(t *testing.T) {
	const lifetime = 100 * time.Second // RefreshAt +75 s, ValidUntil +90 s
	h := newHarness(t, lifetime)
	h.get()
	recv(t, h.tokens, "first token")

	// Readers hold rw.RLock around Get and the clock reading, so that
	// the clock does not move between the two; the clock moves under
	// rw.Lock.
	var rw sync.RWMutex
	done := make(chan struct{})
	var wg sync.WaitGroup
	var gets atomic.Int64
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				rw.RLock()
				tok, err := h.m.Get(context.Background())
				now := h.clock.Now()
				rw.RUnlock()
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
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			_ = h.m.Status()
			_ = h.m.Current()
			h.m.Poke()
		}
	})

	const steps = 300
	for range steps {
		rw.Lock()
		h.clock.Advance(time.Second)
		rw.Unlock()
		h.m.Poke()
		// Hold the clock until the renewal that is due has happened.
		for cur := h.m.Current(); !h.clock.Now().Before(cur.RefreshAt); cur = h.m.Current() {
			recv(t, h.tokens, "renewed token")
		}
	}
	close(done)
	wg.Wait()
	// Tokens at 0, 75, 150, 225 and 300 s.
	h.wantCounts(5, 0)
	if gets.Load() < steps {
		t.Errorf("only %d Gets", gets.Load())
	}
}

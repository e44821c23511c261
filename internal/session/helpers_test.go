package session_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/session"
	"github.com/apic-tools/apic-auth-proxy/internal/testclock"
)

// TestMain fails the package when any goroutine outlives the tests: every
// Manager is closed, so none of its goroutines may remain.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait for a signal: generous, and fatal when over.
const waitFor = 10 * time.Second

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is the shared settable clock of the tests.
type fakeClock = testclock.Clock

func newFakeClock() *fakeClock { return testclock.New(t0) }

// fakeFetcher issues tokens of a fixed lifetime on the fake clock, counts
// calls, fails on demand and can hold calls until released.
type fakeFetcher struct {
	clock *fakeClock
	life  time.Duration
	// refreshLife, when set, gives every token a refresh token of that
	// lifetime (recorded as apic.RefreshExpiry does).
	refreshLife time.Duration

	mu          sync.Mutex
	seq         int
	logins      int
	refreshes   int
	refreshArgs []string
	// loginErr and refreshErr, when set, decide the n-th call's failure
	// (n counts from 1); nil means success.
	loginErr   func(n int) error
	refreshErr func(n int) error
	// gate, when set, holds every call until it can receive from gate
	// (close it to release all) or the call's context ends.
	gate chan struct{}
	// entered receives each call as it starts (dropped when full).
	entered chan call
	// onCall, when set, is called as each call starts.
	onCall func()
}

// call is one Login or Refresh call: which, and the fake time it began.
type call struct {
	kind string // "login" or "refresh"
	at   time.Time
}

func newFakeFetcher(clock *fakeClock, life time.Duration) *fakeFetcher {
	return &fakeFetcher{clock: clock, life: life, entered: make(chan call, 1000)}
}

func (f *fakeFetcher) Login(ctx context.Context) (*apic.Token, error) {
	f.mu.Lock()
	f.logins++
	n, errf, gate, hook := f.logins, f.loginErr, f.gate, f.onCall
	f.mu.Unlock()
	return f.answer(ctx, "login", n, errf, gate, hook)
}

func (f *fakeFetcher) Refresh(ctx context.Context, refreshToken string) (*apic.Token, error) {
	f.mu.Lock()
	f.refreshes++
	f.refreshArgs = append(f.refreshArgs, refreshToken)
	n, errf, gate, hook := f.refreshes, f.refreshErr, f.gate, f.onCall
	f.mu.Unlock()
	return f.answer(ctx, "refresh", n, errf, gate, hook)
}

func (f *fakeFetcher) answer(ctx context.Context, kind string, n int, errf func(int) error, gate chan struct{}, hook func()) (*apic.Token, error) {
	if hook != nil {
		hook()
	}
	select {
	case f.entered <- call{kind, f.clock.Now()}:
	default:
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if errf != nil {
		if err := errf(n); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	now := f.clock.Now()
	tok := &apic.Token{Token: oauth2.Token{AccessToken: fmt.Sprintf("access-%d", f.seq), TokenType: "Bearer", Expiry: now.Add(f.life)}}
	if f.refreshLife > 0 {
		tok.RefreshToken = fmt.Sprintf("refresh-%d", f.seq)
		tok.RefreshExpiry = now.Add(f.refreshLife)
	}
	return tok, nil
}

// counts returns the number of Login and Refresh calls so far.
func (f *fakeFetcher) counts() (logins, refreshes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logins, f.refreshes
}

func (f *fakeFetcher) setGate(g chan struct{}) {
	f.mu.Lock()
	f.gate = g
	f.mu.Unlock()
}

func (f *fakeFetcher) setLoginErr(fn func(n int) error) {
	f.mu.Lock()
	f.loginErr = fn
	f.mu.Unlock()
}

func (f *fakeFetcher) setRefreshErr(fn func(n int) error) {
	f.mu.Lock()
	f.refreshErr = fn
	f.mu.Unlock()
}

// always returns an error function that always fails with err.
func always(err error) func(int) error { return func(int) error { return err } }

// failure is one OnFailure call.
type failure struct {
	err     error
	retryAt time.Time
}

// harness is a Manager on a fake clock and fake fetcher, with its hooks
// turned into channels. The Manager is closed when the test ends.
type harness struct {
	t        *testing.T
	clock    *fakeClock
	f        *fakeFetcher
	m        *session.Manager
	tokens   chan *session.Token
	failures chan failure
	refused  chan error
}

// newHarness starts a Manager whose fetcher issues tokens of the given
// lifetime; opts may change the options before New.
func newHarness(t *testing.T, life time.Duration, opts ...func(*session.Options)) *harness {
	t.Helper()
	return newHarnessClock(t, newFakeClock(), life, opts...)
}

// newHarnessClock is newHarness on a given clock.
func newHarnessClock(t *testing.T, clock *fakeClock, life time.Duration, opts ...func(*session.Options)) *harness {
	t.Helper()
	h := &harness{
		t: t, clock: clock, f: newFakeFetcher(clock, life),
		tokens:   make(chan *session.Token, 1000),
		failures: make(chan failure, 1000),
		refused:  make(chan error, 1000),
	}
	o := session.Options{
		Fetcher:          h.f,
		Now:              clock.Now,
		OnToken:          func(tok *session.Token, _ time.Duration) { send(h.tokens, tok) },
		OnFailure:        func(err error, retryAt time.Time, _ time.Duration) { send(h.failures, failure{err, retryAt}) },
		OnRefreshRefused: func(err error) { send(h.refused, err) },
	}
	for _, f := range opts {
		f(&o)
	}
	h.m = session.New(o)
	t.Cleanup(h.m.Close)
	return h
}

// send sends v unless ch is full: a hook must never block the Manager.
func send[T any](ch chan<- T, v T) {
	select {
	case ch <- v:
	default:
	}
}

// recv waits for a value on ch, failing the test after waitFor.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatalf("no %s within %v", what, waitFor)
		panic("unreachable")
	}
}

// getResult is what one Get returned.
type getResult struct {
	tok *session.Token
	err error
}

// getAsync calls Get in a goroutine.
func (h *harness) getAsync(ctx context.Context) <-chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		tok, err := h.m.Get(ctx)
		ch <- getResult{tok, err}
	}()
	return ch
}

// get calls Get, failing the test on an error or a wait past waitFor.
func (h *harness) get() *session.Token {
	h.t.Helper()
	r := recv(h.t, h.getAsync(context.Background()), "Get result")
	if r.err != nil {
		h.t.Fatalf("Get: %v", r.err)
	}
	if r.tok == nil {
		h.t.Fatal("Get returned neither a token nor an error")
	}
	return r.tok
}

// getUnavailable calls Get, wanting an *session.Unavailable.
func (h *harness) getUnavailable() *session.Unavailable {
	h.t.Helper()
	r := recv(h.t, h.getAsync(context.Background()), "Get result")
	if r.err == nil {
		h.t.Fatalf("Get returned a token expiring %v, want an error", r.tok.Expiry)
	}
	var u *session.Unavailable
	if !errors.As(r.err, &u) {
		h.t.Fatalf("Get error %T %v, want *session.Unavailable", r.err, r.err)
	}
	return u
}

// wantCounts checks the numbers of Login and Refresh calls.
func (h *harness) wantCounts(logins, refreshes int) {
	h.t.Helper()
	l, r := h.f.counts()
	if l != logins || r != refreshes {
		h.t.Fatalf("%d logins and %d refreshes, want %d and %d", l, r, logins, refreshes)
	}
}

// apicErr is an error of the token client of a kind.
func apicErr(kind apic.Kind, status int) *apic.Error {
	return &apic.Error{Kind: kind, URL: "https://apic.example.com/api/token", Grant: apic.GrantPassword, Status: status}
}

package session_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/session"
)

// The tests run in synctest bubbles: time is virtual, starts at t0, and
// moves only when every goroutine of the bubble is blocked, so a Manager's
// timers fire exactly when due and a test moves time with time.Sleep.

// TestMain fails the package when any goroutine outlives the tests: every
// Manager is closed, so none of its goroutines may remain.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// t0 is the time a synctest bubble starts at.
var t0 = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// fakeFetcher issues tokens of a fixed lifetime, counts calls, fails on
// demand and can hold calls until released.
type fakeFetcher struct {
	life time.Duration
	// refreshLife, when set, gives every token a refresh token of that
	// lifetime.
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

// call is one Login or Refresh call: which, and when it began.
type call struct {
	kind string // "login" or "refresh"
	at   time.Time
}

func newFakeFetcher(life time.Duration) *fakeFetcher {
	return &fakeFetcher{life: life, entered: make(chan call, 1000)}
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
	case f.entered <- call{kind, time.Now()}:
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
	now := time.Now()
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

// always fails every call with err.
func always(err error) func(int) error { return func(int) error { return err } }

// failure is one OnFailure call.
type failure struct {
	err     error
	retryAt time.Time
}

// harness is a Manager on a fake fetcher, with its hooks turned into
// channels. Make it inside a synctest bubble; the Manager is closed when
// the bubble's test ends.
type harness struct {
	t        *testing.T
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
	h := &harness{
		t: t, f: newFakeFetcher(life),
		tokens:   make(chan *session.Token, 1000),
		failures: make(chan failure, 1000),
		refused:  make(chan error, 1000),
	}
	o := session.Options{
		Fetcher:          h.f,
		OnToken:          func(tok *session.Token, _ time.Duration) { send(h.tokens, tok) },
		OnFailure:        func(err error, retryAt time.Time, _ time.Duration) { send(h.failures, failure{err, retryAt}) },
		OnRefreshRefused: func(err error) { send(h.refused, err) },
	}
	for _, f := range opts {
		f(&o)
	}
	h.m = session.New(o)
	t.Cleanup(func() { _ = h.m.Close() })
	return h
}

// send sends v unless ch is full: a hook must never block the Manager.
func send[T any](ch chan<- T, v T) {
	select {
	case ch <- v:
	default:
	}
}

// recv returns the value that ch holds once every goroutine of the bubble
// has settled, without time passing; it fails the test when there is none.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	synctest.Wait()
	select {
	case v := <-ch:
		return v
	default:
		t.Fatalf("no %s", what)
		panic("unreachable")
	}
}

// at moves the bubble's time forward to when, and lets every goroutine
// settle: the Manager's timers due by then have fired.
func at(t *testing.T, when time.Time) {
	t.Helper()
	d := time.Until(when)
	if d < 0 {
		t.Fatalf("cannot move time back by %v", -d)
	}
	time.Sleep(d)
	synctest.Wait()
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

// get calls Get, failing the test on an error or a wait.
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

// wantRequests checks the Status's token request counts.
func (h *harness) wantRequests(want session.Requests) {
	h.t.Helper()
	got := h.m.Status().Requests
	if fmt.Sprint(got) != fmt.Sprint(want) {
		h.t.Fatalf("Status().Requests = %v, want %v", got, want)
	}
}

// apicErr is an error of the token client of a kind.
func apicErr(kind apic.Kind, status int) *apic.Error {
	return &apic.Error{Kind: kind, URL: "https://apic.example.com/api/token", Grant: apic.GrantPassword, Status: status}
}

// handlerTransport sends requests to a handler in this process, so that a
// simulator serves a Manager inside a synctest bubble with no network.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	if err := r.Context().Err(); err != nil {
		return nil, err // as a real client does when the caller gave up
	}
	return rec.Result(), nil
}

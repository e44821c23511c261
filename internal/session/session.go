// Package session keeps one API Connect access token alive for many
// concurrent users: it fetches the token once when the first request needs
// it, refreshes it in the background before it expires, backs off when the
// token endpoint fails, and stops asking for a growing cool-down when the
// failure lasts (credentials refused, a certificate not trusted). Requests
// never wait while a valid token is held.
package session

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
)

// Fetcher obtains tokens; *apic.Client is one.
type Fetcher interface {
	Login(ctx context.Context) (*apic.Token, error)
	Refresh(ctx context.Context, refreshToken string) (*apic.Token, error)
}

// Defaults of Options.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultBackoffMin  = time.Second
	DefaultBackoffMax  = time.Minute
	DefaultCooldownMin = 30 * time.Second
	DefaultCooldownMax = 15 * time.Minute
	// SignOutTimeout bounds Options.SignOut.
	SignOutTimeout = 5 * time.Second
	// MaxLeeway is the most a token is retired before its expiry, so that
	// no request leaves with a token that expires on the way.
	MaxLeeway = 10 * time.Second
)

// Options configure a Manager. Zero fields take the defaults above.
type Options struct {
	// Fetcher requests the tokens.
	Fetcher Fetcher
	// Grant names the primary grant (password or api_key), for Token.Grant.
	Grant string
	// RefreshBefore is how long before expiry a new token is fetched in
	// the background. Default a quarter of the token's lifetime; it is
	// held between twice the leeway (min(MaxLeeway, lifetime/10)) and half
	// the lifetime.
	RefreshBefore time.Duration
	// Timeout bounds one token request.
	Timeout time.Duration
	// BackoffMin and BackoffMax bound the delay after a failure that may
	// heal (unreachable, timeout, 5xx, 429): it doubles from BackoffMin
	// with jitter, and a longer Retry-After wins.
	BackoffMin, BackoffMax time.Duration
	// CooldownMin and CooldownMax bound the pause after a lasting
	// failure (refused credentials, an untrusted certificate): it
	// doubles from CooldownMin.
	CooldownMin, CooldownMax time.Duration
	// OnToken is called after each token is obtained, before the callers
	// waiting for it go on: keep it fast.
	OnToken func(t *Token, took time.Duration)
	// OnFailure is called after each failed token request, with the time
	// before which no new attempt is made, before the callers waiting for
	// it go on: keep it fast.
	OnFailure func(err error, retryAt time.Time, took time.Duration)
	// OnRefreshRefused is called when the refresh token is refused and
	// the primary grant is tried instead.
	OnRefreshRefused func(err error)
	// SignOut, when set, is called by Close with the held token while it
	// is valid, to end the session upstream; it gets SignOutTimeout.
	SignOut func(ctx context.Context, t *Token) error

	// Shared, when set, is the record a fleet of proxies with this
	// identity shares (see shared.go): the token comes from it when
	// another proxy obtained it, and only the holder of its lock logs in
	// or spends the refresh token.
	Shared Shared
	// LockWait bounds how long a proxy waits for another's login before
	// logging in itself. Default DefaultLockWait. Only with Shared.
	LockWait time.Duration
	// Proxy names this proxy in the records it writes. Default
	// host/pid.
	Proxy string
	// OnShared is called at what happens to the shared record: a token
	// adopted or stored, a storage failure, a fallback to a login of
	// this proxy's own, a rejoin. Keep it fast.
	OnShared func(SharedEvent)
}

// Token is a token in use, with what is derived from it once.
type Token struct {
	*apic.Token
	// Header is the Authorization header value, "Bearer <token>".
	Header string
	// HeaderValues is []string{Header}, made once for http.Header maps.
	// It is shared: replace it, never write into it.
	HeaderValues []string
	// Grant is the grant type that obtained it.
	Grant string
	// Obtained is when it arrived.
	Obtained time.Time
	// RefreshAt is when a new token is fetched in the background.
	RefreshAt time.Time
	// ValidUntil is when it stops being handed out: a little before its
	// expiry.
	ValidUntil time.Time
	// Generation is the shared record's generation of the token: 0
	// without a shared session. A token of this proxy's own that the
	// fleet does not share (Local) keeps the generation it replaced.
	Generation uint64
	// Adopted is set when the token was taken from the shared record,
	// obtained by another proxy (or before a restart).
	Adopted bool
	// Local is set when the token is this proxy's alone, obtained while
	// the shared session could not be used.
	Local bool
	// WrittenBy and WrittenAt are who stored the token in the shared
	// record, and when.
	WrittenBy string
	WrittenAt time.Time
}

// Unavailable is the error Get returns when no token can be had now.
type Unavailable struct {
	// Err is the last token request's failure.
	Err error
	// RetryAt is the earliest time of the next token request.
	RetryAt time.Time
}

func (e *Unavailable) Error() string { return e.Err.Error() }
func (e *Unavailable) Unwrap() error { return e.Err }

// ErrClosed is returned by Get after Close.
var ErrClosed = errors.New("token session closed")

// Manager holds one token and its life cycle. Its methods are safe for
// concurrent use.
type Manager struct {
	opts Options

	cur    atomic.Pointer[Token]
	wake   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// refusedRefresh is the last refresh token the server refused. Only
	// the flight goroutine uses it; flights run one after another.
	refusedRefresh string

	// gen is the generation of the last token held (a shared session's).
	gen atomic.Uint64
	// sh is the shared session's state (shared.go); nil without one.
	sh *sharedState

	mu       sync.Mutex
	flight   *flight
	keep     int // Keep calls not yet released
	failures int // consecutive failures that may heal
	lasting  int // consecutive lasting failures
	lastErr  error
	retryAt  time.Time
	// What Status reports.
	requests     Requests
	waited       int
	lastObtained time.Time
	lastFailure  time.Time
}

// flight is one token request that any number of callers wait for.
type flight struct {
	force   bool // a refresh asked for: not the held token, nor its generation
	done    chan struct{}
	tok     *Token
	err     error
	retryAt time.Time
}

// New starts a Manager. It requests nothing until the first Get, then
// keeps the token fresh until Close.
func New(opts Options) *Manager {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = DefaultBackoffMin
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = DefaultBackoffMax
	}
	if opts.CooldownMin <= 0 {
		opts.CooldownMin = DefaultCooldownMin
	}
	if opts.CooldownMax <= 0 {
		opts.CooldownMax = DefaultCooldownMax
	}
	if opts.Grant == "" {
		opts.Grant = apic.GrantPassword
	}
	m := &Manager{opts: opts, wake: make(chan struct{}, 1), requests: make(Requests)}
	if opts.Shared != nil {
		m.sh = newSharedState(&m.opts)
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.wg.Add(1)
	go m.refresher()
	return m
}

// Get returns a valid token, waiting for a token request only when none is
// held. It fails at once, without a request, while a failure's back-off or
// cool-down lasts. ctx bounds only this caller's wait.
func (m *Manager) Get(ctx context.Context) (*Token, error) {
	if m.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if t := m.cur.Load(); t != nil {
		now := time.Now()
		if now.Before(t.RefreshAt) {
			return t, nil
		}
		if now.Before(t.ValidUntil) {
			m.poke()
			return t, nil
		}
	}
	return m.wait(ctx, false)
}

// Refresh fetches a new token now, whatever the held one's age and any
// back-off or cool-down, and waits for it.
func (m *Manager) Refresh(ctx context.Context) (*Token, error) {
	return m.wait(ctx, true)
}

// Invalidate retires t, a token the server refused before its expiry, so
// that the next Get fetches a new one. A newer token is left alone.
func (m *Manager) Invalidate(t *Token) {
	m.cur.CompareAndSwap(t, nil)
}

// Current returns the held token, valid or not, or nil.
func (m *Manager) Current() *Token { return m.cur.Load() }

func (m *Manager) wait(ctx context.Context, force bool) (*Token, error) {
	m.mu.Lock()
	if m.ctx.Err() != nil {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	now := time.Now()
	if t := m.cur.Load(); !force && t != nil && now.Before(t.ValidUntil) {
		m.mu.Unlock()
		return t, nil
	}
	if m.flight == nil {
		if !force && now.Before(m.retryAt) {
			err := &Unavailable{Err: m.lastErr, RetryAt: m.retryAt}
			m.mu.Unlock()
			return nil, err
		}
		m.startLocked(force)
	}
	if !force && !m.lastObtained.IsZero() {
		m.waited++
	}
	f := m.flight
	m.mu.Unlock()
	select {
	case <-f.done:
		if f.err != nil {
			if m.ctx.Err() != nil {
				return nil, ErrClosed // the request failed because of Close
			}
			return nil, &Unavailable{Err: f.err, RetryAt: f.retryAt}
		}
		return f.tok, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-m.ctx.Done():
		return nil, ErrClosed
	}
}

// poke makes the background refresher look at the session now rather than
// when its timer fires.
func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// startLocked starts a token request. Called with m.mu held.
func (m *Manager) startLocked(force bool) {
	f := &flight{force: force, done: make(chan struct{})}
	m.flight = f
	m.wg.Add(1)
	go m.run(f)
}

func (m *Manager) run(f *flight) {
	defer m.wg.Done()
	start := time.Now()
	var got obtained
	if m.sh != nil {
		got = m.obtainShared(f.force)
	} else {
		ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
		got.tok, got.grant, got.err = m.obtain(ctx, m.cur.Load(), start)
		cancel()
		got.obtained = time.Now()
	}
	err := got.err
	now := time.Now()
	took := now.Sub(start)

	m.mu.Lock()
	if err == nil {
		f.tok = m.install(&got, now)
		m.failures, m.lasting, m.lastErr, m.retryAt = 0, 0, nil, time.Time{}
		m.lastObtained = now
	} else {
		m.lastErr = err
		if got.refusedUntil.IsZero() {
			m.retryAt = m.nextAttempt(err, now)
		} else {
			// The fleet's cool-down, as the record has it.
			m.failures, m.lasting, m.retryAt = 0, got.refusals, got.refusedUntil
		}
		f.err, f.retryAt = err, m.retryAt
		m.lastFailure = now
	}
	m.flight = nil
	m.mu.Unlock()
	if m.sh != nil && err == nil {
		m.scheduleCheck()
	}

	// The hooks run before the waiters go on, so that what they log and
	// count is there by the time a client sees the outcome.
	if err == nil {
		if m.opts.OnToken != nil {
			m.opts.OnToken(f.tok, took)
		}
	} else if m.opts.OnFailure != nil {
		m.opts.OnFailure(err, f.retryAt, took)
	}
	close(f.done)
	m.poke()
}

// obtain requests a token: with the refresh token while one is held and
// unexpired, falling back to the primary grant when it is refused.
func (m *Manager) obtain(ctx context.Context, prev *Token, now time.Time) (*apic.Token, string, error) {
	if prev != nil && prev.RefreshToken != "" && prev.RefreshToken != m.refusedRefresh &&
		(prev.RefreshExpiry.IsZero() || now.Before(prev.RefreshExpiry)) {
		tok, err := m.opts.Fetcher.Refresh(ctx, prev.RefreshToken)
		m.count(apic.GrantRefreshToken, err)
		if err == nil {
			return tok, apic.GrantRefreshToken, nil
		}
		if !Refused(err) {
			return nil, apic.GrantRefreshToken, err
		}
		// Not again: each later attempt goes straight to the primary grant.
		m.refusedRefresh = prev.RefreshToken
		if m.opts.OnRefreshRefused != nil {
			m.opts.OnRefreshRefused(err)
		}
	}
	tok, err := m.opts.Fetcher.Login(ctx)
	m.count(m.opts.Grant, err)
	return tok, m.opts.Grant, err
}

// obtained is the outcome of a flight: a token and where it came from, or
// why none came.
type obtained struct {
	tok   *apic.Token
	grant string
	// obtained is when the token arrived from the server (for an adopted
	// token, at the proxy that requested it): its lifetime counts from
	// there.
	obtained time.Time
	// What the shared session says of it (Token's fields of the same
	// names).
	gen            uint64
	adopted, local bool
	writtenBy      string
	writtenAt      time.Time
	err            error
	refusedUntil   time.Time // the fleet's cool-down after a lasting failure
	refusals       int       // the lasting failures in a row, fleet-wide
}

// install makes got's token the held one and returns it. Called with m.mu
// held.
func (m *Manager) install(got *obtained, now time.Time) *Token {
	t := m.newToken(got.tok, got.grant, got.obtained, now)
	t.Generation, t.Adopted, t.Local, t.WrittenBy, t.WrittenAt = got.gen, got.adopted, got.local, got.writtenBy, got.writtenAt
	m.cur.Store(t)
	m.gen.Store(got.gen)
	return t
}

// newToken derives the schedule of a token that arrived at obtained and
// is taken into use at now. A shared session's proxies each put their
// refresh a little earlier, by chance, so that one of them renews the
// token for all.
func (m *Manager) newToken(tok *apic.Token, grant string, obtained, now time.Time) *Token {
	if obtained.IsZero() || obtained.After(now) {
		obtained = now
	}
	life := tok.Expiry.Sub(obtained)
	if life < 0 {
		life = 0
	}
	leeway := min(MaxLeeway, life/10)
	before := m.opts.RefreshBefore
	if before <= 0 {
		before = life / 4
	}
	before = max(min(before, life/2), 2*leeway)
	if m.sh != nil {
		before += time.Duration(rand.Float64() * float64(before/4))
		before = min(before, life/2)
	}
	header := "Bearer " + tok.AccessToken
	return &Token{
		Token:        tok,
		Header:       header,
		HeaderValues: []string{header},
		Grant:        grant,
		Obtained:     obtained,
		RefreshAt:    tok.Expiry.Add(-before),
		ValidUntil:   tok.Expiry.Add(-leeway),
	}
}

// nextAttempt sets the pause after a failure: the cool-down after a
// lasting one, the back-off after one that may heal. Called with m.mu
// held.
func (m *Manager) nextAttempt(err error, now time.Time) time.Time {
	if Lasting(err) {
		m.failures = 0
		m.lasting++
		return now.Add(doubled(m.opts.CooldownMin, m.opts.CooldownMax, m.lasting))
	}
	m.lasting = 0
	m.failures++
	d := doubled(m.opts.BackoffMin, m.opts.BackoffMax, m.failures)
	d = d/2 + time.Duration(rand.Float64()*float64(d/2))
	at := now.Add(d)
	if after := retryAfter(err); after.After(at) {
		at = after
		if limit := now.Add(m.opts.CooldownMax); at.After(limit) {
			at = limit
		}
	}
	return at
}

// Failure is what a Manager reads of a Fetcher's error; *apic.Error is
// one. An error that is not a Failure is taken as one that may heal.
type Failure interface {
	error
	// Refused reports that the server refused the credentials or the
	// request: a refused refresh token gives way to the primary grant.
	Refused() bool
	// Lasting reports a failure that lasts until the configuration or
	// the server changes (refused credentials, a certificate not
	// trusted): asking again soon would not help, so the cool-down
	// follows, not the back-off.
	Lasting() bool
	// RetryAfter is when the server asked to be called again: zero when
	// it did not say.
	RetryAfter() time.Time
	// Cause names the kind of failure, for counts and logs.
	Cause() string
}

// Refused reports whether err is a Failure that was refused.
func Refused(err error) bool {
	var f Failure
	return errors.As(err, &f) && f.Refused()
}

// Lasting reports whether err is a Failure that lasts.
func Lasting(err error) bool {
	var f Failure
	return errors.As(err, &f) && f.Lasting()
}

func retryAfter(err error) time.Time {
	var f Failure
	if errors.As(err, &f) {
		return f.RetryAfter()
	}
	return time.Time{}
}

// doubled is lo doubled n-1 times, at most hi.
func doubled(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// refresher renews a live token at its RefreshAt (or, after a failure, at
// the retry time) until Close. An expired token is not renewed in the
// background unless Keep asks for it: otherwise the next request asks for
// one, so an idle proxy with refused credentials stops calling the server.
func (m *Manager) refresher() {
	defer m.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var wait time.Duration = -1
		m.mu.Lock()
		if due, ok := m.dueLocked(); ok {
			if d := time.Until(due); d > 0 {
				wait = d
			} else {
				m.startLocked(false)
			}
		}
		check := m.checkDueLocked()
		m.mu.Unlock()
		if check >= 0 && (wait < 0 || check < wait) {
			wait = check
		}
		var timerC <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			timerC = timer.C
		}
		select {
		case <-m.ctx.Done():
			timer.Stop()
			return
		case <-m.wake:
		case <-timerC:
		}
		timer.Stop()
		m.checkShared()
	}
}

// dueLocked returns when the background should request a token, if it
// should: at the held token's RefreshAt, or at once when none is held (or
// it expired) and Keep asks for one; never before the retry time of a
// failure. Called with m.mu held.
func (m *Manager) dueLocked() (time.Time, bool) {
	if m.flight != nil || m.ctx.Err() != nil {
		return time.Time{}, false
	}
	var due time.Time
	switch t := m.cur.Load(); {
	case t != nil && time.Now().Before(t.Expiry):
		due = t.RefreshAt
	case m.keep == 0:
		// None held, or expired: leave it to the next request.
		return time.Time{}, false
	}
	if m.retryAt.After(due) {
		due = m.retryAt
	}
	return due, true
}

// Keep makes the session hold a token when no request asks for one, until
// release is called: it requests one now (after any back-off or
// cool-down), and renews an expired or refused token in the background as
// it renews a live one, at the pace of the back-off and cool-down. Calls
// nest; release is idempotent.
func (m *Manager) Keep() (release func()) {
	m.mu.Lock()
	m.keep++
	m.mu.Unlock()
	m.poke()
	return sync.OnceFunc(func() {
		m.mu.Lock()
		m.keep--
		m.mu.Unlock()
	})
}

// Close stops the refresher and any token request, and waits for them;
// then, when Options.SignOut is set and the held token is still valid, it
// signs the token out and returns what SignOut returned.
func (m *Manager) Close() error {
	// Cancel under m.mu: wait checks m.ctx under it before starting a
	// request, so no request starts (wg.Add) once Close is waiting.
	m.mu.Lock()
	m.cancel()
	m.mu.Unlock()
	m.wg.Wait()
	t := m.cur.Load()
	if m.opts.SignOut == nil || t == nil || !time.Now().Before(t.ValidUntil) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), SignOutTimeout)
	defer cancel()
	return m.opts.SignOut(ctx, t)
}

// State is what a session is doing, as Status reports it.
type State string

// States of a session.
const (
	StateNoToken     State = "no_token"     // nothing asked yet
	StateValid       State = "valid"        // a token is held and handed out
	StateRefreshing  State = "refreshing"   // a token request is under way
	StateExpired     State = "expired"      // the held token expired; the next request asks anew
	StateBackingOff  State = "backing_off"  // a failure that may heal: no request before RetryAt
	StateCoolingDown State = "cooling_down" // a lasting failure (credentials refused, certificate not trusted): no request before RetryAt
)

// Outcome of a successful token request in Status.Requests.
const OutcomeOK = "ok"

// Requests counts token requests by grant and outcome (OutcomeOK, or the
// failure's cause).
type Requests map[Request]uint64

// Request is a kind of token request: its grant and outcome.
type Request struct{ Grant, Outcome string }

// Status is a snapshot of a session for reports.
type Status struct {
	State State
	// Ready is whether Get hands out the held token now, without a token
	// request: a token is held and its ValidUntil has not passed. It
	// stays true while a background refresh is under way or backs off
	// (State refreshing or backing_off), since requests keep getting
	// the token; it is false after Close.
	Ready bool
	// Token is the held token, valid or not, or nil.
	Token *Token
	// LastError is the last failure since the last success, and Cause
	// its cause.
	LastError error
	Cause     string
	// RetryAt is the end of the current back-off or cool-down.
	RetryAt time.Time
	// LastObtained and LastFailure are when the last token came and the
	// last request failed.
	LastObtained, LastFailure time.Time
	// Requests counts the token requests made.
	Requests Requests
	// Waited counts Get calls that waited on a token request after the
	// first token: the held one had expired before a refresh replaced it
	// (or was invalidated after a 401). Refreshing in time keeps it at 0.
	Waited int
	// Shared is the shared session's status; nil without one.
	Shared *SharedStatus
}

// Status returns a snapshot of the session.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{
		Token: m.cur.Load(), LastError: m.lastErr, RetryAt: m.retryAt,
		LastObtained: m.lastObtained, LastFailure: m.lastFailure,
		Requests: make(Requests, len(m.requests)), Waited: m.waited,
	}
	for k, n := range m.requests {
		st.Requests[k] = n
	}
	if m.lastErr != nil {
		st.Cause = Cause(m.lastErr)
	}
	st.Shared = m.sharedStatus(st.Token)
	now := time.Now()
	st.Ready = st.Token != nil && now.Before(st.Token.ValidUntil) && m.ctx.Err() == nil
	switch {
	case m.flight != nil:
		st.State = StateRefreshing
	case m.lastErr != nil && now.Before(m.retryAt) && Lasting(m.lastErr):
		st.State = StateCoolingDown
	case m.lastErr != nil && now.Before(m.retryAt):
		st.State = StateBackingOff
	case st.Token != nil && now.Before(st.Token.ValidUntil):
		st.State = StateValid
	case st.Token != nil:
		st.State = StateExpired
	default:
		st.State = StateNoToken
	}
	return st
}

// Cause names why a token could not be had: the Failure's cause, "closing"
// after Close, "unknown" otherwise.
func Cause(err error) string {
	var f Failure
	switch {
	case errors.Is(err, ErrClosed):
		return "closing"
	case errors.As(err, &f):
		return f.Cause()
	}
	return "unknown"
}

// count records a token request's outcome.
func (m *Manager) count(grant string, err error) {
	outcome := OutcomeOK
	if err != nil {
		outcome = Cause(err)
	}
	m.mu.Lock()
	m.requests[Request{grant, outcome}]++
	m.mu.Unlock()
}

// String describes the schedule without the token.
func (t *Token) String() string {
	return fmt.Sprintf("token (%s grant) expiring %s, refresh at %s", t.Grant, t.Expiry.Format(time.RFC3339), t.RefreshAt.Format(time.RFC3339))
}

// Interface guards
var (
	_ Failure = (*apic.Error)(nil)
	_ Failure = (*SharedRefusal)(nil)
	_ error   = (*Unavailable)(nil)
)

package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/shared"
)

// Shared is the record a fleet of proxies shares, with its lock;
// *shared.Store is one. Each call is bounded by the store.
type Shared interface {
	// Load reads the record: nil without one; shared.ErrUnreadable when
	// it does not open, dead then telling that nothing in it is usable.
	Load(ctx context.Context) (rec *shared.Record, dead bool, err error)
	// Save stores the record.
	Save(ctx context.Context, rec *shared.Record) error
	// Lock takes the lock, waiting for it until ctx ends.
	Lock(ctx context.Context) (unlock func(), err error)
}

// DefaultLockWait is the default of Options.LockWait.
const DefaultLockWait = 20 * time.Second

// PollInterval is how often a proxy waiting for another's login reads the
// record, racing the lock: the first of the two to come ends the wait, so
// that no second login queues behind the first.
const PollInterval = 200 * time.Millisecond

// Check intervals: a held token's record is read every quarter of its
// refresh margin, within these bounds, to take up a token renewed
// elsewhere; every CheckFailing while storage fails or the token is this
// proxy's own, to rejoin.
const (
	CheckMin     = 250 * time.Millisecond
	CheckMax     = time.Minute
	CheckFailing = time.Second
)

// Kinds of SharedEvent.
const (
	SharedAdopted      = "adopted"       // a token another proxy obtained is in use
	SharedStored       = "stored"        // this proxy's token is the fleet's
	SharedRefused      = "refused"       // the fleet is cooling down after a refusal
	SharedFallback     = "fallback"      // a login of this proxy's own, outside the shared session
	SharedStorageError = "storage_error" // a storage call failed
	SharedUnreadable   = "unreadable"    // the record does not open with this proxy's credentials
	SharedRejoined     = "rejoined"      // storage answers again after failing
)

// SharedEvent is what OnShared reports.
type SharedEvent struct {
	Kind string
	// Generation is the record's generation it concerns, WrittenBy who
	// wrote it.
	Generation uint64
	WrittenBy  string
	// Err is the failure (storage, unreadable), or why a fallback
	// happened.
	Err error
}

// SharedStatus is what Status reports of a shared session.
type SharedStatus struct {
	// Generation, WrittenBy and WrittenAt are the held token's, from the
	// record.
	Generation uint64
	WrittenBy  string
	WrittenAt  time.Time
	// Local reports that the held token is this proxy's alone, obtained
	// while the shared session could not be used.
	Local bool
	// Holding reports that this proxy holds the lock now: it is logging
	// in or refreshing for the fleet.
	Holding bool
	// StorageOK reports that the last storage call succeeded; LastError
	// is the last one's failure since.
	StorageOK bool
	LastError error
	// Counts since the start.
	Adopted       uint64 // tokens taken from the record
	Stored        uint64 // tokens this proxy obtained and stored for the fleet
	LockWaits     uint64 // waits for another proxy's lock
	Fallbacks     uint64 // logins of this proxy's own outside the shared session
	StorageErrors uint64 // failed storage calls
	Unreadable    uint64 // records that did not open with this proxy's credentials
}

// sharedState is a Manager's shared-session state. The counts and
// lastErr are under mu; nextCheck is the refresher's.
type sharedState struct {
	opts *Options

	mu         sync.Mutex
	status     SharedStatus
	failing    bool // the last storage call failed
	unreadable bool // the last record read did not open
	nextCheck  time.Time
}

func newSharedState(opts *Options) *sharedState {
	if opts.LockWait <= 0 {
		opts.LockWait = DefaultLockWait
	}
	if opts.Proxy == "" {
		host, _ := os.Hostname()
		opts.Proxy = host + "/" + strconv.Itoa(os.Getpid())
	}
	return &sharedState{opts: opts, status: SharedStatus{StorageOK: true}}
}

func (s *sharedState) emit(ev SharedEvent) {
	if s.opts.OnShared != nil {
		s.opts.OnShared(ev)
	}
}

func (s *sharedState) setHolding(on bool) {
	s.mu.Lock()
	s.status.Holding = on
	s.mu.Unlock()
}

func (s *sharedState) count(field *uint64) {
	s.mu.Lock()
	*field++
	s.mu.Unlock()
}

// load reads the record, counting and reporting a failure. A storage that
// answers after failing is reported rejoined.
func (s *sharedState) load(ctx context.Context) (*shared.Record, bool, error) {
	rec, dead, err := s.opts.Shared.Load(ctx)
	s.storageOutcome(err)
	unreadable := errors.Is(err, shared.ErrUnreadable)
	s.mu.Lock()
	first := unreadable && !s.unreadable
	if err == nil || unreadable {
		s.unreadable = unreadable
	}
	if unreadable {
		s.status.Unreadable++
	}
	s.mu.Unlock()
	if first {
		// Once until a record opens again: not at every read.
		s.emit(SharedEvent{Kind: SharedUnreadable, Err: err})
	}
	if unreadable {
		if dead {
			// Nothing in it is usable: it is as good as none, and may
			// be replaced.
			return nil, false, nil
		}
	}
	return rec, dead, err
}

// storageOutcome notes how a storage call went.
func (s *sharedState) storageOutcome(err error) {
	storageErr := err != nil && !errors.Is(err, shared.ErrUnreadable)
	s.mu.Lock()
	was := s.failing
	s.failing = storageErr
	s.status.StorageOK = !storageErr
	if storageErr {
		s.status.StorageErrors++
		s.status.LastError = err
	} else {
		s.status.LastError = nil
	}
	s.mu.Unlock()
	// Each change once: a storage that stays down is not reported at
	// every call.
	switch {
	case storageErr && !was:
		s.emit(SharedEvent{Kind: SharedStorageError, Err: err})
	case !storageErr && was:
		s.emit(SharedEvent{Kind: SharedRejoined})
	}
}

func (s *sharedState) save(ctx context.Context, rec *shared.Record) error {
	err := s.opts.Shared.Save(ctx, rec)
	s.storageOutcome(err)
	return err
}

// usable reports whether rec holds a token newer than generation base that
// is valid at now.
func (m *Manager) usable(rec *shared.Record, base uint64, now time.Time) bool {
	if rec == nil || rec.Generation <= base || rec.AccessToken == "" {
		return false
	}
	t := m.newToken(recordToken(rec), rec.Grant, rec.Obtained, now)
	return now.Before(t.ValidUntil)
}

// refusedNow reports whether the fleet is cooling down after a refusal.
func refusedNow(rec *shared.Record, now time.Time) bool {
	return rec != nil && now.Before(rec.RefusedUntil)
}

func recordToken(rec *shared.Record) *apic.Token {
	t := &apic.Token{RefreshExpiry: rec.RefreshExpiry}
	t.AccessToken, t.RefreshToken, t.Expiry, t.TokenType = rec.AccessToken, rec.RefreshToken, rec.Expiry, "Bearer"
	return t
}

// adopt is the outcome of taking rec's token. It is adopted even when
// rec names this proxy: a process of the same host and pid before a
// restart, or another identity of this process, obtained it.
func (m *Manager) adopt(rec *shared.Record) obtained {
	m.sh.count(&m.sh.status.Adopted)
	m.sh.emit(SharedEvent{Kind: SharedAdopted, Generation: rec.Generation, WrittenBy: rec.WrittenBy})
	return obtained{
		tok: recordToken(rec), grant: rec.Grant, obtained: rec.Obtained,
		gen: rec.Generation, adopted: true, writtenBy: rec.WrittenBy, writtenAt: rec.WrittenAt,
	}
}

// SharedRefusal is the error of a proxy that does not ask for a token
// because the fleet's last attempt was refused: it lasts until Until.
type SharedRefusal struct {
	// Reason, Message and By are the refused attempt's cause, error and
	// proxy.
	Reason, Message, By string
	Until               time.Time
}

func (e *SharedRefusal) Error() string {
	return fmt.Sprintf("the fleet's last login was refused (%s, by %s): %s; no proxy of the fleet asks again before %s",
		e.Reason, e.By, e.Message, e.Until.Format(time.RFC3339))
}

// Failure's methods: a lasting refusal until Until.
func (e *SharedRefusal) Refused() bool         { return true }
func (e *SharedRefusal) Lasting() bool         { return true }
func (e *SharedRefusal) RetryAfter() time.Time { return e.Until }
func (e *SharedRefusal) Cause() string         { return e.Reason }

func (m *Manager) refusal(rec *shared.Record) obtained {
	m.sh.emit(SharedEvent{Kind: SharedRefused, Generation: rec.Generation, WrittenBy: rec.WrittenBy})
	return obtained{
		err:          &SharedRefusal{Reason: rec.RefusedCause, Message: rec.RefusedError, By: rec.WrittenBy, Until: rec.RefusedUntil},
		refusedUntil: rec.RefusedUntil, refusals: rec.Refusals,
	}
}

// obtainShared gets a token through the shared record: the record's when
// it is newer than the last one held (for a forced refresh, newer than the
// record's own at the start), else a login or refresh by this proxy
// alone, holding the lock, stored for the fleet. While the fleet cools
// down after a refusal nobody asks. When storage fails, the record does
// not open, or the lock does not come within LockWait, the proxy logs in
// on its own with its primary grant (the shared refresh token is spent
// only under the lock) and does not store the token.
func (m *Manager) obtainShared(force bool) obtained {
	base := m.gen.Load()
	rec, _, err := m.sh.load(m.ctx)
	if err != nil {
		return m.fallback(base, err)
	}
	if rec != nil && force {
		base = max(base, rec.Generation)
	}
	now := time.Now()
	if m.usable(rec, base, now) {
		return m.adopt(rec)
	}
	if !force && refusedNow(rec, now) {
		return m.refusal(rec)
	}

	lockCtx, cancel := context.WithTimeout(m.ctx, m.opts.LockWait)
	defer cancel()
	type locked struct {
		unlock func()
		err    error
	}
	got := make(chan locked, 1)
	go func() {
		u, err := m.opts.Shared.Lock(lockCtx)
		got <- locked{u, err}
	}()
	// giveUp ends the lock attempt, releasing a lock that came meanwhile.
	giveUp := func() {
		cancel()
		if l := <-got; l.err == nil {
			l.unlock()
		}
	}
	poll := time.NewTicker(PollInterval)
	defer poll.Stop()
	waited := false
	for {
		select {
		case l := <-got:
			if l.err != nil {
				if m.ctx.Err() != nil {
					return obtained{err: ErrClosed}
				}
				if lockCtx.Err() != nil {
					return m.fallback(base, fmt.Errorf("no other proxy's login came within lock_wait (%s)", m.opts.LockWait))
				}
				m.sh.storageOutcome(l.err)
				return m.fallback(base, l.err)
			}
			m.sh.setHolding(true)
			defer func() {
				l.unlock()
				m.sh.setHolding(false)
			}()
			return m.withLock(base, force)
		case <-poll.C:
			if !waited {
				waited = true
				m.sh.count(&m.sh.status.LockWaits)
			}
			rec, _, err := m.sh.load(m.ctx)
			if err != nil {
				giveUp()
				return m.fallback(base, err)
			}
			now := time.Now()
			if m.usable(rec, base, now) {
				giveUp()
				return m.adopt(rec)
			}
			if !force && refusedNow(rec, now) {
				giveUp()
				return m.refusal(rec)
			}
		case <-m.ctx.Done():
			giveUp()
			return obtained{err: ErrClosed}
		}
	}
}

// withLock is obtainShared's part under the lock: the record read again,
// then a refresh with its refresh token or a login, stored with the next
// generation; a refusal is stored as the fleet's cool-down.
func (m *Manager) withLock(base uint64, force bool) obtained {
	rec, _, err := m.sh.load(m.ctx)
	if err != nil {
		return m.fallback(base, err)
	}
	now := time.Now()
	if m.usable(rec, base, now) {
		return m.adopt(rec)
	}
	if !force && refusedNow(rec, now) {
		return m.refusal(rec)
	}
	// The refresh token is the record's, the latest any proxy got.
	var prev *Token
	if rec != nil && rec.RefreshToken != "" {
		prev = &Token{Token: recordToken(rec)}
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	tok, grant, err := m.obtain(ctx, prev, now)
	cancel()
	now = time.Now()
	next := &shared.Record{WrittenBy: m.opts.Proxy, WrittenAt: now}
	if rec != nil {
		*next = *rec
		next.WrittenBy, next.WrittenAt = m.opts.Proxy, now
	}
	if err != nil {
		if !Lasting(err) || m.ctx.Err() != nil {
			return obtained{err: err} // this proxy backs off; others may try
		}
		next.Refusals++
		next.RefusedUntil = now.Add(doubled(m.opts.CooldownMin, m.opts.CooldownMax, next.Refusals))
		next.RefusedCause, next.RefusedError = Cause(err), err.Error()
		if serr := m.sh.save(m.ctx, next); serr != nil {
			return obtained{err: err}
		}
		return obtained{err: err, refusedUntil: next.RefusedUntil, refusals: next.Refusals}
	}
	// A holder stalled past the lock's expiry finds the token another
	// proxy stored meanwhile: the newer generation wins.
	if again, _, lerr := m.sh.load(m.ctx); lerr == nil && again != nil && rec != nil && again.Generation > rec.Generation && m.usable(again, base, now) {
		return m.adopt(again)
	}
	gen := base
	if rec != nil {
		gen = max(gen, rec.Generation)
	}
	next.Generation = gen + 1
	next.AccessToken, next.RefreshToken, next.Expiry, next.RefreshExpiry = tok.AccessToken, tok.RefreshToken, tok.Expiry, tok.RefreshExpiry
	next.Grant, next.Obtained = grant, now
	next.RefusedUntil, next.RefusedCause, next.RefusedError, next.Refusals = time.Time{}, "", "", 0
	out := obtained{tok: tok, grant: grant, obtained: now, gen: next.Generation, writtenBy: m.opts.Proxy, writtenAt: now}
	if err := m.sh.save(m.ctx, next); err != nil {
		// Nobody else has it: it is this proxy's own.
		m.sh.count(&m.sh.status.Fallbacks)
		out.gen, out.local = base, true
		return out
	}
	m.sh.count(&m.sh.status.Stored)
	m.sh.emit(SharedEvent{Kind: SharedStored, Generation: next.Generation, WrittenBy: m.opts.Proxy})
	return out
}

// fallback logs in with the primary grant alone, for this proxy: the
// token keeps the generation base, so that any newer one in the record
// replaces it.
func (m *Manager) fallback(base uint64, why error) obtained {
	if errors.Is(why, ErrClosed) || m.ctx.Err() != nil {
		return obtained{err: ErrClosed}
	}
	m.sh.count(&m.sh.status.Fallbacks)
	m.sh.emit(SharedEvent{Kind: SharedFallback, Err: why})
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	tok, grant, err := m.obtain(ctx, nil, time.Now())
	cancel()
	return obtained{tok: tok, grant: grant, obtained: time.Now(), gen: base, local: true, err: err}
}

// checkDueLocked returns how long until the shared record is checked, or
// -1 when it is not. Called with m.mu held.
func (m *Manager) checkDueLocked() time.Duration {
	if m.sh == nil || m.flight != nil || m.cur.Load() == nil {
		return -1
	}
	m.sh.mu.Lock()
	next := m.sh.nextCheck
	m.sh.mu.Unlock()
	return max(time.Until(next), 0)
}

// checkShared reads the record when the check is due: a newer valid token
// in it replaces the held one, and a token of this proxy's own is stored
// for the fleet once storage answers and the record holds nothing newer.
// It runs on the refresher; a flight under way skips it.
func (m *Manager) checkShared() {
	if m.sh == nil {
		return
	}
	m.mu.Lock()
	held := m.cur.Load()
	due := m.flight == nil && held != nil && m.ctx.Err() == nil
	m.mu.Unlock()
	now := time.Now()
	m.sh.mu.Lock()
	if !due || now.Before(m.sh.nextCheck) {
		m.sh.mu.Unlock()
		return
	}
	m.sh.mu.Unlock()

	rec, _, err := m.sh.load(m.ctx)
	base := m.gen.Load()
	switch {
	case err != nil:
	case m.usable(rec, base, time.Now()):
		got := m.adopt(rec)
		m.mu.Lock()
		if m.flight == nil && m.cur.Load() == held {
			t := m.install(&got, time.Now())
			m.mu.Unlock()
			if m.opts.OnToken != nil {
				m.opts.OnToken(t, 0)
			}
			break
		}
		m.mu.Unlock()
	case held.Local && (rec == nil || rec.Generation <= base):
		m.publish(held, rec, base)
	}
	m.scheduleCheck()
}

// publish stores t, a token of this proxy's own, as the fleet's next
// generation, when the lock comes at once and the record still holds
// nothing newer.
func (m *Manager) publish(t *Token, rec *shared.Record, base uint64) {
	ctx, cancel := context.WithTimeout(m.ctx, CheckMin)
	defer cancel()
	unlock, err := m.opts.Shared.Lock(ctx)
	if err != nil {
		return // another proxy holds it, or storage fails: next check
	}
	defer unlock()
	if again, _, err := m.sh.load(m.ctx); err != nil || (again != nil && again.Generation > base) {
		return
	} else if again != nil {
		rec = again
	}
	now := time.Now()
	next := &shared.Record{Generation: base + 1}
	if rec != nil {
		next.Generation = max(base, rec.Generation) + 1
	}
	next.AccessToken, next.RefreshToken, next.Expiry, next.RefreshExpiry = t.AccessToken, t.RefreshToken, t.Expiry, t.RefreshExpiry
	next.Grant, next.Obtained, next.WrittenBy, next.WrittenAt = t.Grant, t.Obtained, m.opts.Proxy, now
	if err := m.sh.save(m.ctx, next); err != nil {
		return
	}
	m.mu.Lock()
	if m.cur.Load() == t {
		nt := *t
		nt.Generation, nt.Local, nt.WrittenBy, nt.WrittenAt = next.Generation, false, next.WrittenBy, next.WrittenAt
		m.cur.Store(&nt)
		m.gen.Store(next.Generation)
	}
	m.mu.Unlock()
	m.sh.count(&m.sh.status.Stored)
	m.sh.emit(SharedEvent{Kind: SharedStored, Generation: next.Generation, WrittenBy: m.opts.Proxy})
}

// scheduleCheck sets the next check: every quarter of the held token's
// refresh margin (between CheckMin and CheckMax), every CheckFailing while
// storage fails or the token is this proxy's own.
func (m *Manager) scheduleCheck() {
	every := CheckMax
	if t := m.cur.Load(); t != nil {
		every = min(max(t.Expiry.Sub(t.RefreshAt)/4, CheckMin), CheckMax)
		if t.Local {
			every = min(every, CheckFailing)
		}
	}
	m.sh.mu.Lock()
	if m.sh.failing {
		every = min(every, CheckFailing)
	}
	m.sh.nextCheck = time.Now().Add(every)
	m.sh.mu.Unlock()
}

// sharedStatus is Status's Shared. Called with m.mu held.
func (m *Manager) sharedStatus(t *Token) *SharedStatus {
	if m.sh == nil {
		return nil
	}
	m.sh.mu.Lock()
	st := m.sh.status
	m.sh.mu.Unlock()
	if t != nil {
		st.Generation, st.WrittenBy, st.WrittenAt, st.Local = t.Generation, t.WrittenBy, t.WrittenAt, t.Local
	}
	return &st
}

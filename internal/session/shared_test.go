package session_test

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/session"
	"github.com/apic-tools/apic-auth-proxy/internal/shared"
)

// memStorage is a certmagic.Storage in memory whose lock can be made to
// expire, as a crashed holder's does, and whose calls can be made to hang
// regardless of their context, as a stopped Redis server's do.
type memStorage struct {
	mu    sync.Mutex
	data  map[string][]byte
	locks map[string]chan struct{} // closed when released
	down  chan struct{}            // non-nil: every call waits for it to close
	calls int
}

func newMemStorage() *memStorage {
	return &memStorage{data: make(map[string][]byte), locks: make(map[string]chan struct{})}
}

// hang makes every call wait, ignoring its context, until resume.
func (s *memStorage) hang() {
	s.mu.Lock()
	s.down = make(chan struct{})
	s.mu.Unlock()
}

func (s *memStorage) resume() {
	s.mu.Lock()
	close(s.down)
	s.down = nil
	s.mu.Unlock()
}

// expireLocks drops every lock, as their time-to-live does when the
// holder stopped renewing them.
func (s *memStorage) expireLocks() {
	s.mu.Lock()
	for k, ch := range s.locks {
		close(ch)
		delete(s.locks, k)
	}
	s.mu.Unlock()
}

func (s *memStorage) enter() {
	s.mu.Lock()
	s.calls++
	down := s.down
	s.mu.Unlock()
	if down != nil {
		<-down
	}
}

func (s *memStorage) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *memStorage) Store(_ context.Context, key string, value []byte) error {
	s.enter()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[key] = append([]byte(nil), value...)
	return nil
}

func (s *memStorage) Load(_ context.Context, key string) ([]byte, error) {
	s.enter()
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return append([]byte(nil), v...), nil
}

func (s *memStorage) Delete(_ context.Context, key string) error {
	s.enter()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.data, key)
	return nil
}

func (s *memStorage) Exists(_ context.Context, key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.data[key]
	return ok
}

func (s *memStorage) List(context.Context, string, bool) ([]string, error) { return nil, nil }

func (s *memStorage) Stat(context.Context, string) (certmagic.KeyInfo, error) {
	return certmagic.KeyInfo{}, nil
}

func (s *memStorage) Lock(ctx context.Context, name string) error {
	s.enter()
	for {
		s.mu.Lock()
		held, ok := s.locks[name]
		if !ok {
			s.locks[name] = make(chan struct{})
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *memStorage) Unlock(_ context.Context, name string) error {
	s.enter()
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch, ok := s.locks[name]; ok {
		close(ch)
		delete(s.locks, name)
	}
	return nil
}

func (s *memStorage) locked() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.locks) > 0
}

// The fleet's identity and secrets in these tests.
var (
	fleetIdentity = shared.Identity{Server: "https://apic.example.com", Realm: "provider/default-idp-2", User: "dev", ClientID: "cli"}
	fleetSecrets  = shared.Secrets{Credential: "Kq7-vorpal-ZZ", ClientSecret: "cs-8Lwqx"}
)

// fleet is proxies sharing one storage and one upstream (the fetcher).
type fleet struct {
	t       *testing.T
	storage *memStorage
	f       *fakeFetcher
	members []*member
	// stores are the Stores by secrets: a Store holds no state of its
	// proxy but its operation counts, and its key takes argon2id's time
	// to derive, so the members with the same secrets share one.
	stores map[shared.Secrets]*shared.Store
}

// member is one proxy of a fleet.
type member struct {
	*harness
	store  *shared.Store
	events chan session.SharedEvent
}

func newFleet(t *testing.T, life time.Duration) *fleet {
	return &fleet{t: t, storage: newMemStorage(), f: newFakeFetcher(life), stores: make(map[shared.Secrets]*shared.Store)}
}

// add starts a proxy of the fleet with the fleet's secrets (or sec).
func (fl *fleet) add(opts ...func(*session.Options)) *member {
	return fl.addWith(fleetSecrets, opts...)
}

func (fl *fleet) addWith(sec shared.Secrets, opts ...func(*session.Options)) *member {
	fl.t.Helper()
	store := fl.stores[sec]
	if store == nil {
		var err error
		if store, err = shared.New(shared.Options{Storage: fl.storage, Identity: fleetIdentity, Secrets: sec, Timeout: 2 * time.Second}); err != nil {
			fl.t.Fatal(err)
		}
		fl.stores[sec] = store
	}
	m := &member{store: store, events: make(chan session.SharedEvent, 1000)}
	n := len(fl.members)
	all := append([]func(*session.Options){func(o *session.Options) {
		o.Fetcher = fl.f
		o.Shared = store
		o.Proxy = fmt.Sprintf("proxy-%d", n)
		o.OnShared = func(ev session.SharedEvent) { send(m.events, ev) }
	}}, opts...)
	m.harness = newHarness(fl.t, 0, all...)
	fl.members = append(fl.members, m)
	return m
}

// getAll calls Get on every member at once and returns the tokens,
// letting time pass by wait (if any) for them.
func (fl *fleet) getAll(wait ...time.Duration) []*session.Token {
	fl.t.Helper()
	chs := make([]<-chan getResult, len(fl.members))
	for i, m := range fl.members {
		chs[i] = m.getAsync(context.Background())
	}
	synctest.Wait()
	for _, d := range wait {
		at(fl.t, time.Now().Add(d))
	}
	toks := make([]*session.Token, len(chs))
	for i, ch := range chs {
		r := recv(fl.t, ch, "Get result")
		if r.err != nil {
			fl.t.Fatalf("proxy-%d: Get: %v", i, r.err)
		}
		toks[i] = r.tok
	}
	return toks
}

// sameToken fails unless every token is the same access token of
// generation gen.
func sameToken(t *testing.T, toks []*session.Token, gen uint64) {
	t.Helper()
	for i, tok := range toks {
		if tok.AccessToken != toks[0].AccessToken || tok.Generation != gen || tok.Local {
			t.Fatalf("proxy-%d holds %s generation %d (local %v), want %s generation %d", i, tok.AccessToken, tok.Generation, tok.Local, toks[0].AccessToken, gen)
		}
	}
}

func TestSharedColdStartMakesOneLogin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := newFleet(t, time.Hour)
		for range 5 {
			fl.add()
		}
		toks := fl.getAll()
		sameToken(t, toks, 1)
		if l, r := fl.f.counts(); l != 1 || r != 0 {
			t.Fatalf("%d logins, %d refreshes for 5 cold proxies, want 1 and 0", l, r)
		}
		adopted := 0
		for _, tok := range toks {
			if tok.Adopted {
				adopted++
			}
		}
		if adopted != 4 {
			t.Fatalf("%d proxies adopted the token, want 4", adopted)
		}
		// A proxy started later takes it without a token request.
		late := fl.add()
		if tok := late.get(); tok.AccessToken != toks[0].AccessToken || !tok.Adopted {
			t.Fatalf("a late proxy got %s (adopted %v), want the fleet's", tok.AccessToken, tok.Adopted)
		}
		if l, _ := fl.f.counts(); l != 1 {
			t.Fatalf("%d logins after a warm start, want 1", l)
		}
		st := late.m.Status().Shared
		if st == nil || st.Generation != 1 || st.WrittenBy == "" || st.Adopted != 1 || st.Stored != 0 {
			t.Fatalf("late proxy's shared status %+v", st)
		}
	})
}

func TestSharedRevokedTokenMakesOneReloginFleetWide(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := newFleet(t, time.Hour)
		for range 5 {
			fl.add()
		}
		toks := fl.getAll()
		// Every proxy sees a 401 with its token at about the same time.
		for i, m := range fl.members {
			m.m.Invalidate(toks[i])
		}
		sameToken(t, fl.getAll(), 2)
		if l, _ := fl.f.counts(); l != 2 {
			t.Fatalf("%d logins, want 2 (the first and one re-login for all)", l)
		}
		// A 401 to a token older than the fleet's takes the fleet's.
		fl.members[0].m.Invalidate(fl.members[0].m.Current())
		if tok := fl.members[0].get(); tok.Generation != 3 {
			t.Fatalf("generation %d after another 401, want 3", tok.Generation)
		}
		if l, _ := fl.f.counts(); l != 3 {
			t.Fatalf("%d logins, want 3", l)
		}
	})
}

func TestSharedRefreshTokenSpentOncePerCycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := newFleet(t, 2*time.Second)
		fl.f.refreshLife = time.Hour
		for range 5 {
			m := fl.add()
			t.Cleanup(m.m.Keep())
		}
		sameToken(t, fl.getAll(), 1)
		for cycle := 1; cycle <= 3; cycle++ {
			// Every proxy's refresh time has come, at least half a
			// second before the expiry, and its leeway (a tenth of the
			// lifetime) has not.
			at(t, fl.members[0].m.Current().Expiry.Add(-250*time.Millisecond))
			if _, r := fl.f.counts(); r != cycle {
				t.Fatalf("cycle %d: %d refreshes, want %d", cycle, r, cycle)
			}
			for i, m := range fl.members {
				if g := m.m.Current().Generation; g != uint64(cycle+1) {
					t.Fatalf("cycle %d: proxy-%d holds generation %d, want %d", cycle, i, g, cycle+1)
				}
			}
		}
		// Each refresh spent the latest refresh token, never one twice.
		seen := map[string]bool{}
		fl.f.mu.Lock()
		args := append([]string(nil), fl.f.refreshArgs...)
		fl.f.mu.Unlock()
		for _, a := range args {
			if seen[a] {
				t.Fatalf("refresh token %s spent twice: %v", a, args)
			}
			seen[a] = true
		}
		if l, _ := fl.f.counts(); l != 1 {
			t.Fatalf("%d logins, want 1", l)
		}
	})
}

func TestSharedRefusalIsOneAttemptPerCooldown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := newFleet(t, time.Hour)
		fl.f.setLoginErr(always(apicErr(apic.KindRefused, 401)))
		for range 5 {
			m := fl.add()
			t.Cleanup(m.m.Keep())
		}
		synctest.Wait()
		if l, _ := fl.f.counts(); l != 1 {
			t.Fatalf("%d login attempts by 5 proxies, want 1", l)
		}
		var until time.Time
		for i, m := range fl.members {
			st := m.m.Status()
			if want := session.Cause(apicErr(apic.KindRefused, 401)); st.State != session.StateCoolingDown || st.Cause != want {
				t.Fatalf("proxy-%d: state %s cause %s, want cooling_down %s", i, st.State, st.Cause, want)
			}
			if until.IsZero() {
				until = st.RetryAt
			}
			if !st.RetryAt.Equal(until) {
				t.Fatalf("proxy-%d retries at %v, another at %v: want the fleet's one time", i, st.RetryAt, until)
			}
		}
		if d := until.Sub(t0); d != session.DefaultCooldownMin {
			t.Fatalf("cool-down %v, want %v", d, session.DefaultCooldownMin)
		}
		at(t, until)
		if l, _ := fl.f.counts(); l != 2 {
			t.Fatalf("%d attempts after one cool-down, want 2", l)
		}
		// The second refusal doubles the cool-down for all.
		next := fl.members[3].m.Status().RetryAt
		if d := next.Sub(until); d != 2*session.DefaultCooldownMin {
			t.Fatalf("second cool-down %v, want %v", d, 2*session.DefaultCooldownMin)
		}
	})
}

func TestSharedStorageDownFallsBackAndRejoins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := newFleet(t, time.Hour)
		for range 4 {
			m := fl.add()
			t.Cleanup(m.m.Keep())
		}
		toks := fl.getAll()
		fl.storage.hang()
		for i, m := range fl.members {
			m.m.Invalidate(toks[i])
		}
		start := time.Now()
		for i, tok := range fl.getAll(2 * time.Second) {
			if !tok.Local {
				t.Fatalf("proxy-%d's token while storage hangs is not its own", i)
			}
		}
		// Each waited one storage timeout, not more, then logged in once.
		if d := time.Since(start); d != 2*time.Second {
			t.Fatalf("a token came %v after the 401 while storage hangs, want the storage timeout, 2s", d)
		}
		if l, _ := fl.f.counts(); l != 1+4 {
			t.Fatalf("%d logins, want 5 (the first and one of each proxy's own)", l)
		}
		for i, m := range fl.members {
			st := m.m.Status().Shared
			if st.StorageOK || st.Fallbacks != 1 || st.StorageErrors == 0 {
				t.Fatalf("proxy-%d's shared status while storage hangs: %+v", i, st)
			}
		}
		fl.storage.resume()
		synctest.Wait()
		at(t, time.Now().Add(3*session.CheckFailing))
		toks = fl.getAll()
		sameToken(t, toks, 2)
		for i, m := range fl.members {
			if st := m.m.Status().Shared; !st.StorageOK {
				t.Fatalf("proxy-%d has not rejoined: %+v", i, st)
			}
		}
		if l, _ := fl.f.counts(); l != 5 {
			t.Fatalf("%d logins after rejoining, want still 5", l)
		}
	})
}

func TestSharedStalledHolderMakesAtMostTwoLogins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := newFleet(t, time.Hour)
		gate := make(chan struct{})
		fl.f.setGate(gate)
		a := fl.add()
		first := a.getAsync(context.Background())
		synctest.Wait()
		if !fl.storage.locked() {
			t.Fatal("the first proxy's login does not hold the lock")
		}
		b := fl.add()
		second := b.getAsync(context.Background())
		synctest.Wait()
		if l, _ := fl.f.counts(); l != 1 {
			t.Fatalf("%d logins while the holder's login hangs, want 1", l)
		}
		// The holder stalls past the lock's time-to-live: b takes the
		// lock and logs in.
		fl.storage.expireLocks()
		synctest.Wait()
		if l, _ := fl.f.counts(); l != 2 {
			t.Fatalf("%d logins once the lock expired, want 2", l)
		}
		close(gate)
		ra, rb := recv(t, first, "first Get"), recv(t, second, "second Get")
		if ra.err != nil || rb.err != nil {
			t.Fatalf("Get: %v, %v", ra.err, rb.err)
		}
		// Both stored generation 1 or one adopted the other's: either
		// way they end on the same generation, and no third login.
		c := fl.add()
		tc := c.get()
		if l, _ := fl.f.counts(); l != 2 {
			t.Fatalf("%d logins, want at most 2", l)
		}
		if tc.Generation != 1 {
			t.Fatalf("a third proxy took generation %d, want 1", tc.Generation)
		}
	})
}

func TestSharedRecordOfOtherCredentialsIsIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := newFleet(t, time.Hour)
		good := fl.add()
		tok := good.get()
		other := fl.addWith(shared.Secrets{Credential: "Xx-other-77", ClientSecret: fleetSecrets.ClientSecret})
		for range 3 {
			if got := other.get(); got.AccessToken == tok.AccessToken || !got.Local {
				t.Fatalf("a proxy with other credentials got %s (local %v)", got.AccessToken, got.Local)
			}
			other.m.Invalidate(other.m.Current())
		}
		unreadable := 0
		for len(other.events) > 0 {
			if ev := <-other.events; ev.Kind == session.SharedUnreadable {
				unreadable++
			}
		}
		if unreadable != 1 {
			t.Fatalf("%d unreadable events for 3 reads, want 1", unreadable)
		}
		if st := other.m.Status().Shared; st.Unreadable < 3 || !st.StorageOK {
			t.Fatalf("other proxy's shared status %+v", st)
		}
		// The record is untouched: the good proxy's next one reads it.
		late := fl.add()
		if got := late.get(); got.AccessToken != tok.AccessToken {
			t.Fatalf("the record was overwritten by the proxy with other credentials")
		}
	})
}

func TestSharedForcedRefreshIsFleetWide(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := newFleet(t, time.Hour)
		for range 3 {
			m := fl.add()
			t.Cleanup(m.m.Keep())
		}
		sameToken(t, fl.getAll(), 1)
		r := recv(t, func() <-chan getResult {
			ch := make(chan getResult, 1)
			go func() { tok, err := fl.members[2].m.Refresh(context.Background()); ch <- getResult{tok, err} }()
			return ch
		}(), "Refresh")
		if r.err != nil || r.tok.Generation != 2 {
			t.Fatalf("Refresh: generation %v, %v; want 2", r.tok, r.err)
		}
		// The others take it at their next check, within a quarter of
		// the refresh margin.
		at(t, time.Now().Add(session.CheckMax))
		sameToken(t, fl.getAll(), 2)
		if l, _ := fl.f.counts(); l != 2 {
			t.Fatalf("%d logins, want 2", l)
		}
	})
}

func TestSharedHotPathNeverTouchesStorage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := newFleet(t, time.Hour)
		m := fl.add()
		m.get()
		before := fl.storage.count()
		for range 10000 {
			if _, err := m.m.Get(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if n := fl.storage.count() - before; n != 0 {
			t.Fatalf("10000 Gets made %d storage calls, want 0", n)
		}
	})
}

func TestSharedLockWaitEndsInOwnLogin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := newFleet(t, time.Hour)
		// Another process holds the lock and never stores.
		if err := fl.storage.Lock(context.Background(), "apic_auth_session_"+fleetIdentity.Hash()); err != nil {
			t.Fatal(err)
		}
		m := fl.add(func(o *session.Options) { o.LockWait = 5 * time.Second })
		start := time.Now()
		ch := m.getAsync(context.Background())
		at(t, start.Add(5*time.Second))
		r := recv(t, ch, "Get result")
		if r.err != nil {
			t.Fatal(r.err)
		}
		tok := r.tok
		if d := time.Since(start); d != 5*time.Second || !tok.Local {
			t.Fatalf("token after %v (local %v), want a login of its own after lock_wait 5s", d, tok.Local)
		}
		var why error
		for len(m.events) > 0 {
			if ev := <-m.events; ev.Kind == session.SharedFallback {
				why = ev.Err
			}
		}
		if why == nil || !strings.Contains(why.Error(), "lock_wait") {
			t.Fatalf("fallback event: %v, want one naming lock_wait", why)
		}
	})
}

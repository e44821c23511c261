package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/redistest"
)

// sharedStatus is an identity's shared_session in GET /apic_auth/status.
type sharedStatus struct {
	Generation    uint64            `json:"generation"`
	WrittenBy     string            `json:"written_by"`
	Local         bool              `json:"local"`
	LockHeld      bool              `json:"lock_held"`
	Storage       string            `json:"storage"`
	LastError     string            `json:"last_error"`
	Adopted       int               `json:"adopted"`
	Stored        int               `json:"stored"`
	LockWaits     int               `json:"lock_waits"`
	Fallbacks     int               `json:"fallbacks"`
	StorageErrors int               `json:"storage_errors"`
	Unreadable    int               `json:"unreadable"`
	StorageOps    map[string]uint64 `json:"storage_ops"`
}

// fleetStorage is the storage a fleet shares its session in.
type fleetStorage struct {
	name string
	// size is how many proxy processes share it: 20 on Redis, as a
	// Deployment's replicas; 10 on file_system, as the CI jobs of one
	// runner.
	size  int
	block string // shared_session's storage block
	redis *redistest.Server
	// lockLasts is how long a crashed holder's lock lasts, plus one poll
	// of a waiter: Redis 5 s + 1 s, file_system 10 s + 1 s.
	lockLasts time.Duration
}

func redisStorage(t *testing.T) *fleetStorage {
	r := redistest.Start(t)
	return &fleetStorage{name: "redis", size: 20, redis: r, lockLasts: 6 * time.Second,
		block: "storage redis {\n\t\t\t\taddress " + r.Addr + "\n\t\t\t}"}
}

func fileStorage(t *testing.T) *fleetStorage {
	return &fleetStorage{name: "file_system", size: 10, lockLasts: 11 * time.Second,
		block: "storage file_system {\n\t\t\t\troot " + t.TempDir() + "\n\t\t\t}"}
}

// storages runs f for each kind of storage, as parallel subtests.
func storages(t *testing.T, f func(t *testing.T, st *fleetStorage)) {
	for _, kind := range []struct {
		name string
		new  func(*testing.T) *fleetStorage
	}{{"redis", redisStorage}, {"file_system", fileStorage}} {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			f(t, kind.new(t))
		})
	}
}

// fleet is proxy processes for one identity in front of one simulator,
// sharing their session in one storage. The first member owns the
// simulator.
type fleet struct {
	t       *testing.T
	st      *fleetStorage
	opts    []option
	members []*env
}

// sharedSession is the shared_session block of a fleet's apic_auth.
func (st *fleetStorage) sharedSession() option {
	return withAuth("shared_session {\n\t\t\t" + st.block + "\n\t\t}")
}

// newFleet starts n proxies at once, each logging in at start through the
// shared session, and returns once every one runs its config.
func newFleet(t *testing.T, st *fleetStorage, n int, opts ...option) *fleet {
	t.Helper()
	fl := &fleet{t: t, st: st, opts: append([]option{st.sharedSession(), withLoginAtStart(), withoutRace()}, opts...)}
	fl.grow(n)
	return fl
}

// grow starts n more members at once and returns them once they run.
func (fl *fleet) grow(n int) []*env {
	fl.t.Helper()
	var started []*env
	for range n {
		opts := append([]option{withoutStart()}, fl.opts...)
		if len(fl.members) > 0 {
			opts = append(opts, withSimOf(fl.members[0]))
		}
		e := newEnv(fl.t, opts...)
		e.launch(e.text)
		fl.members = append(fl.members, e)
		started = append(started, e)
	}
	for _, e := range started {
		e.awaitStart()
	}
	// Registered after the members' own stop, so run before it: every
	// member but the first (which stops with the goroutine check) ends
	// at once.
	fl.t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, e := range started {
			if e != fl.members[0] {
				wg.Go(func() { e.end(false) })
			}
		}
		wg.Wait()
	})
	return started
}

// live returns the members still running.
func (fl *fleet) live() []*env {
	var out []*env
	for _, e := range fl.members {
		if !e.stopped {
			out = append(out, e)
		}
	}
	return out
}

// owner is the member whose simulator the fleet uses.
func (fl *fleet) owner() *env { return fl.members[0] }

// shared returns a member's shared session status.
func shared(e *env) sharedStatus {
	e.t.Helper()
	code, body := e.adminDo(http.MethodGet, "/apic_auth/status")
	var st []struct {
		State  string        `json:"state"`
		Shared *sharedStatus `json:"shared_session"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != http.StatusOK || len(st) != 1 || st[0].Shared == nil {
		e.t.Fatalf("GET /apic_auth/status: %d %s (%v)", code, body, err)
	}
	return *st[0].Shared
}

// awaitAll waits until every live member's status satisfies ok. The
// members read their storage on their own schedule, which leaves no mark
// outside them (no answer of the simulator, often no log line), so the
// statuses are read again at each answer of the simulator and at least
// every 100 ms; it fails the test after awaitBound with the last
// statuses.
func (fl *fleet) awaitAll(what string, ok func(identityStatus, sharedStatus) bool) {
	fl.t.Helper()
	deadline := time.NewTimer(awaitBound)
	defer deadline.Stop()
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for {
		answered := fl.owner().up.next()
		var bad []string
		for i, e := range fl.live() {
			id, sh := e.identity(), shared(e)
			if !ok(id, sh) {
				bad = append(bad, fmt.Sprintf("proxy %d: state %s cause %s generation %d local %v storage %s", i, id.State, id.Cause, sh.Generation, sh.Local, sh.Storage))
			}
		}
		if len(bad) == 0 {
			return
		}
		select {
		case <-answered:
		case <-poll.C:
		case <-deadline.C:
			fl.t.Fatalf("%s: not within %s:\n%s", what, awaitBound, strings.Join(bad, "\n"))
		}
	}
}

// serveAll sends one GET /api/me through every live member at once and
// returns the statuses.
func (fl *fleet) serveAll() []int {
	fl.t.Helper()
	live := fl.live()
	codes := make([]int, len(live))
	var wg sync.WaitGroup
	for i, e := range live {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, "http://localhost/api/me", nil)
			code, _, _, err := e.send(req)
			if err != nil {
				code = -1
			}
			codes[i] = code
		})
	}
	wg.Wait()
	return codes
}

// mustServeAll fails the test unless every live member answers 200.
func (fl *fleet) mustServeAll(step string) {
	fl.t.Helper()
	for i, c := range fl.serveAll() {
		if c != http.StatusOK {
			fl.t.Fatalf("%s: proxy %d answered %d, want 200", step, i, c)
		}
	}
}

// tokenRequests counts the token requests that reached the simulator,
// answered or not.
func (fl *fleet) tokenRequests() int { return len(fl.owner().tokenArrivals()) }

// sameGeneration reports whether every live member holds the record's
// token of one generation, not one of its own.
func (fl *fleet) sameGeneration() (uint64, bool) {
	var gen uint64
	for _, e := range fl.live() {
		sh := shared(e)
		if sh.Local || sh.Storage != "ok" || (gen != 0 && sh.Generation != gen) || sh.Generation == 0 {
			return 0, false
		}
		gen = sh.Generation
	}
	return gen, true
}

func valid(id identityStatus, sh sharedStatus) bool { return id.State == "valid" && !sh.Local }

func TestFleetColdWarmAndRevoked(t *testing.T) {
	t.Parallel()
	storages(t, func(t *testing.T, st *fleetStorage) {
		fl := newFleet(t, st, st.size)
		fl.awaitAll("every proxy holds the fleet's token", valid)
		if n := fl.owner().sim.TokenRequests("password", "ok"); n != 1 {
			t.Fatalf("a cold start of %d proxies made %d token requests, want 1", st.size, n)
		}
		gen, ok := fl.sameGeneration()
		if !ok || gen != 1 {
			t.Fatalf("the proxies do not share generation 1")
		}
		fl.mustServeAll("cold")

		// Storage operations do not grow with the requests.
		ops := func() uint64 {
			var n uint64
			for _, e := range fl.live() {
				for _, v := range shared(e).StorageOps {
					n += v
				}
			}
			return n
		}
		before := ops()
		for range 100 {
			fl.mustServeAll("load") // 2,000 requests
		}
		// At most a periodic check or two of each proxy (every minute
		// for 8-hour tokens); go run ./bench -phases F measures it per
		// 10,000 requests.
		if grew := ops() - before; grew > uint64(2*st.size) {
			t.Fatalf("2,000 proxied requests made %d storage operations", grew)
		}

		// API Manager revokes every token while all serve: one re-login
		// for the fleet, and no client sees a 401.
		fl.owner().sim.RevokeAll()
		fl.mustServeAll("after RevokeAll")
		if n := fl.owner().sim.TokenRequests("password", "ok"); n != 2 {
			t.Fatalf("RevokeAll made %d re-logins across %d proxies, want 1", n-1, st.size)
		}
		fl.awaitAll("every proxy holds generation 2", func(id identityStatus, sh sharedStatus) bool {
			return valid(id, sh) && sh.Generation >= 2
		})

		// Warm start: every proxy replaced, no token request.
		for _, e := range fl.live() {
			e.stop()
		}
		fl.grow(st.size)
		fl.awaitAll("every new proxy holds the fleet's token", valid)
		fl.mustServeAll("warm")
		if n := fl.owner().sim.TokenRequests("password", "ok"); n != 2 {
			t.Fatalf("a warm start made %d token requests, want 0", n-2)
		}
	})
}

func TestFleetLockHolderKilledDuringLogin(t *testing.T) {
	t.Parallel()
	storages(t, func(t *testing.T, st *fleetStorage) {
		// The first login hangs until the test ends.
		hang := make(chan struct{})
		// The hanging login's own timeout must outlast the fleet's start.
		fl := &fleet{t: t, st: st, opts: []option{st.sharedSession(), withLoginAtStart(), withoutRace(), withAuth("timeout 5m")}}
		first := newEnv(t, append([]option{withoutStart()}, fl.opts...)...)
		// Before the simulator's server closes, which waits for it.
		t.Cleanup(func() { close(hang) })
		first.beforeToken(func(n int, r *http.Request) {
			if n == 1 {
				select {
				case <-hang:
				case <-r.Context().Done():
				}
			}
		})
		first.launch(first.text)
		fl.members = []*env{first}
		first.awaitStart()
		fl.grow(st.size - 1)
		// The holder is the one proxy holding the lock, its login
		// hanging.
		var holder *env
		fl.awaitAll("one proxy holds the lock", func(identityStatus, sharedStatus) bool {
			holder = nil
			n := 0
			for _, e := range fl.live() {
				if shared(e).LockHeld {
					holder = e
					n++
				}
			}
			return n == 1 && fl.tokenRequests() == 1
		})
		killed := time.Now()
		holder.kill()
		fl.awaitAll("the others hold a token", valid)
		took := time.Since(killed)
		if n := fl.tokenRequests(); n != 2 {
			t.Fatalf("%d token requests with the holder killed during the first, want 2", n)
		}
		if took > st.lockLasts+5*time.Second {
			t.Fatalf("the next login came %v after the holder died; its lock lasts %v", took, st.lockLasts)
		}
		t.Logf("%s: a token %v after the lock holder was killed", st.name, took.Round(time.Millisecond))
		fl.mustServeAll("after the holder died")
	})
}

func TestFleetRedisStoppedMidRun(t *testing.T) {
	t.Parallel()
	st := redisStorage(t)
	fl := newFleet(t, st, st.size)
	fl.awaitAll("every proxy holds the fleet's token", valid)
	st.redis.Pause()
	fl.owner().sim.RevokeAll()
	fl.mustServeAll("while Redis is stopped")
	if n := fl.owner().sim.TokenRequests("password", "ok"); n > 1+st.size {
		t.Fatalf("%d token requests while Redis is stopped, want at most one per proxy", n-1)
	}
	fl.mustServeAll("again while Redis is stopped")
	logins := fl.owner().sim.TokenRequests("password", "ok")
	st.redis.Resume()
	var gen uint64
	fl.awaitAll("every proxy has rejoined on one generation", func(id identityStatus, sh sharedStatus) bool {
		if !valid(id, sh) || sh.Storage != "ok" {
			return false
		}
		g, ok := fl.sameGeneration()
		gen = g
		return ok
	})
	if n := fl.owner().sim.TokenRequests("password", "ok"); n != logins {
		t.Fatalf("rejoining made %d token requests, want 0", n-logins)
	}
	fl.owner().sim.RevokeAll()
	fl.mustServeAll("after rejoining")
	if n := fl.owner().sim.TokenRequests("password", "ok"); n != logins+1 {
		t.Fatalf("a RevokeAll after rejoining made %d re-logins, want 1", n-logins)
	}
	t.Logf("rejoined on generation %d after %d logins while Redis was stopped", gen, logins-1)
}

func TestFleetRefusedPasswordOneAttemptPerCooldown(t *testing.T) {
	t.Parallel()
	storages(t, func(t *testing.T, st *fleetStorage) {
		fl := newFleet(t, st, st.size, withVar("APIC_PASSWORD", "wrong-Pz9q"))
		fl.awaitAll("every proxy cools down", func(id identityStatus, _ sharedStatus) bool { return id.State == "cooling_down" })
		if n := fl.tokenRequests(); n != 1 {
			t.Fatalf("%d proxies with a refused password made %d token requests, want 1", st.size, n)
		}
		retry := fl.live()[0].identity().RetryAt
		for i, e := range fl.live() {
			if r := e.identity().RetryAt; r == nil || !r.Equal(*retry) {
				t.Fatalf("proxy %d retries at %v, proxy 0 at %v: want the fleet's one time", i, r, retry)
			}
		}
		// Requests keep coming to every proxy, answered 502 at once; the
		// next attempt comes at the end of the cool-down, and only one.
		deadline := time.Now().Add(awaitBound)
		for fl.tokenRequests() < 2 {
			for i, c := range fl.serveAll() {
				if c != http.StatusBadGateway {
					t.Fatalf("proxy %d answered %d while cooling down, want 502", i, c)
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no attempt within %s of the cool-down's start", awaitBound)
			}
		}
		if at := time.Now(); at.Before(*retry) {
			t.Fatalf("the second attempt came at %v, before the cool-down's end %v", at, *retry)
		}
		// One more request each: every proxy learns the new refusal
		// from the record, without asking the server.
		for i, c := range fl.serveAll() {
			if c != http.StatusBadGateway {
				t.Fatalf("proxy %d answered %d after the second refusal, want 502", i, c)
			}
		}
		fl.awaitAll("every proxy cools down again", func(id identityStatus, _ sharedStatus) bool {
			return id.State == "cooling_down" && id.RetryAt != nil && id.RetryAt.After(*retry)
		})
		if n := fl.tokenRequests(); n != 2 {
			t.Fatalf("%d token requests after one cool-down, want 2", n)
		}
	})
}

func TestFleetRefreshTokensRotate(t *testing.T) {
	t.Parallel()
	storages(t, func(t *testing.T, st *fleetStorage) {
		fl := newFleet(t, st, st.size, withSim(func(c *apicsim.Config) {
			c.RefreshTokens = true
			c.TokenTTL = 2 * time.Second
		}))
		for fl.owner().sim.TokenRequests("refresh_token", "ok") < 3 {
			fl.mustServeAll("while refreshing")
		}
		if n := fl.owner().sim.TokenRequests("refresh_token", apicsim.OutcomeBadCredentials); n != 0 {
			t.Fatalf("%d refresh tokens refused: a spent one was used again", n)
		}
		if n := fl.owner().sim.TokenRequests("password", "ok"); n != 1 {
			t.Fatalf("%d password logins, want 1", n)
		}
		// One refresh per cycle: after the login, consecutive token
		// requests are at least half the 2 s lifetime apart, never two
		// in one cycle.
		at := fl.owner().tokenArrivals()
		for i := 2; i < len(at); i++ {
			if d := at[i].Sub(at[i-1]); d < time.Second {
				t.Fatalf("token requests %d and %d came %v apart: two in one refresh cycle", i, i+1, d)
			}
		}
		t.Logf("%s: %d refreshes, one per cycle", st.name, len(at)-1)
	})
}

func TestFleetSingleUseAPIKey(t *testing.T) {
	t.Parallel()
	storages(t, func(t *testing.T, st *fleetStorage) {
		// A plain proxy of the developer creates the key.
		dev := newEnv(t)
		const req = `{"client_type":"toolkit","description":"the fleet's key"}`
		code, _, body, err := post(dev, "/api/cloud/api-keys", "application/json", strings.NewReader(req), int64(len(req)))
		if err != nil {
			t.Fatal(err)
		}
		var key struct {
			APIKey string `json:"api_key"`
		}
		if err := json.Unmarshal(body, &key); err != nil || code != http.StatusCreated || key.APIKey == "" {
			t.Fatalf("creating an API key: %d %s", code, body)
		}
		fl := &fleet{t: t, st: st, opts: []option{
			st.sharedSession(), withLoginAtStart(), withoutRace(), withSimOf(dev),
			withCaddyfile(func(e *env) string {
				block := strings.NewReplacer(
					"realm "+apicsim.DefaultProviderRealm+"\n\t\t", "",
					"username "+apicsim.DefaultProviderUsername+"\n\t\t", "",
					"password {env.APIC_PASSWORD}", "api_key {env.APIC_API_KEY}",
				).Replace(e.authBlock())
				return e.caddyfile(block)
			}),
			withVar("APIC_API_KEY", key.APIKey),
		}}
		fl.members = []*env{dev}
		fl.grow(5)
		fl.members = fl.members[1:] // the fleet is the five
		fl.awaitAll("all five hold the fleet's token", valid)
		fl.mustServeAll("five replicas, one single-use key")
		if n := dev.sim.TokenRequests("api_key", "ok"); n != 1 {
			t.Fatalf("%d api_key logins, want 1", n)
		}
		// Each replica restarted in turn: the key is spent, the session
		// is in storage.
		for i := range 5 {
			fl.members[i].stop()
			fl.grow(1)
			fl.awaitAll("the restarted replica holds the fleet's token", valid)
			fl.mustServeAll(fmt.Sprintf("after restarting replica %d", i))
		}
		if n := dev.sim.TokenRequests("api_key", "ok"); n != 1 {
			t.Fatalf("%d api_key logins after the restarts, want 1", n)
		}
		if n := dev.sim.TokenRequests("api_key", apicsim.OutcomeBadCredentials); n != 0 {
			t.Fatalf("%d api_key logins refused: the spent key was used again", n)
		}
	})
}

func TestFleetSignOutOnStop(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("sign_out_on_stop=%v", on), func(t *testing.T) {
			t.Parallel()
			st := fileStorage(t)
			var opts []option
			if on {
				opts = append(opts, withAuth("sign_out_on_stop on"))
			}
			fl := newFleet(t, st, 2, opts...)
			fl.awaitAll("both hold the fleet's token", valid)
			// One pod of a rollout stops.
			fl.members[1].stop()
			signOuts := fl.owner().sim.Stats().Paths["/api/me/sign-out"]
			fl.mustServeAll("after the other stopped")
			logins := fl.owner().sim.TokenRequests("password", "ok")
			switch {
			case !on && (signOuts != 0 || logins != 1):
				t.Fatalf("sign_out_on_stop off (the default with shared_session): %d sign-outs and %d logins, want 0 and 1", signOuts, logins)
			case on && (signOuts != 1 || logins != 2):
				t.Fatalf("sign_out_on_stop on: %d sign-outs and %d logins, want 1 (the fleet's session) and 2 (the other proxy logs in again)", signOuts, logins)
			}
		})
	}
}

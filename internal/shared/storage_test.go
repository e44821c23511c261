package shared

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	storageredis "github.com/pberkel/caddy-storage-redis"

	"github.com/apic-tools/apic-auth-proxy/internal/redistest"
)

// The tests run against real storages: a real redis-server through the
// Redis storage module, and Caddy's file_system storage.

// testID and testSecrets are the identity and secrets of most tests. The
// secrets are no words and hold characters that JSON, URL and other
// encodings change, so that a search of the stored bytes finds them in any
// encoding.
var (
	testID = Identity{
		Server:   "https://apim.example.test/api",
		Realm:    "provider/default-idp-2",
		User:     "ops-admin",
		ClientID: "cli-7f3e9a",
	}
	testSecrets = Secrets{
		Credential:   `Pz7"qW<e&x+K/9=r%Vt~u`,
		ClientSecret: `cS4-Hj8<Lm"Qn+v/Rw=2`,
		Key:          `xK9!bT3&zF6?gD1#hY5'`,
	}
	testAccessToken  = "AT.q7Rm2Xw9Zk4Pv8Ls3Nd6.Hb1Yc5Gf0"
	testRefreshToken = "RT-w3Jx8Qv1Nz6Lk2Tb9Mp4Sd7"
)

// backend is one kind of real storage a test runs against.
type backend struct {
	name string
	// open returns a new client of the test's storage, as another process
	// would have.
	open func(t *testing.T) certmagic.Storage
	// dump returns everything stored, keys and raw values, as the storage
	// keeps them (Redis: every key and value; file: every file).
	dump func(t *testing.T) map[string][]byte
	// locks lists the locks held in the storage.
	locks func(t *testing.T) []string
	// holder is how a lock-holding process finds the storage.
	holder string
	// lockTTL is how long a lock outlives its crashed holder, at most.
	lockTTL time.Duration
	// redis is the server of the Redis backend; nil for the file one.
	redis *redistest.Server
}

// backends starts a real storage of each kind for the test.
func backends(t *testing.T) []backend {
	return []backend{fileBackend(t), redisBackend(t)}
}

// eachBackend runs test against each kind of real storage, in parallel
// when parallel is set, with a ctx that bounds a broken test.
func eachBackend(t *testing.T, parallel bool, test func(t *testing.T, b backend, ctx context.Context)) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			if parallel {
				t.Parallel()
			}
			test(t, b, ctxFor(t, 60*time.Second))
		})
	}
}

func fileBackend(t *testing.T) backend {
	dir := t.TempDir()
	return backend{
		name: "file_system",
		open: func(t *testing.T) certmagic.Storage { return &certmagic.FileStorage{Path: dir} },
		dump: func(t *testing.T) map[string][]byte {
			d := map[string][]byte{}
			err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
				if err != nil || e.IsDir() {
					return err
				}
				b, err := os.ReadFile(p)
				rel, _ := filepath.Rel(dir, p)
				d[filepath.ToSlash(rel)] = b
				return err
			})
			if err != nil {
				t.Fatalf("reading the file storage: %v", err)
			}
			return d
		},
		locks: func(t *testing.T) []string {
			m, _ := filepath.Glob(filepath.Join(dir, "locks", "*"))
			return m
		},
		holder:  "file:" + dir,
		lockTTL: 10 * time.Second,
	}
}

func redisBackend(t *testing.T) backend {
	srv := redistest.Start(t)
	return backend{
		name:    "redis",
		open:    func(t *testing.T) certmagic.Storage { return newRedisStorage(t, srv.Addr, "") },
		dump:    func(t *testing.T) map[string][]byte { return srv.Dump() },
		locks:   func(t *testing.T) []string { return srv.Keys("caddy/locks/*") },
		holder:  "redis:" + srv.Addr,
		lockTTL: 5 * time.Second,
		redis:   srv,
	}
}

// newRedisStorage provisions the Redis storage module as Caddy does, from
// its JSON config with the address, and more config fields in extra
// (`"timeout":"10"`), and cleans it up when the test ends.
func newRedisStorage(t testing.TB, addr, extra string) *storageredis.RedisStorage {
	t.Helper()
	cfg := fmt.Sprintf(`{"address":[%q]`, addr)
	if extra != "" {
		cfg += "," + extra
	}
	cfg += "}"
	rs := storageredis.New()
	if err := json.Unmarshal([]byte(cfg), rs); err != nil {
		t.Fatalf("redis storage config %s: %v", cfg, err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := rs.Provision(ctx); err != nil {
		t.Fatalf("provisioning the redis storage on %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = rs.Cleanup() })
	return rs
}

// newStore returns a Store of id with sec on st, bounded by timeout (the
// default when 0). Deriving its key takes a while (more under -race): a
// test makes its Stores once and sets each backend's storage in turn.
func newStore(t testing.TB, st certmagic.Storage, id Identity, sec Secrets, timeout time.Duration) *Store {
	t.Helper()
	s, err := New(Options{Storage: st, Identity: id, Secrets: sec, Timeout: timeout})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// liveRecord is a record with both tokens that lasts an hour.
func liveRecord(gen uint64) *Record {
	now := time.Now().UTC().Truncate(time.Second)
	return &Record{
		Generation:    gen,
		AccessToken:   testAccessToken,
		RefreshToken:  testRefreshToken,
		Expiry:        now.Add(time.Hour),
		RefreshExpiry: now.Add(2 * time.Hour),
		Grant:         "password",
		Obtained:      now,
		WrittenBy:     "host-a/4242",
		WrittenAt:     now,
	}
}

// deadRecord is a record nothing in which is usable any more.
func deadRecord() *Record {
	r := liveRecord(7)
	r.RefreshToken = ""
	r.RefreshExpiry = time.Time{}
	r.Expiry = time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	return r
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func sameRecord(t *testing.T, got, want *Record) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("record = %s\nwant     %s", g, w)
	}
}

func TestSaveLoad(t *testing.T) {
	a := newStore(t, nil, testID, testSecrets, 0)
	other := newStore(t, nil, testID, testSecrets, 0)
	eachBackend(t, false, func(t *testing.T, b backend, ctx context.Context) {
		loads := a.Count(OpLoad)
		a.SetStorage(b.open(t))
		rec, dead, err := a.Load(ctx)
		if rec != nil || dead || err != nil {
			t.Fatalf("Load of no record = %v, %v, %v; want nil, false, nil", rec, dead, err)
		}
		want := liveRecord(1)
		if err := a.Save(ctx, want); err != nil {
			t.Fatalf("Save: %v", err)
		}
		// Another client of the storage (another process) with the
		// same identity and secrets reads it.
		other.SetStorage(b.open(t))
		got, dead, err := other.Load(ctx)
		if err != nil || dead {
			t.Fatalf("Load = %v, %v; want the record", dead, err)
		}
		sameRecord(t, got, want)

		// A newer record replaces it.
		newer := liveRecord(2)
		newer.AccessToken += "-2"
		if err := other.Save(ctx, newer); err != nil {
			t.Fatalf("Save: %v", err)
		}
		got, _, err = a.Load(ctx)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		sameRecord(t, got, newer)
		if n := a.Count(OpLoad) - loads; n != 2 {
			t.Errorf("counted %d loads, want 2", n)
		}
	})
}

// encodings are the forms a secret might take in stored bytes.
func encodings(secret string) map[string]string {
	q, _ := json.Marshal(secret)
	var noHTML strings.Builder
	enc := json.NewEncoder(&noHTML)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(secret)
	return map[string]string{
		"plain":              secret,
		"JSON-escaped":       strings.Trim(string(q), `"`),
		"JSON-escaped (raw)": strings.Trim(strings.TrimSpace(noHTML.String()), `"`),
		"query-escaped":      url.QueryEscape(secret),
		"path-escaped":       url.PathEscape(secret),
		"base64":             base64.StdEncoding.EncodeToString([]byte(secret)),
		"base64 raw":         base64.RawStdEncoding.EncodeToString([]byte(secret)),
		"base64url":          base64.URLEncoding.EncodeToString([]byte(secret)),
		"base64url raw":      base64.RawURLEncoding.EncodeToString([]byte(secret)),
		"hex":                hex.EncodeToString([]byte(secret)),
		"HEX":                strings.ToUpper(hex.EncodeToString([]byte(secret))),
	}
}

// noSecretIn fails the test if data (named where) holds a secret in any
// encoding, or any 8 characters of one.
func noSecretIn(t *testing.T, where string, data []byte, secrets map[string]string) {
	t.Helper()
	s := string(data)
	for name, secret := range secrets {
		for enc, form := range encodings(secret) {
			if strings.Contains(s, form) {
				t.Errorf("%s holds the %s %s %q", where, enc, name, form)
			}
		}
		for i := 0; i+8 <= len(secret); i++ {
			if part := secret[i : i+8]; strings.Contains(s, part) {
				t.Errorf("%s holds %q, 8 characters of the %s", where, part, name)
			}
		}
	}
}

func TestStoredBytesHoldNoSecret(t *testing.T) {
	secrets := map[string]string{
		"password":      testSecrets.Credential,
		"client secret": testSecrets.ClientSecret,
		"extra key":     testSecrets.Key,
		"access token":  testAccessToken,
		"refresh token": testRefreshToken,
	}
	a := newStore(t, nil, testID, testSecrets, 0)
	// The key names the identity alone: other secrets, the same key.
	other := newStore(t, nil, testID, Secrets{Credential: "other-Yq3", ClientSecret: "other-Zr4"}, 0)
	if a.Key() != other.Key() || a.Key() != Prefix+testID.Hash() {
		t.Errorf("keys %q and %q, want both %q", a.Key(), other.Key(), Prefix+testID.Hash())
	}
	if hash, ok := strings.CutPrefix(a.Key(), "apic_auth/sessions/"); !ok || len(hash) != 64 || strings.Trim(hash, "0123456789abcdef") != "" {
		t.Errorf("key %q, want apic_auth/sessions/<64 hex digits>", a.Key())
	}
	eachBackend(t, false, func(t *testing.T, b backend, ctx context.Context) {
		st := b.open(t)
		a.SetStorage(st)

		if err := a.Save(ctx, liveRecord(1)); err != nil {
			t.Fatalf("Save: %v", err)
		}
		keys, err := st.List(ctx, "apic_auth/sessions", true)
		if err != nil || len(keys) != 1 || keys[0] != a.Key() {
			t.Errorf("the storage lists %q, %v; want only %q", keys, err, a.Key())
		}
		// What a held lock stores is searched too.
		unlock, err := a.Lock(ctx)
		if err != nil {
			t.Fatalf("Lock: %v", err)
		}
		defer unlock()

		dump := b.dump(t)
		if len(dump) == 0 {
			t.Fatal("the storage holds nothing")
		}
		found := false
		for key, value := range dump {
			found = found || strings.HasSuffix(key, a.Key())
			noSecretIn(t, "key "+key, []byte(key), secrets)
			noSecretIn(t, "the value of "+key, value, secrets)
		}
		if !found {
			t.Errorf("no stored key ends in %s: %q", a.Key(), keys)
		}
		// And the record as the storage module returns it.
		all, err := st.List(ctx, "", true)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		for _, key := range all {
			v, err := st.Load(ctx, key)
			if err != nil {
				continue // a lock, or a directory
			}
			noSecretIn(t, "the loaded value of "+key, v, secrets)
		}
	})
}

func TestOtherCredentialsCannotRead(t *testing.T) {
	withKey := testSecrets
	cases := []struct {
		name string
		sec  Secrets
	}{
		{"other password", Secrets{Credential: withKey.Credential + "x", ClientSecret: withKey.ClientSecret, Key: withKey.Key}},
		{"other client secret", Secrets{Credential: withKey.Credential, ClientSecret: "x" + withKey.ClientSecret, Key: withKey.Key}},
		{"other extra key", Secrets{Credential: withKey.Credential, ClientSecret: withKey.ClientSecret, Key: "Kq2#other"}},
		{"no extra key", Secrets{Credential: withKey.Credential, ClientSecret: withKey.ClientSecret}},
	}
	a := newStore(t, nil, testID, testSecrets, 0)
	readers := make([]*Store, len(cases))
	for i, c := range cases {
		readers[i] = newStore(t, nil, testID, c.sec, 0)
	}
	otherUser := testID
	otherUser.User = "ops-admin-2"
	otherUsers := newStore(t, nil, otherUser, testSecrets, 0)
	// The same user and secrets asking for a narrower token: a read-only
	// proxy of the fleet must never take the full token.
	readOnly := testID
	readOnly.Scope = []string{"my:view", "org:view"}
	readOnlys := newStore(t, nil, readOnly, testSecrets, 0)
	eachBackend(t, false, func(t *testing.T, b backend, ctx context.Context) {
		st := b.open(t)
		a.SetStorage(st)
		otherUsers.SetStorage(st)
		readOnlys.SetStorage(st)
		for _, r := range readers {
			r.SetStorage(b.open(t))
		}
		check := func(wantDead bool) {
			t.Helper()
			for i, c := range cases {
				rec, dead, err := readers[i].Load(ctx)
				if rec != nil || dead != wantDead || err != ErrUnreadable {
					t.Errorf("%s: Load = %v, dead %v, %v; want nil, dead %v, ErrUnreadable", c.name, rec, dead, err, wantDead)
				}
			}
		}
		if err := a.Save(ctx, liveRecord(3)); err != nil {
			t.Fatalf("Save: %v", err)
		}
		check(false) // the record lasts: not to be replaced
		dead := deadRecord()
		if err := a.Save(ctx, dead); err != nil {
			t.Fatalf("Save: %v", err)
		}
		check(true) // nothing in it is usable any more
		// Its writer still reads it.
		rec, isDead, err := a.Load(ctx)
		if err != nil || isDead {
			t.Fatalf("the writer's Load = %v, %v", isDead, err)
		}
		sameRecord(t, rec, dead)

		// Another user's proxy has a record of its own, and sees none.
		rec, isDead, err = otherUsers.Load(ctx)
		if rec != nil || isDead || err != nil {
			t.Errorf("another user's Load = %v, %v, %v; want nil, false, nil", rec, isDead, err)
		}
		// A proxy of a narrower scope has a record of its own too.
		if err := a.Save(ctx, liveRecord(4)); err != nil {
			t.Fatalf("Save: %v", err)
		}
		rec, isDead, err = readOnlys.Load(ctx)
		if rec != nil || isDead || err != nil {
			t.Errorf("a narrower scope's Load = %v, %v, %v; want nil, false, nil", rec, isDead, err)
		}
	})
}

func TestTamperedRecord(t *testing.T) {
	a := newStore(t, nil, testID, testSecrets, 0)
	// Another identity, with the same secrets.
	otherID := testID
	otherID.ClientID = "cli-other"
	o := newStore(t, nil, otherID, testSecrets, 0)
	eachBackend(t, false, func(t *testing.T, b backend, ctx context.Context) {
		st := b.open(t)
		a.SetStorage(st)
		o.SetStorage(st)
		if err := a.Save(ctx, liveRecord(5)); err != nil {
			t.Fatalf("Save: %v", err)
		}
		orig, err := st.Load(ctx, a.Key())
		if err != nil {
			t.Fatalf("loading the stored record: %v", err)
		}
		if err := o.Save(ctx, liveRecord(9)); err != nil {
			t.Fatalf("Save: %v", err)
		}
		otherRec, err := st.Load(ctx, o.Key())
		if err != nil {
			t.Fatalf("loading the other record: %v", err)
		}

		edit := func(change func(e *envelope)) []byte {
			var e envelope
			if err := json.Unmarshal(orig, &e); err != nil {
				t.Fatalf("the stored record is no envelope: %v", err)
			}
			change(&e)
			out, _ := json.Marshal(e)
			return out
		}
		cases := []struct {
			name     string
			data     []byte
			liveLast bool // its clear expiry is still ahead
		}{
			{"a byte of the sealed part flipped", edit(func(e *envelope) { e.Sealed[len(e.Sealed)/2] ^= 0x01 }), true},
			{"the tag's last byte flipped", edit(func(e *envelope) { e.Sealed[len(e.Sealed)-1] ^= 0x80 }), true},
			{"lasts moved later", edit(func(e *envelope) { e.Lasts = e.Lasts.Add(time.Hour) }), true},
			{"lasts moved to the past", edit(func(e *envelope) { e.Lasts = time.Now().Add(-time.Hour) }), false},
			{"nonce changed", edit(func(e *envelope) { e.Nonce[0] ^= 0xff }), true},
			{"nonce cut", edit(func(e *envelope) { e.Nonce = e.Nonce[1:] }), false},
			{"sealed part cut", edit(func(e *envelope) { e.Sealed = e.Sealed[:len(e.Sealed)-1] }), true},
			{"sealed part empty", edit(func(e *envelope) { e.Sealed = nil }), true},
			{"other version", edit(func(e *envelope) { e.Version = 2 }), false},
			{"another identity's record", otherRec, true},
			{"truncated", orig[:len(orig)/2], false},
			{"empty", []byte{}, false},
			{"JSON null", []byte("null"), false},
			{"JSON object", []byte("{}"), false},
			{"not JSON", []byte("\x00\xff garbage"), false},
		}
		for _, c := range cases {
			if err := st.Store(ctx, a.Key(), c.data); err != nil {
				t.Fatalf("%s: storing: %v", c.name, err)
			}
			rec, dead, err := a.Load(ctx)
			if rec != nil || err != ErrUnreadable {
				t.Errorf("%s: Load = %v, %v; want nil, ErrUnreadable", c.name, rec, err)
			}
			if c.liveLast && dead {
				t.Errorf("%s: dead, but its clear expiry is ahead", c.name)
			}
		}
		// The untouched bytes open again.
		if err := st.Store(ctx, a.Key(), orig); err != nil {
			t.Fatal(err)
		}
		if rec, _, err := a.Load(ctx); err != nil || rec.Generation != 5 {
			t.Errorf("the original record: %v, %v", rec, err)
		}
	})
}

func TestLock(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, b backend, ctx context.Context) {
		// Separate clients of the storage: separate processes' view. A
		// Redis lock is exclusive while its holder refreshes it (every 3
		// s, for 5 s): the Stores are made before any lock is taken, so
		// that their key derivation, slow on a loaded machine under
		// -race, does not starve a holder's refresh.
		a := newStore(t, b.open(t), testID, testSecrets, 0)
		other := newStore(t, b.open(t), testID, testSecrets, 0)
		third := newStore(t, b.open(t), testID, testSecrets, 0)
		otherID := testID
		otherID.User = "ops-admin-3"
		otherIdentity := newStore(t, b.open(t), otherID, testSecrets, 0)
		unlockA, err := a.Lock(ctx)
		if err != nil {
			t.Fatalf("Lock: %v", err)
		}
		if n := len(b.locks(t)); n != 1 {
			t.Errorf("%d locks held, want 1", n)
		}

		// A second Lock waits until Unlock: it starts now, and says
		// whether the Unlock had come when it returns.
		released := make(chan struct{})
		type result struct {
			unlock      func()
			err         error
			afterUnlock bool
		}
		got := make(chan result, 1)
		go func() {
			u, err := other.Lock(ctx)
			r := result{unlock: u, err: err}
			select {
			case <-released:
				r.afterUnlock = true
			default:
			}
			got <- r
		}()

		// Exclusive: a third client's Lock ends with its ctx, and says
		// so, while the other's waits meanwhile.
		short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		unlockC, err := third.Lock(short)
		cancel()
		if err == nil {
			unlockC()
			t.Fatal("a third Store took the lock while the first held it")
		}
		if !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "within 0s") {
			t.Errorf("Lock whose ctx ended = %q, want its ctx's deadline", err)
		}

		// A lock of another identity is its own.
		unlockD, err := otherIdentity.Lock(ctxFor(t, 5*time.Second))
		if err != nil {
			t.Fatalf("another identity's Lock while the first is held: %v", err)
		}
		unlockD()

		close(released)
		unlockA()
		unlockA() // a second call does nothing
		r := <-got
		if r.err != nil {
			t.Fatalf("the waiting Lock: %v", r.err)
		}
		if !r.afterUnlock {
			r.unlock()
			t.Fatal("the waiting Lock returned before Unlock")
		}
		// Held by the other now: the first waits in turn.
		short, cancel = context.WithTimeout(ctx, 1500*time.Millisecond)
		if u, err := a.Lock(short); err == nil {
			u()
			t.Error("the first Store took the lock the other holds")
		}
		cancel()
		r.unlock()
		u, err := a.Lock(ctxFor(t, 15*time.Second))
		if err != nil {
			t.Fatalf("Lock after the other's Unlock: %v", err)
		}
		u()
		if a.Count(OpLock) != 3 || a.Count(OpUnlock) != 2 {
			t.Errorf("counted %d locks and %d unlocks, want 3 and 2", a.Count(OpLock), a.Count(OpUnlock))
		}
	})
}

// holderEnv names the storage a lock-holding child process (TestMain)
// locks testID's record in: "redis:<addr>" or "file:<dir>".
const holderEnv = "APIC_SHARED_TEST_LOCK_HOLDER"

func TestMain(m *testing.M) {
	if where := os.Getenv(holderEnv); where != "" {
		os.Exit(holdLock(where))
	}
	os.Exit(m.Run())
}

// holdLock is the child process of TestCrashedLockHolder: it takes the
// lock, says so on stdout and holds it until it is killed (or its stdin
// closes, when the test binary is gone).
func holdLock(where string) int {
	kind, loc, _ := strings.Cut(where, ":")
	var st certmagic.Storage
	switch kind {
	case "file":
		st = &certmagic.FileStorage{Path: loc}
	case "redis":
		rs := storageredis.New()
		rs.Address = []string{loc}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		if err := rs.Provision(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "provisioning the redis storage:", err)
			return 1
		}
		st = rs
	default:
		fmt.Fprintln(os.Stderr, "unknown storage", where)
		return 2
	}
	s, err := New(Options{Storage: st, Identity: testID, Secrets: testSecrets})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := s.Lock(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// A lock holder that dies without unlocking (SIGKILL of its process)
// leaves a lock that expires by the storage module's rule, and another
// Store then gets it.
func TestCrashedLockHolder(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, b backend, _ context.Context) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), holderEnv+"="+b.holder)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		defer stdin.Close()
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		if line != "locked\n" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("the lock holder said %q; its stderr:\n%s", line, stderr.String())
		}
		if n := len(b.locks(t)); n != 1 {
			t.Errorf("%d locks held, want 1", n)
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()

		// A bound on a broken test, well past the module's TTL.
		bound := 3*b.lockTTL + 5*time.Second
		start := time.Now()
		unlock, err := newStore(t, b.open(t), testID, testSecrets, 0).Lock(ctxFor(t, bound))
		if err != nil {
			t.Fatalf("the crashed holder's lock did not expire within %s: %v", bound, err)
		}
		t.Logf("the lock came %s after its holder was killed (the module's TTL: %s)", time.Since(start).Round(time.Millisecond), b.lockTTL)
		unlock()
	})
}

// A paused Redis (a stalled server: connections open, nothing answered)
// holds no call past the Store's Timeout, though the module's own client
// would wait 10 s.
func TestPausedRedis(t *testing.T) {
	const timeout = 300 * time.Millisecond
	// What the Redis client would wait for, and what the test allows.
	const moduleTimeout = `"timeout":"10"`
	const bound = 3 * time.Second

	t.Run("calls", func(t *testing.T) {
		srv := redistest.Start(t)
		s := newStore(t, newRedisStorage(t, srv.Addr, moduleTimeout), testID, testSecrets, timeout)
		ctx := ctxFor(t, 60*time.Second)
		if err := s.Save(ctx, liveRecord(1)); err != nil {
			t.Fatalf("Save: %v", err)
		}
		srv.Pause()
		calls := []struct {
			name string
			call func() error
		}{
			{"Load", func() error { _, _, err := s.Load(ctx); return err }},
			{"Save", func() error { return s.Save(ctx, liveRecord(2)) }},
			{"Lock", func() error {
				lctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				u, err := s.Lock(lctx)
				if err == nil {
					u()
				}
				return err
			}},
		}
		for _, c := range calls {
			start := time.Now()
			err := c.call()
			took := time.Since(start)
			if err == nil || err == ErrUnreadable {
				t.Errorf("%s on a paused Redis = %v, want a storage error", c.name, err)
			}
			if took > bound {
				t.Errorf("%s on a paused Redis took %s, want about %s", c.name, took, timeout)
			}
			t.Logf("%s: %v after %s", c.name, err, took.Round(time.Millisecond))
		}
		srv.Resume()
		// It heals: the record reads again.
		rec, _, err := s.Load(ctx)
		if err != nil || rec == nil {
			t.Fatalf("Load after Resume = %v, %v", rec, err)
		}
	})

	// A Lock given up while Redis stalls, that the module then takes once
	// Redis answers, is released: the module keeps a lock it took alive
	// for as long as its process runs, so another Store would never get
	// it otherwise.
	t.Run("lock given up", func(t *testing.T) {
		srv := redistest.Start(t)
		a := newStore(t, newRedisStorage(t, srv.Addr, moduleTimeout), testID, testSecrets, timeout)
		other := newStore(t, newRedisStorage(t, srv.Addr, moduleTimeout), testID, testSecrets, timeout)
		ctx := ctxFor(t, 60*time.Second)

		// The module's client keeps its connection, and Redis the lock
		// script, from a first lock.
		unlock, err := a.Lock(ctx)
		if err != nil {
			t.Fatalf("Lock: %v", err)
		}
		unlock()

		srv.Pause()
		// A lock wait as the session makes one: its ctx lasts long, and
		// ends when a read of the record fails.
		lockCtx, giveUp := context.WithCancel(ctx)
		defer giveUp()
		got := make(chan error, 1)
		go func() {
			u, err := a.Lock(lockCtx)
			if err == nil {
				u()
			}
			got <- err
		}()
		if _, _, err := other.Load(ctx); err == nil {
			t.Fatal("Load on a paused Redis succeeded")
		}
		start := time.Now()
		giveUp()
		if err := <-got; !errors.Is(err, context.Canceled) {
			t.Fatalf("Lock on a paused Redis given up = %v, want context.Canceled", err)
		}
		if took := time.Since(start); took > bound {
			t.Errorf("Lock returned %s after its ctx ended", took)
		}
		srv.Resume()

		unlock, err = other.Lock(ctxFor(t, 15*time.Second))
		if err != nil {
			t.Fatalf("another Store's Lock after Resume: %v (locks held: %q)", err, srv.Keys("caddy/locks/*"))
		}
		unlock()
		// The late lock was taken, and released by the Store.
		if n := a.Count(OpUnlock); n != 2 {
			t.Errorf("the Store released %d locks, want 2 (the first, and the late one)", n)
		}
	})
}

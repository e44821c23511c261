package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/apic-tools/apic-auth-proxy/internal/session"
	"github.com/apic-tools/apic-auth-proxy/internal/shared"
)

// SharedSession makes the proxies that log in as the same identity (the
// same server, realm, user or API key, client id and scope) share one API
// Connect session through a Caddy storage module: only the holder of the
// storage's lock logs in or spends the refresh token, and the others take
// the token it stored. The record is encrypted with a key derived from
// the password (or API key) and the client secret, mixed with Key when
// set: whoever reads the storage without the secrets reads nothing.
type SharedSession struct {
	// StorageRaw is the caddy.storage module that holds the record, such
	// as redis (across machines) or file_system (one machine). Default:
	// Caddy's global storage. A storage given here that does not answer
	// when the config loads does not stop it: the proxy logs in on its
	// own meanwhile and joins the fleet's session once the storage
	// answers.
	StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=caddy.storage inline_key=module"`
	// Key is extra secret key material mixed into the record's
	// encryption key; every proxy of the fleet needs the same. Takes
	// {env.*} and {file.*}. Default none.
	Key string `json:"key,omitempty"`
	// StorageTimeout bounds one storage call. Default 2s.
	StorageTimeout caddy.Duration `json:"storage_timeout,omitempty"`
	// LockWait is how long a proxy waits for another's login before
	// logging in itself. Default 20s.
	LockWait caddy.Duration `json:"lock_wait,omitempty"`
}

// resolvedShared is a SharedSession with its key resolved. It holds a
// secret.
type resolvedShared struct {
	// module and config are the storage module's name (after
	// caddy.storage.) and its JSON without "module"; module is "" for
	// Caddy's global storage.
	module   string
	config   json.RawMessage
	key      string
	timeout  time.Duration
	lockWait time.Duration
}

// resolveShared reads shared_session; get resolves a secret's
// placeholders.
func (s *SharedSession) resolve(get func(field, raw string) string) (*resolvedShared, error) {
	out := &resolvedShared{timeout: time.Duration(s.StorageTimeout), lockWait: time.Duration(s.LockWait)}
	if out.timeout < 0 || out.lockWait < 0 {
		return nil, errors.New("shared_session: storage_timeout and lock_wait: want a positive duration")
	}
	if out.timeout == 0 {
		out.timeout = shared.DefaultTimeout
	}
	if out.lockWait == 0 {
		out.lockWait = session.DefaultLockWait
	}
	if s.Key != "" {
		out.key = get("shared_session key", s.Key)
	}
	if len(s.StorageRaw) > 0 {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(s.StorageRaw, &m); err != nil {
			return nil, fmt.Errorf("shared_session storage: %v", err)
		}
		if err := json.Unmarshal(m["module"], &out.module); err != nil || out.module == "" {
			return nil, errors.New(`shared_session storage: want a storage module's config with its name in "module"`)
		}
		delete(m, "module")
		out.config, _ = json.Marshal(m)
	}
	return out, nil
}

// poolParts are what of the shared session makes an identity: the
// storage's config, a hash of the key and the timeouts.
func (s *resolvedShared) poolParts() []string {
	if s == nil {
		return []string{"no shared session"}
	}
	key := sha256.Sum256([]byte(s.key))
	return []string{"shared session", s.module, string(s.config), hex.EncodeToString(key[:]), s.timeout.String(), s.lockWait.String()}
}

// sharedIdentity is the shared session's part of an identity: its record
// and the storage module it loaded, if any.
type sharedIdentity struct {
	store *shared.Store
	// global is set when the record is in Caddy's global storage: each
	// config that starts gives it anew.
	global bool
	// module is the storage module's name, for logs and the status.
	module string
	// loader loads the storage module of its own; nil with the global
	// storage.
	loader *storageLoader
	// refusedOnce is set while a fleet refusal has been logged, until a
	// token arrives.
	refusedOnce atomic.Bool
}

// newSharedIdentity derives the record's key and loads the storage module
// of cfg's shared_session, if it names one.
func newSharedIdentity(ctx caddy.Context, id *identity, c *resolved) (*sharedIdentity, error) {
	sc := c.shared
	sid := shared.Identity{Server: c.server, Realm: c.creds.Realm, User: c.creds.Username, ClientID: c.creds.ClientID, Scope: c.scope}
	credential := c.creds.Password
	if c.creds.APIKey != "" {
		sid = shared.Identity{Server: c.server, APIKey: true, ClientID: c.creds.ClientID, Scope: c.scope}
		credential = c.creds.APIKey
	}
	store, err := shared.New(shared.Options{
		Identity: sid,
		Secrets:  shared.Secrets{Credential: credential, ClientSecret: c.creds.ClientSecret, Key: sc.key},
		Timeout:  sc.timeout,
	})
	if err != nil {
		return nil, fmt.Errorf("shared_session: %v", err)
	}
	sh := &sharedIdentity{store: store, global: sc.module == "", module: sc.module}
	if sh.global {
		sh.module = "global storage"
		return sh, nil
	}
	sh.loader = &storageLoader{module: sc.module, config: sc.config, timeout: sc.timeout, store: store, id: id}
	if err := sh.loader.start(ctx); err != nil {
		return nil, err
	}
	return sh, nil
}

// close stops loading the storage module and cleans up the loaded one.
func (sh *sharedIdentity) close() {
	if sh != nil && sh.loader != nil {
		sh.loader.stop()
	}
}

// Bounds of the delay between two attempts to load a storage module that
// does not answer.
const (
	storageRetryMin = time.Second
	storageRetryMax = 30 * time.Second
)

// storageLoader loads a shared_session storage module for one identity,
// outside Caddy's module bookkeeping: a storage that does not answer
// (Redis down) must not fail the config, and is tried again in the
// background until it answers or the identity ends.
type storageLoader struct {
	module  string
	config  json.RawMessage
	timeout time.Duration
	store   *shared.Store
	id      *identity

	ctx    context.Context // the identity's life: the module's context
	cancel context.CancelFunc
	done   chan struct{} // closed when the background attempts end

	mu     sync.Mutex
	loaded caddy.Module // the provisioned module, cleaned up at stop
}

// storageAttempt is the outcome of one attempt to load the module.
type storageAttempt struct {
	mod     caddy.Module
	storage certmagic.Storage
	err     error
}

// start decodes the module's config (a mistake fails the config) and
// makes the first attempt, waiting for it at most the storage timeout. A
// storage that does not answer is logged once and tried again in the
// background; any other failure fails the config.
func (l *storageLoader) start(ctx caddy.Context) error {
	if _, err := l.decode(); err != nil {
		return err
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.done = make(chan struct{})
	first := make(chan storageAttempt, 1)
	go func() { first <- l.attempt(ctx) }()
	timer := time.NewTimer(l.timeout)
	defer timer.Stop()
	var pending <-chan storageAttempt
	var why error
	select {
	case res := <-first:
		if res.err == nil {
			l.use(res)
			close(l.done)
			return nil
		}
		if !storageUnavailable(res.err) {
			l.cancel()
			close(l.done)
			return fmt.Errorf("shared_session storage %s: %v", l.module, l.id.scrub.Scrub(res.err.Error()))
		}
		why = res.err
	case <-timer.C:
		pending, why = first, fmt.Errorf("it did not answer within storage_timeout (%s)", l.timeout)
	}
	ctx.Logger().Warn("shared session storage unavailable; logging in on this proxy alone until it answers",
		zap.String("identity", l.id.name), zap.String("storage", l.module), zap.String("error", l.id.scrub.Scrub(why.Error())))
	go l.retry(pending)
	return nil
}

// decode makes a new instance of the module from its config.
func (l *storageLoader) decode() (caddy.Module, error) {
	info, err := caddy.GetModule("caddy.storage." + l.module)
	if err != nil {
		return nil, fmt.Errorf("shared_session storage: %v", err)
	}
	mod := info.New()
	if err := caddy.StrictUnmarshalJSON(l.config, mod); err != nil {
		return nil, fmt.Errorf("shared_session storage %s: %v", l.module, err)
	}
	if _, ok := mod.(caddy.StorageConverter); !ok {
		return nil, fmt.Errorf("shared_session storage: module %s is not a storage", l.module)
	}
	return mod, nil
}

// attempt loads a new instance of the module, provisioned in a context of
// its own (derived from parent's config, living as long as the identity),
// so that nothing it does touches the config's modules.
func (l *storageLoader) attempt(parent caddy.Context) storageAttempt {
	mod, err := l.decode()
	if err != nil {
		return storageAttempt{err: err}
	}
	parent.Context = l.ctx
	mctx, _ := caddy.NewContext(parent) // ends with l.ctx; its cancel would run parent's cleanups
	fail := func(err error) storageAttempt {
		if cu, ok := mod.(caddy.CleanerUpper); ok {
			_ = cu.Cleanup()
		}
		return storageAttempt{err: err}
	}
	if p, ok := mod.(caddy.Provisioner); ok {
		if err := p.Provision(mctx); err != nil {
			return fail(err)
		}
	}
	if v, ok := mod.(caddy.Validator); ok {
		if err := v.Validate(); err != nil {
			return fail(err)
		}
	}
	st, err := mod.(caddy.StorageConverter).CertMagicStorage()
	if err != nil {
		return fail(err)
	}
	return storageAttempt{mod: mod, storage: st}
}

// use gives the store the loaded storage, unless the identity has ended.
func (l *storageLoader) use(res storageAttempt) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx.Err() != nil {
		if cu, ok := res.mod.(caddy.CleanerUpper); ok {
			_ = cu.Cleanup()
		}
		return false
	}
	l.loaded = res.mod
	l.store.SetStorage(res.storage)
	return true
}

// retry tries again, from 1 s doubling to 30 s, until the module loads
// or the identity ends; pending is an attempt still under way, or nil.
func (l *storageLoader) retry(pending <-chan storageAttempt) {
	defer close(l.done)
	delay := storageRetryMin
	for {
		var res storageAttempt
		if pending != nil {
			select {
			case res = <-pending:
			case <-l.ctx.Done():
				go func() { l.use(<-pending) }() // cleans it up
				return
			}
			pending = nil
		} else {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.ctx.Done():
				t.Stop()
				return
			}
			delay = min(2*delay, storageRetryMax)
			res = l.attempt(l.id.env.Load().ctx)
		}
		if res.err == nil {
			if l.use(res) {
				l.id.log().Info("shared session storage answers; joining the fleet's session",
					zap.String("identity", l.id.name), zap.String("storage", l.module))
			}
			return
		}
		if ce := l.id.log().Check(zap.DebugLevel, "shared session storage still unavailable"); ce != nil {
			ce.Write(zap.String("identity", l.id.name), zap.String("storage", l.module),
				zap.String("error", l.id.scrub.Scrub(res.err.Error())), zap.Duration("next_try_in", delay))
		}
	}
}

// stop ends the attempts and cleans the loaded module up.
func (l *storageLoader) stop() {
	l.cancel()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	l.store.SetStorage(nil)
	if cu, ok := l.loaded.(caddy.CleanerUpper); ok {
		_ = cu.Cleanup()
	}
	l.loaded = nil
}

// unavailableWords are what the error of a storage that does not answer
// says: it could not be dialed, refused the connection, timed out, or its
// name does not resolve.
var unavailableWords = []string{"dial", "connect", "refused", "timeout", "timed out", "deadline exceeded",
	"no such host", "i/o", "network is unreachable", "no route to host", "eof", "broken pipe", "reset by peer"}

// storageUnavailable reports whether err, a storage module's provisioning
// error, says that the storage does not answer (rather than that its
// config is wrong or its password refused).
func storageUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	msg := strings.ToLower(err.Error())
	for _, w := range unavailableWords {
		if strings.Contains(msg, w) {
			return true
		}
	}
	return false
}

// onShared logs what happens to the shared record, scrubbed.
func (id *identity) onShared(ev session.SharedEvent) {
	l := id.log()
	fields := []zap.Field{zap.String("identity", id.name), zap.String("storage", id.shared.module)}
	if ev.Generation != 0 {
		fields = append(fields, zap.Uint64("generation", ev.Generation))
	}
	if ev.WrittenBy != "" {
		fields = append(fields, zap.String("written_by", ev.WrittenBy))
	}
	if ev.Err != nil {
		fields = append(fields, zap.String("error", id.scrub.Scrub(ev.Err.Error())))
	}
	switch ev.Kind {
	case session.SharedAdopted:
		// onToken logs the adopted token with its expiry.
		if ce := l.Check(zap.DebugLevel, "read the fleet's API Connect token from the shared session"); ce != nil {
			ce.Write(fields...)
		}
	case session.SharedStored:
		id.shared.refusedOnce.Store(false)
		l.Info("stored the API Connect token in the shared session for the fleet", fields...)
	case session.SharedRefused:
		if id.shared.refusedOnce.CompareAndSwap(false, true) {
			l.Info("the fleet's last login was refused: this proxy does not ask until the fleet's cool-down ends", fields...)
		}
	case session.SharedFallback:
		l.Warn("logging in on this proxy alone, outside the shared session", fields...)
	case session.SharedStorageError:
		l.Warn("shared session storage failing; this proxy keeps its token and logs in alone when it must", fields...)
	case session.SharedUnreadable:
		l.Warn("the shared session record was written with other credentials (or altered): this proxy logs in on its own", fields...)
	case session.SharedRejoined:
		l.Info("shared session storage answers again", fields...)
	}
}

// sharedStatus is an identity's shared_session in GET /apic_auth/status.
type sharedStatus struct {
	Generation uint64     `json:"generation"`
	WrittenBy  string     `json:"written_by,omitempty"`
	WrittenAt  *time.Time `json:"written_at,omitempty"`
	// Local is set while the held token is this proxy's alone.
	Local bool `json:"local"`
	// LockHeld is set while this proxy holds the lock: it logs in or
	// refreshes for the fleet.
	LockHeld bool `json:"lock_held"`
	// Storage is ok or failing; LastError is its last failure.
	Storage       string            `json:"storage"`
	LastError     string            `json:"last_error,omitempty"`
	Adopted       uint64            `json:"adopted"`
	Stored        uint64            `json:"stored"`
	LockWaits     uint64            `json:"lock_waits"`
	Fallbacks     uint64            `json:"fallbacks"`
	StorageErrors uint64            `json:"storage_errors"`
	Unreadable    uint64            `json:"unreadable"`
	StorageOps    map[string]uint64 `json:"storage_ops"`
}

// sharedStatus formats the session's shared status; nil without one.
func (id *identity) sharedStatus(st *session.SharedStatus) *sharedStatus {
	if st == nil || id.shared == nil {
		return nil
	}
	out := &sharedStatus{
		Generation: st.Generation, WrittenBy: st.WrittenBy, WrittenAt: timePtr(st.WrittenAt), Local: st.Local, LockHeld: st.Holding,
		Storage: "ok", Adopted: st.Adopted, Stored: st.Stored, LockWaits: st.LockWaits, Fallbacks: st.Fallbacks,
		StorageErrors: st.StorageErrors, Unreadable: st.Unreadable, StorageOps: make(map[string]uint64, len(shared.Ops)),
	}
	if !st.StorageOK {
		out.Storage = "failing"
	}
	if st.LastError != nil {
		out.LastError = id.scrub.Scrub(st.LastError.Error())
	}
	for _, op := range shared.Ops {
		out.StorageOps[op.String()] = id.shared.store.Count(op)
	}
	return out
}

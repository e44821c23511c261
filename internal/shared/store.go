package shared

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
)

// DefaultTimeout bounds one storage call when Options.Timeout is zero.
const DefaultTimeout = 2 * time.Second

// ErrNoStorage is the error of every call while no storage is set: the
// storage module could not be loaded yet.
var ErrNoStorage = errors.New("the shared session storage is not available yet")

// Options configure a Store.
type Options struct {
	// Storage holds the record; nil until SetStorage when it could not be
	// loaded yet.
	Storage certmagic.Storage
	// Identity and Secrets name the session and open its record.
	Identity Identity
	Secrets  Secrets
	// Timeout bounds one storage call (Load, Store, taking the lock, or
	// Unlock). Default DefaultTimeout. A call that outlives it is left to
	// finish in the background: a lock it takes then is released.
	Timeout time.Duration
}

// Store reads and writes the record of one identity. Its methods are safe
// for concurrent use.
type Store struct {
	storage atomic.Pointer[storageRef]
	sealer  *sealer
	key     string // the record's storage key
	lock    string // the lock's name
	timeout time.Duration
	ops     [numOps]atomic.Uint64
}

type storageRef struct{ certmagic.Storage }

// Op is a kind of storage operation, as Store.Ops counts them.
type Op int

// Storage operations.
const (
	OpLoad Op = iota
	OpStore
	OpLock
	OpUnlock
	numOps
)

// String names the operation for metrics.
func (o Op) String() string {
	switch o {
	case OpLoad:
		return "load"
	case OpStore:
		return "store"
	case OpLock:
		return "lock"
	case OpUnlock:
		return "unlock"
	}
	return "op" + strconv.Itoa(int(o))
}

// Ops lists every Op.
var Ops = []Op{OpLoad, OpStore, OpLock, OpUnlock}

// Prefix is where the records are in the storage.
const Prefix = "apic_auth/sessions/"

// New derives the record's key (argon2id: 46 MiB and a tenth of a second
// or so of one core; BenchmarkNew measures it) and returns a Store.
func New(opts Options) (*Store, error) {
	hash := opts.Identity.Hash()
	s, err := newSealer(hash, opts.Secrets)
	if err != nil {
		return nil, err
	}
	st := &Store{sealer: s, key: Prefix + hash, lock: "apic_auth_session_" + hash, timeout: opts.Timeout}
	if st.timeout <= 0 {
		st.timeout = DefaultTimeout
	}
	st.SetStorage(opts.Storage)
	return st, nil
}

// SetStorage replaces the storage: once it could be loaded, or when a new
// config brings Caddy's global storage anew.
func (s *Store) SetStorage(st certmagic.Storage) {
	if st == nil {
		s.storage.Store(nil)
		return
	}
	s.storage.Store(&storageRef{st})
}

// Key is the record's key in the storage: a hash of the identity.
func (s *Store) Key() string { return s.key }

// Count returns how many operations of kind op were started.
func (s *Store) Count(op Op) uint64 { return s.ops[op].Load() }

func (s *Store) current() (certmagic.Storage, error) {
	ref := s.storage.Load()
	if ref == nil {
		return nil, ErrNoStorage
	}
	return ref.Storage, nil
}

// bounded runs call with a context bounded by timeout (none when 0) and
// ctx, and returns when call does or when the bound passes, whichever
// comes first: a storage module that does not heed its context (a Redis
// client waits for its own read timeout) cannot hold the caller longer.
// late runs, in the background, with the result of a call that returned
// after its caller had gone.
//
// A bound that passes is reported as the storage not answering within
// timeout; the caller's ctx ending is reported as ctx's error.
func bounded[T any](ctx context.Context, timeout time.Duration, call func(context.Context) (T, error), late func(T, error)) (T, error) {
	parent := ctx
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	var mu sync.Mutex
	gone := false
	go func() {
		defer cancel()
		v, err := call(ctx)
		mu.Lock()
		defer mu.Unlock()
		if gone {
			if late != nil {
				late(v, err)
			}
			return
		}
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		select {
		case r := <-done:
			return r.v, r.err
		default:
		}
		gone = true
		var zero T
		if err := parent.Err(); err != nil {
			return zero, err
		}
		return zero, fmt.Errorf("the shared session storage did not answer within %s", timeout)
	}
}

// Load reads the record: nil and no error when there is none, a record
// whose content does not open returns ErrUnreadable (with dead reporting
// whether its clear expiry says nothing in it is usable any more), and any
// other error is the storage's.
func (s *Store) Load(ctx context.Context) (rec *Record, dead bool, err error) {
	st, err := s.current()
	if err != nil {
		return nil, false, err
	}
	s.ops[OpLoad].Add(1)
	data, err := bounded(ctx, s.timeout, func(ctx context.Context) ([]byte, error) { return st.Load(ctx, s.key) }, nil)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("loading the shared session: %w", err)
	}
	rec, lasts, err := s.sealer.open(data)
	if err != nil {
		return nil, !time.Now().Before(lasts), err
	}
	return rec, false, nil
}

// Save stores rec, sealed.
func (s *Store) Save(ctx context.Context, rec *Record) error {
	st, err := s.current()
	if err != nil {
		return err
	}
	data, err := s.sealer.seal(rec)
	if err != nil {
		return fmt.Errorf("sealing the shared session: %v", err)
	}
	s.ops[OpStore].Add(1)
	_, err = bounded(ctx, s.timeout, func(ctx context.Context) (struct{}, error) { return struct{}{}, st.Store(ctx, s.key, data) }, nil)
	if err != nil {
		return fmt.Errorf("storing the shared session: %w", err)
	}
	return nil
}

// Lock takes the identity's lock, waiting while another proxy holds it
// until ctx ends (a storage error ends it too). unlock releases it,
// bounded by the Store's timeout; a lock left unreleased expires by the
// storage module's own rule (Redis: 5 s after its holder stops refreshing
// it; file_system: 10 s).
func (s *Store) Lock(ctx context.Context) (unlock func(), err error) {
	st, err := s.current()
	if err != nil {
		return nil, err
	}
	s.ops[OpLock].Add(1)
	release := func() {
		s.ops[OpUnlock].Add(1)
		_, _ = bounded(context.Background(), s.timeout, func(ctx context.Context) (struct{}, error) { return struct{}{}, st.Unlock(ctx, s.lock) }, nil)
	}
	// The wait is ctx's; the storage's answer once the lock is free is
	// bounded like any call, through the wait's own context.
	_, err = bounded(ctx, 0, func(ctx context.Context) (struct{}, error) { return struct{}{}, st.Lock(ctx, s.lock) },
		func(_ struct{}, err error) {
			if err == nil {
				release() // taken after the caller gave up
			}
		})
	if err != nil {
		return nil, fmt.Errorf("taking the shared session lock: %w", err)
	}
	return sync.OnceFunc(release), nil
}

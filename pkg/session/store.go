// Package session stores per-session state on a worker, keyed by session key,
// and expires sessions that stay idle for too long.
//
// The store is a fixed set of shards, each a map under its own lock, so that
// requests for different sessions rarely contend and the expiry sweep can
// work through one shard at a time.
package session

import (
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// shardCount is the number of independently locked maps. It is a power of
// two so that a hash picks a shard with a mask.
const shardCount = 64

// ErrFull is returned by Update for a new key when the store already holds
// Options.MaxSessions sessions.
var ErrFull = errors.New("session store full")

// Clock is the source of time for last-access stamps and expiry. Tests inject
// a fake one so that expiry is exact.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Options configures a Store. The zero value is a store without a size limit
// whose sessions never expire.
type Options struct {
	// IdleTimeout is how long a session may go without Get or Update before
	// a sweep removes it. Zero disables expiry.
	IdleTimeout time.Duration
	// Clock defaults to the system clock.
	Clock Clock
	// OnExpire, when set, is called once for each key a sweep removes, after
	// the shard lock is released, on the goroutine that runs Sweep or Run.
	// It may call methods of the Store. Delete does not call it.
	OnExpire func(key string)
	// MaxSessions limits the number of sessions. Zero means no limit. When
	// the store is full, Update of a new key returns ErrFull.
	MaxSessions int
}

// Validate reports options that New would otherwise treat as zero.
func (o Options) Validate() error {
	if o.IdleTimeout < 0 {
		return fmt.Errorf("session: invalid IdleTimeout %v: must be 0 (no expiry) or positive",
			o.IdleTimeout)
	}
	if o.MaxSessions < 0 {
		return fmt.Errorf("session: invalid MaxSessions %d: must be 0 (no limit) or positive",
			o.MaxSessions)
	}
	return nil
}

// Store maps session keys to values of type V. It is safe for concurrent use.
//
// Values are handed to Update by pointer under the shard lock, so V may be a
// plain struct. Get returns a copy: a V holding pointers, slices or maps
// shares what they point to with the stored value, and the caller must not
// change that shared memory outside Update.
type Store[V any] struct {
	seed     maphash.Seed
	idle     time.Duration
	clock    Clock
	onExpire func(key string)
	max      int64
	// errFull is built once so that rejecting a session does not allocate.
	errFull error

	// count is the number of stored sessions plus insertions in progress.
	count atomic.Int64

	shards [shardCount]shard[V]
	// next is the shard that Run sweeps on its next tick.
	next atomic.Uint32
}

type shard[V any] struct {
	mu      sync.RWMutex
	entries map[string]*entry[V] // guarded by mu
	// Padding keeps the locks of neighbouring shards on different cache
	// lines, so that contention on one shard does not slow the next.
	_ [64]byte
}

type entry[V any] struct {
	value V
	// lastAccess is the clock's time of the last Get or Update in Unix
	// nanoseconds. Get stores it under the read lock, hence the atomic.
	lastAccess atomic.Int64
}

// New returns an empty Store. A negative IdleTimeout or MaxSessions is
// treated as zero, so call Options.Validate first to reject them instead.
func New[V any](opts Options) *Store[V] {
	s := &Store[V]{
		seed:     maphash.MakeSeed(),
		idle:     max(opts.IdleTimeout, 0),
		clock:    opts.Clock,
		onExpire: opts.OnExpire,
		max:      int64(max(opts.MaxSessions, 0)),
	}
	if s.clock == nil {
		s.clock = systemClock{}
	}
	s.errFull = fmt.Errorf("%w: limit of %d sessions reached (raise MaxSessions or shorten IdleTimeout)",
		ErrFull, s.max)
	for i := range s.shards {
		s.shards[i].entries = make(map[string]*entry[V])
	}
	return s
}

// shardFor picks the shard of key with a per-store random seed, so that keys
// chosen by a peer cannot be steered into one shard.
func (s *Store[V]) shardFor(key string) *shard[V] {
	return &s.shards[maphash.String(s.seed, key)&(shardCount-1)]
}

func (s *Store[V]) now() int64 { return s.clock.Now().UnixNano() }

// Get returns a copy of the value stored for key and marks the session as
// used now.
func (s *Store[V]) Get(key string) (V, bool) {
	sh := s.shardFor(key)
	now := s.now()

	sh.mu.RLock()
	defer sh.mu.RUnlock()
	e, ok := sh.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	e.lastAccess.Store(now)
	return e.value, true
}

// Update runs fn under the shard lock with a pointer to the value stored for
// key, or to a zero value and existed=false when there is none. If fn returns
// true the value is kept (stored, for a new key) and the session is marked as
// used now. If fn returns false an existing session is deleted and a new one
// is not stored. fn must not call methods of the Store.
//
// Update returns ErrFull, without calling fn, when key is new and the store
// holds MaxSessions sessions.
func (s *Store[V]) Update(key string, fn func(v *V, existed bool) bool) error {
	sh := s.shardFor(key)
	now := s.now()

	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.entries[key]; ok {
		if fn(&e.value, true) {
			e.lastAccess.Store(now)
			return nil
		}
		delete(sh.entries, key)
		s.count.Add(-1)
		return nil
	}
	return s.insert(sh, key, now, fn)
}

// insert runs fn on a new zero value and stores it when fn returns true. The
// caller holds sh.mu. The key is cloned so that a key sliced from a larger
// message does not keep the whole message in memory.
func (s *Store[V]) insert(sh *shard[V], key string, now int64, fn func(*V, bool) bool) error {
	if !s.reserve() {
		return s.errFull
	}
	stored := false
	defer func() {
		if !stored {
			s.count.Add(-1) // fn declined or panicked.
		}
	}()

	e := &entry[V]{}
	if !fn(&e.value, false) {
		return nil
	}
	e.lastAccess.Store(now)
	sh.entries[strings.Clone(key)] = e
	stored = true
	return nil
}

// reserve counts one more session unless that would exceed the limit. The
// count never exceeds the limit. When a delete frees the last slot while
// another insert is being rejected, a third insert may see the store as full
// for that instant.
func (s *Store[V]) reserve() bool {
	n := s.count.Add(1)
	if s.max > 0 && n > s.max {
		s.count.Add(-1)
		return false
	}
	return true
}

// Delete removes the session for key and reports whether it existed.
func (s *Store[V]) Delete(key string) bool {
	sh := s.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.entries[key]; !ok {
		return false
	}
	delete(sh.entries, key)
	s.count.Add(-1)
	return true
}

// Len returns the number of sessions, including for an instant an insert that
// Update has started and not finished.
func (s *Store[V]) Len() int { return int(s.count.Load()) }

// Range calls fn for each session, one shard at a time under that shard's
// write lock, until fn returns false. It does not mark sessions as used. fn
// must not call methods of the Store. Sessions added or removed during Range
// may or may not be visited.
func (s *Store[V]) Range(fn func(key string, v *V) bool) {
	for i := range s.shards {
		if !s.rangeShard(&s.shards[i], fn) {
			return
		}
	}
}

func (s *Store[V]) rangeShard(sh *shard[V], fn func(string, *V) bool) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for key, e := range sh.entries {
		if !fn(key, &e.value) {
			return false
		}
	}
	return true
}

package devices

import (
	"sync"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/shardgate/shardgate/pkg/app"
)

// maxObserversPerDevice bounds the observations of one device. A further
// registration gets a plain response without the Observe option, which
// RFC 7641 §4.1 allows for a server that cannot add an observer.
const maxObserversPerDevice = 64

// maxObservers bounds the observations of all devices on one worker, so
// registrations cannot grow its memory without limit; past it a
// registration also gets a plain response.
const maxObservers = 1 << 17

// observer is one observation of a device's state resource.
type observer struct {
	obs app.Observer
	// token is a copy of the registration request's token, which every
	// notification repeats (RFC 7641 §4.2).
	token []byte
}

// ended reports whether the observation's Done channel is closed.
func (o *observer) ended() bool {
	select {
	case <-o.obs.Done():
		return true
	default:
	}
	return false
}

// notify sends the state in d to every observer of key and drops those whose
// observation has ended or whose Notify fails. It runs after the store lock
// is released, so two concurrent changes may notify out of order. The Observe
// value lets the client discard the older one (RFC 7641 §3.4).
//
// NOTE: Notify is called on the request's goroutine, so a slow Observer
// delays the response to the telemetry or config request.
func (a *App) notify(key, id string, d *device) {
	list := a.observers.snapshot(key)
	if list == nil {
		return
	}
	body, err := stateBody(id, d, a.worker)
	if err != nil {
		a.log.Error().Err(err).Str("key", key).Msg("device state encoding failed")
		return
	}
	for _, o := range list {
		if o.ended() {
			a.observers.remove(key, o)
			continue
		}
		if err := a.notifyOne(o, d.version, body); err != nil {
			a.observers.remove(key, o)
			a.log.Debug().Err(err).Str("key", key).Msg("observer dropped")
		}
	}
}

func (a *App) notifyOne(o *observer, version uint32, body []byte) error {
	p := &response{
		code:       codes.Content,
		token:      o.token,
		payload:    body,
		format:     message.AppJSON,
		hasFormat:  true,
		observe:    version,
		hasObserve: true,
	}
	msg, err := p.encode()
	if err != nil {
		return err
	}
	return o.obs.Notify(msg)
}

// registry holds the observers of observed devices by store key. Devices
// without observers have no entry, so the registry stays small. It is safe
// for concurrent use.
//
// NOTE: Observers stay when their device expires from the store, so that a
// device that returns is still observed. They are dropped only when their
// observation ends, and there is no cap on the total across devices.
type registry struct {
	mu sync.RWMutex
	// byKey maps a store key to its observers; no entry is empty.
	byKey map[string][]*observer
	// total counts the observers in byKey.
	total int
}

func newRegistry() *registry {
	return &registry{byKey: make(map[string][]*observer)}
}

// add registers o for key. It returns false when key already has the
// maximum number of observers.
func (r *registry) add(key string, o *observer) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := r.byKey[key]
	if len(list) >= maxObserversPerDevice || r.total >= maxObservers {
		return false
	}
	r.byKey[key] = append(list, o)
	r.total++
	return true
}

// remove drops o from key's observers, if it is there.
func (r *registry) remove(key string, o *observer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := r.byKey[key]
	for i, cur := range list {
		if cur != o {
			continue
		}
		last := len(list) - 1
		copy(list[i:], list[i+1:])
		list[last] = nil // so the dropped observer can be collected
		list = list[:last]
		r.total--
		break
	}
	if len(list) == 0 {
		delete(r.byKey, key)
		return
	}
	r.byKey[key] = list
}

// snapshot returns a copy of key's observers, or nil, so that notifications
// are sent without holding the lock.
func (r *registry) snapshot(key string) []*observer {
	r.mu.RLock()
	defer r.mu.RUnlock()
	list := r.byKey[key]
	if len(list) == 0 {
		return nil
	}
	return append([]*observer(nil), list...)
}

// prune drops every observer whose observation has ended, so that a device
// that stops sending telemetry does not keep them.
func (r *registry) prune() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, list := range r.byKey {
		kept := list[:0]
		for _, o := range list {
			if !o.ended() {
				kept = append(kept, o)
			}
		}
		r.total -= len(list) - len(kept)
		clear(list[len(kept):])
		if len(kept) == 0 {
			delete(r.byKey, key)
			continue
		}
		r.byKey[key] = kept
	}
}

// count returns the number of observers of key.
func (r *registry) count(key string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byKey[key])
}

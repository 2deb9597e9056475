package coap

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/plgd-dev/go-coap/v3/message"
)

// Observe (RFC 7641): the gateway keeps each registration, forwards it to
// the owning worker with an observation id, and relays the worker's
// notifications to the device under the registration's token.

// observation is one registration held by this gateway.
type observation struct {
	id    uint64
	from  netip.AddrPort
	token string
	uri   uint64
	// key and req are copies of the session key and the forwarded
	// registration, kept to register again when the key's owner changes.
	key []byte
	req []byte
	// worker is the link address of the worker holding the registration;
	// guarded by observeTable.mu.
	worker string
	sent   atomic.Uint32
	// seq is the last Observe value sent to the device. The gateway numbers
	// notifications itself, so the sequence keeps rising when the
	// observation moves to a worker that counts from its own start
	// (RFC 7641 §3.4, §4.4: 24-bit values).
	seq atomic.Uint32
}

type tokenKey struct {
	addr  netip.AddrPort
	token string
}

// Limits on registrations, so that they cannot grow the gateway's memory
// without bound. Past either, a registration is forwarded as a plain GET
// and the device gets a response without Observe (RFC 7641 §4.1).
const (
	maxObservations         = 1 << 16
	maxObservationsPerPeer  = 64
	maxObservedRequestBytes = 2048
)

// observeTable indexes registrations by id and by device token. It is safe
// for concurrent use.
type observeTable struct {
	next atomic.Uint64
	mu   sync.Mutex
	// byID and byToken always hold the same registrations; perPeer counts
	// them by device endpoint.
	byID    map[uint64]*observation
	byToken map[tokenKey]*observation
	perPeer map[netip.AddrPort]int
}

func newObserveTable() *observeTable {
	return &observeTable{byID: make(map[uint64]*observation), byToken: make(map[tokenKey]*observation),
		perPeer: make(map[netip.AddrPort]int)}
}

// add stores o, returning the registration it replaces (same device and
// token, RFC 7641 §4.1), if any. ok is false when a limit is reached.
func (t *observeTable) add(o *observation) (old *observation, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := tokenKey{o.from, o.token}
	old = t.byToken[k]
	if old == nil && (len(t.byID) >= maxObservations || t.perPeer[o.from] >= maxObservationsPerPeer) {
		return nil, false
	}
	if old != nil {
		delete(t.byID, old.id)
		t.perPeer[o.from]--
	}
	t.byID[o.id] = o
	t.byToken[k] = o
	t.perPeer[o.from]++
	return old, true
}

func (t *observeTable) get(id uint64) *observation {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

func (t *observeTable) byDevice(from netip.AddrPort, token []byte) *observation {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byToken[tokenKey{from, string(token)}]
}

// remove deletes registration id and returns it, or nil.
func (t *observeTable) remove(id uint64) *observation {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.byID[id]
	if o == nil {
		return nil
	}
	delete(t.byID, id)
	if k := (tokenKey{o.from, o.token}); t.byToken[k] == o {
		delete(t.byToken, k)
	}
	if t.perPeer[o.from]--; t.perPeer[o.from] <= 0 {
		delete(t.perPeer, o.from)
	}
	return o
}

func (t *observeTable) setWorker(o *observation, worker string) {
	t.mu.Lock()
	o.worker = worker
	t.mu.Unlock()
}

func (t *observeTable) workerOf(o *observation) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return o.worker
}

func (t *observeTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// all returns a snapshot of the registrations.
func (t *observeTable) all() []*observation {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*observation, 0, len(t.byID))
	for _, o := range t.byID {
		out = append(out, o)
	}
	return out
}

// observeRequest handles the Observe option of a GET: 0 registers (and
// returns the id to forward with), 1 deregisters (RFC 7641 §3.6).
func (e *Endpoint) observeRequest(c *call, m *message.Message, key, fwd []byte) uint64 {
	v, ok := uintOption(m.Options, optObserve)
	if !ok {
		return 0
	}
	if v == 1 {
		if o := e.observes.byDevice(c.from, m.Token); o != nil {
			e.endObservation(o.id, true)
		}
		return 0
	}
	if v != 0 || len(fwd) > maxObservedRequestBytes {
		return 0
	}
	o := &observation{
		id:    e.observes.next.Add(1),
		from:  c.from,
		token: string(m.Token),
		uri:   uriHash(m),
		key:   append([]byte(nil), key...),
		req:   append([]byte(nil), fwd...),
	}
	old, ok := e.observes.add(o)
	if !ok {
		e.counts.observeFull.Inc()
		return 0
	}
	if old != nil {
		e.opts.Forwarder.CancelObserve(e.observes.workerOf(old), old.key, old.id)
	}
	c.obs = o
	c.uri = o.uri
	e.counts.observe.Inc()
	return o.id
}

// withObserve returns a copy of the encoded notification msg with its
// Observe option set to seq.
func withObserve(msg []byte, seq uint32) ([]byte, bool) {
	var m message.Message
	m.Options = make(message.Options, 0, maxOptions)
	if err := decode(msg, &m); err != nil {
		return nil, false
	}
	opts := replaceOptions(m.Options, []message.OptionID{optObserve},
		message.Option{ID: optObserve, Value: uintValue(seq)})
	return appendMessage(nil, uint8(m.Type), m.Code, uint16(m.MessageID), m.Token, opts, m.Payload), true
}

// observeValue returns the Observe option of an encoded message.
func observeValue(b []byte) (uint32, bool) {
	var m message.Message
	m.Options = make(message.Options, 0, maxOptions)
	if err := decode(b, &m); err != nil {
		return 0, false
	}
	return uintOption(m.Options, optObserve)
}

// endObservation removes registration id. With cancel set, it also
// cancels the observation at its worker.
func (e *Endpoint) endObservation(id uint64, cancel bool) {
	o := e.observes.remove(id)
	if o == nil {
		return
	}
	e.counts.observeEnd.Inc()
	if cancel {
		e.opts.Forwarder.CancelObserve(e.observes.workerOf(o), o.key, o.id)
	}
}

// confirmableEvery makes every Nth notification a CON, so that a device
// that has gone away is noticed (RFC 7641 §4.5).
const confirmableEvery = 16

// relay sends a notification. With BatchResponses it joins the batch of the
// link read that delivered it, behind the responses delivered earlier in
// that read, so a registration's response reaches the device before the
// first notification.
func (e *Endpoint) relay(b []byte, to netip.AddrPort) {
	if !e.opts.BatchResponses {
		e.send(b, to)
		return
	}
	e.linkMu.Lock()
	e.linkOut.add(b, to)
	e.linkMu.Unlock()
}

// Notify relays a worker's notification for observation id to its device.
// msg is an encoded response; it is valid only during the call. Notify does
// not block.
func (e *Endpoint) Notify(id uint64, msg []byte) {
	o := e.observes.get(id)
	if o == nil {
		e.counts.notifyStale.Inc()
		return
	}
	if len(msg) < headerLen || int(msg[0]&0xF) != len(o.token) {
		e.counts.badGateway.Inc()
		return
	}
	out, ok := withObserve(msg, o.seq.Add(1)&0xFFFFFF)
	if !ok {
		e.counts.badGateway.Inc()
		return
	}
	if len(out) > e.opts.BlockSize+64 {
		c := &call{e: e, from: o.from, token: []byte(o.token), uri: o.uri}
		if b, ok := e.blockResponse(c, out); ok {
			out = b
		}
	}
	e.counts.notify.Inc()
	final := out[1]>>5 != 2
	mid := e.nextMID()
	n := o.sent.Add(1)
	if n%confirmableEvery == 0 {
		setHeader(out, typeCON, mid)
		e.trackConfirmable(o.from, mid, out, id)
	} else {
		setHeader(out, typeNON, mid)
		e.out.remember(o.from, mid, id)
	}
	e.relay(out, o.from)
	if final {
		// A notification with an error code ends the observation
		// (RFC 7641 §3.2).
		e.endObservation(id, false)
	}
}

// abandonObservation ends an observation that no worker holds any more and
// tells the device with a final 5.03 notification, so that it registers
// again (RFC 7641 §3.2: a non-2.xx notification ends the observation).
func (e *Endpoint) abandonObservation(o *observation) {
	if e.observes.remove(o.id) == nil {
		return
	}
	e.counts.observeEnd.Inc()
	opts := message.Options{{ID: optMaxAge, Value: []byte{1}}}
	msg := appendMessage(nil, typeNON, codeUnavailable, e.nextMID(), []byte(o.token), opts, nil)
	e.send(msg, o.from)
}

// Reroute registers again every observation whose key now belongs to
// another worker, so notifications keep coming after a scaling event.
// ownerOf returns the current owner's link address for a key.
func (e *Endpoint) Reroute(ownerOf func(key []byte) string) {
	for _, o := range e.observes.all() {
		old := e.observes.workerOf(o)
		if owner := ownerOf(o.key); owner == "" || owner == old {
			continue
		}
		id := o.id
		worker, err := e.opts.Forwarder.Forward(o.key, o.req, id, ResponderFunc(func(resp []byte, err error) {
			if err != nil || !hasObserve(resp) {
				e.abandonObservation(o)
			}
		}))
		if err != nil {
			// The move failed (for example "overloaded" when thousands move
			// at once): the device is told to register again.
			e.counts.observeLost.Inc()
			e.abandonObservation(o)
			e.opts.Forwarder.CancelObserve(old, o.key, id)
			continue
		}
		e.opts.Forwarder.CancelObserve(old, o.key, id)
		e.observes.setWorker(o, worker)
		e.counts.observeMoved.Inc()
	}
}

package coap

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// outMsg is a CON the gateway sent and retransmits until it is acknowledged
// (RFC 7252 §4.2), or a NON notification remembered so that an RST to it
// can be matched to its observation.
type outMsg struct {
	b       []byte // nil for a remembered NON
	sends   int
	timeout time.Duration
	next    time.Time
	obsID   uint64
}

const (
	// maxOutbound bounds the messages awaiting ACK or remembered for RST.
	maxOutbound = 1 << 16
	// rememberNON is how long a NON notification's Message ID is kept.
	rememberNON = 30 * time.Second
)

// outbound tracks messages the gateway sent. It is safe for concurrent use.
type outbound struct {
	mu sync.Mutex
	// m is bounded by maxOutbound.
	m map[exKey]*outMsg
}

func newOutbound() *outbound { return &outbound{m: make(map[exKey]*outMsg)} }

// sendConfirmable sends a CON and schedules its retransmissions. obsID links
// a notification to its observation.
func (e *Endpoint) sendConfirmable(to netip.AddrPort, mid uint16, b []byte, obsID uint64) {
	e.trackConfirmable(to, mid, b, obsID)
	e.send(b, to)
}

// trackConfirmable schedules the retransmissions of a CON that the caller
// sends itself.
func (e *Endpoint) trackConfirmable(to netip.AddrPort, mid uint16, b []byte, obsID uint64) {
	// The first timeout is random in [ACK_TIMEOUT, ACK_TIMEOUT*ACK_RANDOM_FACTOR].
	t := e.opts.AckTimeout + time.Duration(rand.Float64()*(AckRandomFactor-1)*float64(e.opts.AckTimeout))
	msg := &outMsg{b: append([]byte(nil), b...), sends: 1, timeout: t, next: time.Now().Add(t), obsID: obsID}
	e.out.mu.Lock()
	if len(e.out.m) < maxOutbound {
		e.out.m[exKey{to, mid}] = msg
	} else {
		e.counts.outboundFull.Inc()
	}
	e.out.mu.Unlock()
}

// remember keeps a NON notification's Message ID for RST matching.
func (o *outbound) remember(to netip.AddrPort, mid uint16, obsID uint64) {
	o.mu.Lock()
	if len(o.m) < maxOutbound {
		o.m[exKey{to, mid}] = &outMsg{obsID: obsID, next: time.Now().Add(rememberNON)}
	}
	o.mu.Unlock()
}

// acknowledge stops retransmitting the message an ACK matches.
func (o *outbound) acknowledge(from netip.AddrPort, mid uint16) {
	o.mu.Lock()
	if msg := o.m[exKey{from, mid}]; msg != nil && msg.b != nil {
		delete(o.m, exKey{from, mid})
	}
	o.mu.Unlock()
}

// reset removes the message an RST matches and returns its observation.
func (o *outbound) reset(from netip.AddrPort, mid uint16) (uint64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	msg := o.m[exKey{from, mid}]
	if msg == nil {
		return 0, false
	}
	delete(o.m, exKey{from, mid})
	return msg.obsID, msg.obsID != 0
}

// due collects retransmissions and expiries at now. The caller sends resend
// and ends the observations in gaveUp.
func (o *outbound) due(now time.Time, resend func(to netip.AddrPort, b []byte), gaveUp func(obsID uint64)) {
	var lost []uint64
	o.mu.Lock()
	for k, msg := range o.m {
		if now.Before(msg.next) {
			continue
		}
		if msg.b == nil || msg.sends > MaxRetransmit {
			delete(o.m, k)
			if msg.b != nil && msg.obsID != 0 {
				lost = append(lost, msg.obsID)
			}
			continue
		}
		msg.sends++
		msg.timeout *= 2
		msg.next = now.Add(msg.timeout)
		resend(k.addr, msg.b)
	}
	o.mu.Unlock()
	for _, id := range lost {
		gaveUp(id)
	}
}

// timers sends Empty ACKs for slow requests and retransmits CONs.
func (e *Endpoint) timers() {
	defer e.wg.Done()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	ack := make([]byte, 0, headerLen)
	lastSweep := time.Now()
	for {
		select {
		case <-e.stop:
			return
		case now := <-tick.C:
			e.exchanges.overdue(now.Add(-e.opts.PiggybackWait), func(ex *exchange) {
				ex.state = stateAcked
				e.counts.emptyAck.Inc()
				e.send(empty(ack, typeACK, ex.key.mid), ex.key.addr)
			})
			e.out.due(now, func(to netip.AddrPort, b []byte) {
				e.counts.retransmit.Inc()
				e.send(b, to)
			}, func(id uint64) { e.endObservation(id, true) })
			if now.Sub(lastSweep) > 10*time.Second {
				lastSweep = now
				e.blocks.mu.Lock()
				e.blocks.sweep(now)
				e.blocks.mu.Unlock()
			}
		}
	}
}

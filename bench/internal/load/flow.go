package load

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardgate/shardgate/bench/internal/hist"
)

// slot is one outstanding request position. Its identity travels in the
// request (CoAP token, echo payload, Diameter Hop-by-Hop Identifier) as the
// slot index and a generation that changes with each new request, so a late
// or duplicated response can never be matched to the wrong request.
type slot struct {
	busy     bool
	gen      uint32
	intended int64 // scheduled send time, ns since the run's base
	sent     int64 // first transmission, ns since base
	deadline int64 // next retransmission or loss decision, ns since base
	timeout  int64 // current retransmission timeout, ns
	tries    int   // retransmissions so far
	acked    bool  // CoAP: an empty ACK arrived, the response is separate
	mid      uint16
	buf      []byte // the encoded request, kept for retransmission
}

// proto builds requests for one protocol. Implementations are called with
// the flow's mutex held.
type proto interface {
	// fill encodes a new request for slot i into s.buf; s.gen is already new.
	fill(f *flow, i int, s *slot)
	// retransmits reports whether an unanswered request is sent again
	// (CoAP CON) rather than counted lost when its deadline passes.
	retransmits() bool
}

// wire sends encoded messages for a flow. Calls hold the flow's mutex.
type wire interface {
	queue(b []byte)
	flush() error
}

// flow is one socket or connection with its slots. The mutex guards all
// fields below it. The receive loop, the timer loop and the open-loop pacer
// each take it for one batch of work.
type flow struct {
	r     *runner
	id    int
	proto proto
	wire  wire
	// done counts responses in the measured window, read by the progress line.
	done atomic.Uint64

	mu     sync.Mutex
	slots  []slot
	free   []int // open loop: idle slot indexes
	rng    *rand.Rand
	mid    uint16
	next   int64 // open loop: intended time of the next request
	issued uint64
	st     stats
	closed bool
}

// stats are one flow's counters; the runner merges them at the end.
type stats struct {
	sent, completed, lost, retransmits uint64
	// noRxStamp counts datagrams read from a socket with SO_TIMESTAMPNS on
	// that carried no kernel timestamp and were stamped at the read.
	noRxStamp             uint64
	outcomes              map[string]uint64
	latency, service, lag hist.Histogram
	// readLatency runs from the intended send time to the reader
	// goroutine's read, so it adds the generator's wakeup to latency.
	readLatency hist.Histogram
}

func (st *stats) merge(o *stats) {
	st.sent += o.sent
	st.completed += o.completed
	st.lost += o.lost
	st.retransmits += o.retransmits
	for k, v := range o.outcomes {
		st.outcomes[k] += v
	}
	st.latency.Merge(&o.latency)
	st.service.Merge(&o.service)
	st.lag.Merge(&o.lag)
	st.noRxStamp += o.noRxStamp
	st.readLatency.Merge(&o.readLatency)
}

// arrival is when a response reached the generator, in ns since the run's
// base.
type arrival struct {
	// stamp is the kernel's receive timestamp on the socket, or read where
	// there is none. Latency and service latency end here.
	stamp int64
	// read is when the reader goroutine got the response. It is the
	// current time for the flow's timers and next sends.
	read int64
}

// readNow returns an arrival stamped at the read time now.
func readNow(now int64) arrival { return arrival{stamp: now, read: now} }

func newFlow(r *runner, id, nslots int, p proto) *flow {
	f := &flow{
		r:     r,
		id:    id,
		proto: p,
		slots: make([]slot, nslots),
		rng:   rand.New(rand.NewPCG(uint64(id)+1, 0x5eed)),
		mid:   uint16(id * 7919),
		st:    stats{outcomes: map[string]uint64{}},
	}
	for i := range f.slots {
		f.free = append(f.free, i)
	}
	return f
}

// issue starts a new request in slot i, scheduled for intended.
func (f *flow) issue(i int, intended, now int64) {
	s := &f.slots[i]
	s.gen++
	s.busy = true
	s.intended = intended
	s.sent = now
	s.tries = 0
	s.acked = false
	s.timeout = f.r.firstTimeout(f.rng)
	s.deadline = now + s.timeout
	f.issued++
	f.proto.fill(f, i, s)
	f.wire.queue(s.buf)
	if f.r.inWindow(now) {
		f.st.sent++
		if f.r.cfg.Rate > 0 {
			f.st.lag.Record(time.Duration(now - intended))
		}
	}
}

// complete records the response to slot i and, in closed loop, reuses the
// slot at once. Latency ends at at.stamp, and the slot's next request starts
// from at.read. It ignores responses whose generation is stale.
func (f *flow) complete(i int, gen uint32, outcome string, at arrival) {
	if i < 0 || i >= len(f.slots) {
		f.count("unmatched")
		return
	}
	s := &f.slots[i]
	if !s.busy || s.gen != gen {
		f.count("stale")
		return
	}
	if f.r.inWindow(at.read) {
		f.st.completed++
		f.done.Add(1)
		f.count(outcome)
		f.st.latency.Record(time.Duration(at.stamp - s.intended))
		f.st.service.Record(time.Duration(at.stamp - s.sent))
		f.st.readLatency.Record(time.Duration(at.read - s.intended))
	}
	f.release(i, at.read)
}

// release frees slot i; in closed loop it starts the next request at once.
func (f *flow) release(i int, now int64) {
	f.slots[i].busy = false
	if f.r.cfg.Rate == 0 && f.canSend(now) {
		f.issue(i, now, now)
		return
	}
	f.free = append(f.free, i)
}

// canSend reports whether a new request may start at t: the sending phase
// has not ended and the flow's share of MaxRequests is not used up.
func (f *flow) canSend(t int64) bool {
	return f.r.sending(t) && !f.closed && f.issued < f.r.maxPerFlow
}

func (f *flow) count(outcome string) {
	if outcome != "" {
		f.st.outcomes[outcome]++
	}
}

// expire retransmits or gives up on every request whose deadline passed. A
// CON request is given up one doubled timeout after its last retransmission
// (RFC 7252 §4.2), and one LossTimeout after an empty ACK.
func (f *flow) expire(now int64) {
	for i := range f.slots {
		s := &f.slots[i]
		if !s.busy || now < s.deadline {
			continue
		}
		if f.proto.retransmits() && !s.acked && s.tries < f.r.cfg.MaxRetransmit {
			s.tries++
			s.timeout *= 2
			s.deadline = now + s.timeout
			f.wire.queue(s.buf)
			if f.r.inWindow(now) {
				f.st.retransmits++
			}
			continue
		}
		if f.r.inWindow(now) {
			f.st.lost++
		}
		f.release(i, now)
	}
}

// tick runs expire and sends what it queued.
func (f *flow) tick(now int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expire(now)
	return f.wire.flush()
}

// start sends the first closed-loop window of requests.
func (f *flow) start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.r.now()
	if f.r.cfg.Rate > 0 {
		// Spread the flows' schedules over one interval so that they do not
		// send in step.
		f.next = now + f.r.interval()*int64(f.id)/int64(len(f.r.flows))
		return nil
	}
	for len(f.free) > 0 && f.canSend(now) {
		f.issue(f.free[len(f.free)-1], now, now)
		f.free = f.free[:len(f.free)-1]
	}
	return f.wire.flush()
}

// pace sends every open-loop request whose intended time has come, while
// slots are free, and returns the intended time of the next request. That
// time is in the past when no slot was free. Latency counts from the
// intended time, so a request that waits for a slot or for the pacer shows
// that wait.
func (f *flow) pace(now int64, interval int64) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.next <= now && len(f.free) > 0 && f.canSend(f.next) {
		i := f.free[len(f.free)-1]
		f.free = f.free[:len(f.free)-1]
		f.issue(i, f.next, now)
		f.next += interval
	}
	return f.next, f.wire.flush()
}

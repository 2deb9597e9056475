package coap

import (
	"net/netip"
	"sync"
	"time"
)

// exKey identifies a message exchange: the peer's endpoint and the Message
// ID it chose (RFC 7252 §4.5).
type exKey struct {
	addr netip.AddrPort
	mid  uint16
}

func (k exKey) shard() int {
	h := uint32(k.mid)*0x9E3779B1 ^ uint32(k.addr.Port())*0x85EBCA77
	a := k.addr.Addr().As16()
	h ^= uint32(a[12])<<24 | uint32(a[13])<<16 | uint32(a[14])<<8 | uint32(a[15])
	h ^= h >> 15
	return int(h % exShards)
}

// Exchange states of a request.
const (
	// statePending: forwarded, nothing sent to the device yet.
	statePending uint8 = iota
	// stateAcked: an Empty ACK went out, so the response must be a separate CON.
	stateAcked
	// stateDone: the response went out.
	stateDone
)

// exchange is one request from a device, kept for duplicate detection.
// Its fields are guarded by the lock of the cache shard that holds it,
// except call, which the request's reader and then its response callback
// use in turn. Exchanges are recycled (see expire), so nothing may touch
// one after its state became stateDone except under the shard lock.
type exchange struct {
	key   exKey
	typ   uint8
	state uint8
	// inPending is set while the exchange is on its shard's pending list.
	inPending bool
	created   time.Time
	// reply is the piggybacked response, resent for a duplicate CON. It
	// aliases replyBuf when it fits (a 2.04 and other short replies), else
	// bigReply, a pooled buffer returned when the exchange is recycled.
	// The inline buffer is kept small: 256 bytes cost about 20% of the
	// CoAP throughput in `make run` with 262144 exchanges held.
	reply    []byte
	replyBuf [96]byte
	bigReply *[bigReplySize]byte
	// call is the forwarding state. The reader sets it before the request
	// is forwarded, and the response callback reads it afterwards. It
	// shares the exchange's allocation.
	call call
}

const exShards = 64

type exShard struct {
	mu sync.Mutex
	// m maps each remembered exchange to its state.
	m map[exKey]*exchange
	// fifo lists exchanges in creation order for expiry; it may contain
	// entries already removed from m.
	fifo []*exchange
	head int
	// pending lists CON exchanges in creation order for the Empty ACK timer.
	pending []*exchange
}

// exchangeCache remembers recent exchanges for EXCHANGE_LIFETIME, bounded in
// count: when a shard is full its oldest exchange is forgotten early. It is
// safe for concurrent use.
type exchangeCache struct {
	lifetime time.Duration
	perShard int
	shards   [exShards]exShard
	// evicted counts exchanges forgotten before their lifetime ended.
	evicted func()
}

func newExchangeCache(lifetime time.Duration, capacity int, evicted func()) *exchangeCache {
	c := &exchangeCache{lifetime: lifetime, perShard: max(capacity/exShards, 16), evicted: evicted}
	for i := range c.shards {
		c.shards[i].m = make(map[exKey]*exchange)
	}
	return c
}

// exchanges recycles exchange records, and bigReplies their buffers for
// replies longer than replyBuf, so that a request costs no allocation in
// steady state.
var (
	exchanges  = sync.Pool{New: func() any { return new(exchange) }}
	bigReplies = sync.Pool{New: func() any { return new([bigReplySize]byte) }}
)

// bigReplySize holds any piggybacked reply: larger bodies go block-wise in
// blocks of at most 1024 bytes, plus header, token and options.
const bigReplySize = 1280

// keepReply stores resp as ex's reply. The exchange's shard lock is held.
func (ex *exchange) keepReply(resp []byte) {
	switch {
	case len(resp) <= len(ex.replyBuf):
		ex.reply = append(ex.replyBuf[:0], resp...)
	case len(resp) <= bigReplySize:
		if ex.bigReply == nil {
			ex.bigReply = bigReplies.Get().(*[bigReplySize]byte)
		}
		ex.reply = append(ex.bigReply[:0], resp...)
	default:
		ex.reply = append([]byte(nil), resp...)
	}
}

// begin returns a new exchange for k. When k is a duplicate, it calls onDup
// with the existing exchange under the shard lock instead and returns nil.
// The caller reads and changes a new exchange's state through with.
func (c *exchangeCache) begin(k exKey, typ uint8, now time.Time, onDup func(ex *exchange)) *exchange {
	s := &c.shards[k.shard()]
	s.mu.Lock()
	defer s.mu.Unlock()
	if ex, ok := s.m[k]; ok && now.Sub(ex.created) < c.lifetime {
		onDup(ex)
		return nil
	}
	c.expire(s, now)
	ex := exchanges.Get().(*exchange)
	*ex = exchange{key: k, typ: typ, created: now}
	s.m[k] = ex
	s.fifo = append(s.fifo, ex)
	if typ == typeCON {
		ex.inPending = true
		s.pending = append(s.pending, ex)
	}
	return ex
}

// expire drops expired exchanges and, past capacity, the oldest ones.
// s.mu must be held.
func (c *exchangeCache) expire(s *exShard, now time.Time) {
	for s.head < len(s.fifo) {
		old := s.fifo[s.head]
		full := len(s.m) >= c.perShard
		if !full && now.Sub(old.created) < c.lifetime {
			break
		}
		s.fifo[s.head] = nil
		s.head++
		if cur, ok := s.m[old.key]; ok && cur == old {
			delete(s.m, old.key)
			if full && c.evicted != nil {
				c.evicted()
			}
		}
		// Off the map, the FIFO and the pending list, with its response
		// sent: nothing refers to it any more.
		if old.state == stateDone && !old.inPending {
			if old.bigReply != nil {
				bigReplies.Put(old.bigReply)
				old.bigReply = nil
			}
			old.reply = nil
			exchanges.Put(old)
		}
	}
	if s.head > 1024 && s.head*2 > len(s.fifo) {
		n := copy(s.fifo, s.fifo[s.head:])
		clear(s.fifo[n:])
		s.fifo = s.fifo[:n]
		s.head = 0
	}
}

// with runs fn on ex under its shard's lock.
func (c *exchangeCache) with(ex *exchange, fn func(ex *exchange)) {
	s := &c.shards[ex.key.shard()]
	s.mu.Lock()
	fn(ex)
	s.mu.Unlock()
}

// forgetLocked removes ex so that a retransmission of its request is
// handled as new. s.mu of ex's shard must be held.
func (c *exchangeCache) forgetLocked(ex *exchange) {
	s := &c.shards[ex.key.shard()]
	if cur, ok := s.m[ex.key]; ok && cur == ex {
		delete(s.m, ex.key)
	}
}

// overdue calls fn, under the shard lock, for each CON exchange created
// before cutoff that is still pending, and stops tracking it.
func (c *exchangeCache) overdue(cutoff time.Time, fn func(ex *exchange)) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n := 0
		for n < len(s.pending) && !s.pending[n].created.After(cutoff) {
			ex := s.pending[n]
			ex.inPending = false
			if ex.state == statePending {
				fn(ex)
			}
			n++
		}
		if n > 0 {
			rest := copy(s.pending, s.pending[n:])
			clear(s.pending[rest:])
			s.pending = s.pending[:rest]
		}
		s.mu.Unlock()
	}
}

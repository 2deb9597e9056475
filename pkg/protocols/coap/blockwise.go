package coap

import (
	"net/netip"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Block-wise transfers (RFC 7959) end at the gateway: it assembles Block1
// request bodies before forwarding and splits large responses into Block2
// blocks, so workers see whole bodies only.

const (
	// maxTransfers bounds concurrent Block1 uploads and cached Block2 bodies.
	maxTransfers = 4096
	// maxUploadsPerPeer bounds one device endpoint's concurrent uploads, so
	// that one source cannot take every upload slot.
	maxUploadsPerPeer = 8
	// blockLifetime is how long an idle transfer or cached body is kept.
	blockLifetime = 60 * time.Second
)

type blockKey struct {
	addr netip.AddrPort
	uri  uint64
}

type upload struct {
	body    []byte
	szx     uint8
	updated time.Time
	// done is set once the last block arrived. The upload is kept until it
	// expires or its slot is needed, so that a retransmitted last block is
	// forwarded again, for example after its worker was lost.
	done bool
}

type cachedBody struct {
	// head is the response without payload: its code and options.
	code    codes.Code
	opts    message.Options
	payload []byte
	updated time.Time
}

// blockStore holds Block1 uploads and Block2 bodies. It is safe for
// concurrent use.
type blockStore struct {
	mu sync.Mutex
	// uploads and bodies are bounded by maxTransfers each.
	uploads map[blockKey]*upload
	bodies  map[blockKey]*cachedBody
}

func newBlockStore() *blockStore {
	return &blockStore{uploads: make(map[blockKey]*upload), bodies: make(map[blockKey]*cachedBody)}
}

// sweep drops entries idle past blockLifetime. s.mu must be held.
func (s *blockStore) sweep(now time.Time) {
	for k, u := range s.uploads {
		if now.Sub(u.updated) > blockLifetime {
			delete(s.uploads, k)
		}
	}
	for k, b := range s.bodies {
		if now.Sub(b.updated) > blockLifetime {
			delete(s.bodies, k)
		}
	}
}

// roomFor reports whether from may start another upload, after dropping
// idle ones when the store is full. s.mu must be held.
// Finished uploads give way first and count against no limit.
func (s *blockStore) roomFor(from netip.AddrPort, now time.Time) bool {
	if len(s.uploads) >= maxTransfers {
		for k, u := range s.uploads {
			if u.done {
				delete(s.uploads, k)
			}
		}
		s.sweep(now)
		if len(s.uploads) >= maxTransfers {
			return false
		}
	}
	n := 0
	for k, u := range s.uploads {
		if k.addr == from && !u.done {
			n++
		}
	}
	return n < maxUploadsPerPeer
}

// block1 takes one Block1 block. It returns the whole body and true on the
// last block; otherwise it has answered the device itself.
func (e *Endpoint) block1(ex *exchange, c *call, b block, sc *scratch) ([]byte, bool) {
	m := &sc.msg
	if b.szx == 7 {
		e.answer(ex, sc, codeBadRequest, nil, []byte("Block1 SZX 7 is reserved"))
		return nil, false
	}
	if b.more && len(m.Payload) != b.size() {
		e.answer(ex, sc, codeBadRequest, nil, []byte("Block1 block shorter than its SZX"))
		return nil, false
	}
	k := blockKey{c.from, uriHash(m)}
	now := time.Now()
	s := e.blocks
	s.mu.Lock()
	u := s.uploads[k]
	if b.num == 0 {
		if u == nil && !s.roomFor(c.from, now) {
			s.mu.Unlock()
			e.counts.uploadsFull.Inc()
			e.answer(ex, sc, codeUnavailable, message.Options{{ID: optMaxAge, Value: []byte{5}}},
				[]byte("too many block-wise uploads"))
			return nil, false
		}
		u = &upload{szx: b.szx}
		s.uploads[k] = u
	}
	if u != nil && u.done && b.num > 0 && !b.more && int(b.num)*b.size()+len(m.Payload) == len(u.body) {
		// The last block again: the device retransmitted it because no
		// response came, so the whole body goes out again.
		u.updated = now
		s.mu.Unlock()
		e.counts.blockRepeat.Inc()
		final := b
		c.block1 = &final
		return u.body, true
	}
	// Block NUM counts blocks of the current size; a device may lower
	// SZX mid-transfer, so the offset uses the block's own size.
	if u == nil || u.done || int(b.num)*b.size() != len(u.body) {
		delete(s.uploads, k)
		s.mu.Unlock()
		e.counts.blockGap.Inc()
		e.answer(ex, sc, codeIncomplete, nil, nil)
		return nil, false
	}
	if len(u.body)+len(m.Payload) > e.opts.MaxBody {
		delete(s.uploads, k)
		s.mu.Unlock()
		size1 := message.Option{ID: optSize1, Value: uintValue(uint32(e.opts.MaxBody))}
		e.answer(ex, sc, codeTooLarge, message.Options{size1}, nil)
		return nil, false
	}
	u.body = append(u.body, m.Payload...)
	u.updated = now
	if b.more {
		s.mu.Unlock()
		echo := message.Option{ID: optBlock1, Value: uintValue(b.value())}
		e.answer(ex, sc, codeContinue, message.Options{echo}, nil)
		return nil, false
	}
	u.done = true
	s.mu.Unlock()
	final := b
	c.block1 = &final
	return u.body, true
}

// serveCachedBlock answers a Block2 request for a later block from the
// cached body, if there is one.
func (e *Endpoint) serveCachedBlock(c *call, sc *scratch) bool {
	k := blockKey{c.from, c.uri}
	s := e.blocks
	s.mu.Lock()
	body := s.bodies[k]
	if body != nil {
		body.updated = time.Now()
	}
	s.mu.Unlock()
	if body == nil {
		return false
	}
	e.counts.blockCached.Inc()
	resp, ok := e.slice(c, body.code, body.opts, body.payload)
	if !ok {
		e.answer(c.ex, sc, codeBadOption, nil, []byte("Block2 number past the end of the body"))
		return true
	}
	e.deliver(c.ex, resp, sc.batch)
	return true
}

// blockResponse rewrites a worker's response for block-wise transfer: it
// echoes the final Block1 and, when the body is larger than one block or
// the device asked for a block, returns the requested block.
func (e *Endpoint) blockResponse(c *call, resp []byte) ([]byte, bool) {
	var m message.Message
	m.Options = make(message.Options, 0, maxOptions)
	if err := decode(resp, &m); err != nil {
		return nil, false
	}
	size := e.opts.BlockSize
	if c.wantBlock2 {
		size = min(size, c.block2.size())
	}
	opts := m.Options
	if c.block1 != nil {
		opts = replaceOptions(opts, []message.OptionID{optBlock1},
			message.Option{ID: optBlock1, Value: uintValue(c.block1.value())})
	}
	if len(m.Payload) <= size && c.block2.num == 0 {
		return appendMessage(nil, typeACK, m.Code, 0, m.Token, opts, m.Payload), true
	}
	k := blockKey{c.from, c.uri}
	body := &cachedBody{code: m.Code, opts: opts, payload: append([]byte(nil), m.Payload...), updated: time.Now()}
	s := e.blocks
	s.mu.Lock()
	if len(s.bodies) >= maxTransfers {
		s.sweep(body.updated)
	}
	if len(s.bodies) < maxTransfers {
		s.bodies[k] = body
	}
	s.mu.Unlock()
	c.block2.szx = szxFor(size)
	out, ok := e.slice(c, body.code, body.opts, body.payload)
	if !ok {
		return appendMessage(nil, typeACK, codeBadOption, 0, c.token, nil, []byte("Block2 number past the end of the body")), true
	}
	return out, true
}

// slice encodes block c.block2.num of payload with Block2 and Size2 options.
func (e *Endpoint) slice(c *call, code codes.Code, opts message.Options, payload []byte) ([]byte, bool) {
	b := c.block2
	if !c.wantBlock2 {
		b.szx = szxFor(e.opts.BlockSize)
	}
	size := b.size()
	start := int(b.num) * size
	if start >= len(payload) && !(start == 0 && len(payload) == 0) {
		return nil, false
	}
	end := min(start+size, len(payload))
	b.more = end < len(payload)
	add := []message.Option{{ID: optBlock2, Value: uintValue(b.value())}}
	if b.num == 0 {
		add = append(add, message.Option{ID: optSize2, Value: uintValue(uint32(len(payload)))})
	}
	opts = replaceOptions(opts, []message.OptionID{optBlock2, optSize2}, add...)
	if b.num > 0 {
		// Observe belongs to the first block only (RFC 7959 §3.4).
		opts = replaceOptions(opts, []message.OptionID{optObserve})
	}
	return appendMessage(nil, typeACK, code, 0, c.token, opts, payload[start:end]), true
}

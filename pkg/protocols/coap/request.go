package coap

import (
	"bytes"
	"errors"
	"net/netip"
	"strconv"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/shardgate/shardgate/pkg/config"
)

// call is one forwarded request waiting for its worker.
type call struct {
	e        *Endpoint
	ex       *exchange
	from     netip.AddrPort
	start    time.Time
	token    []byte // aliases tokenBuf for requests
	tokenBuf [8]byte
	uri      uint64
	block1   *block // the final Block1 of an assembled body, echoed in the response
	block2   block  // the Block2 the device asked for, when wantBlock2 is set
	// wantBlock2 is set when the request carried Block2.
	wantBlock2 bool
	obs        *observation
}

// request handles one decoded request datagram.
func (e *Endpoint) request(b []byte, from netip.AddrPort, typ uint8, mid uint16, sc *scratch) {
	m := &sc.msg
	now := time.Now()
	ex := e.exchanges.begin(exKey{from, mid}, typ, now, func(dup *exchange) { e.duplicateLocked(dup, sc) })
	if ex == nil {
		return
	}

	if id, reason := badCritical(m.Options); id != 0 {
		e.counts.badOption.Inc()
		if typ != typeCON {
			// A NON with an unrecognised critical option is rejected by
			// ignoring it (RFC 7252 §5.4.1, §4.3).
			return
		}
		diag := []byte(reason + strconv.Itoa(int(id)))
		e.answer(ex, sc, codeBadOption, nil, diag)
		return
	}
	if hasOption(m.Options, optProxyURI) || hasOption(m.Options, optProxyScheme) {
		e.answer(ex, sc, codeProxyNotSupport, nil, nil)
		return
	}

	key := e.sessionKey(m, from, sc)
	c := &ex.call
	*c = call{e: e, ex: ex, from: from, start: now}
	c.token = c.tokenBuf[:copy(c.tokenBuf[:], m.Token)]

	// Block-wise transfers end here: the worker sees whole bodies.
	fwd := b
	if v, ok := uintOption(m.Options, optBlock2); ok {
		c.block2, c.wantBlock2 = parseBlock(v), true
		c.uri = uriHash(m)
		if c.block2.szx == 7 {
			e.answer(ex, sc, codeBadRequest, nil, []byte("Block2 SZX 7 is reserved"))
			return
		}
		if c.block2.num > 0 && e.serveCachedBlock(c, sc) {
			return
		}
		fwd = e.withoutOptions(sc, m, nil, optBlock2)
	}
	if v, ok := uintOption(m.Options, optBlock1); ok {
		body, done := e.block1(ex, c, parseBlock(v), sc)
		if !done {
			return
		}
		fwd = e.withoutOptions(sc, m, body, optBlock1, optSize1, optBlock2)
	}

	var obsID uint64
	if m.Code == codes.GET {
		obsID = e.observeRequest(c, m, key, fwd)
	}

	// c lives in the exchange, which may be recycled as soon as the
	// response is delivered, possibly before Forward returns.
	obs := c.obs
	var worker string
	var err error
	if e.queue != nil {
		worker, err = e.queue.QueueForward(key, fwd, obsID, c)
		sc.queued = true
	} else {
		worker, err = e.opts.Forwarder.Forward(key, fwd, obsID, c)
	}
	if err != nil {
		if obs != nil {
			e.observes.remove(obs.id)
		}
		c.fail(err)
		return
	}
	if obs != nil {
		e.observes.setWorker(obs, worker)
	}
	e.counts.forwarded.Inc()
}

// duplicateLocked answers a retransmitted request without forwarding it
// again (RFC 7252 §4.5). The exchange's shard lock is held, and the reply
// is queued on the reader's batch, which copies it.
func (e *Endpoint) duplicateLocked(ex *exchange, sc *scratch) {
	e.counts.duplicate.Inc()
	if ex.typ != typeCON {
		return
	}
	switch ex.state {
	case stateDone:
		if ex.reply != nil {
			e.reply(sc.batch, ex.reply, ex.key.addr)
			return
		}
		// A response that went separately is retransmitted on its own;
		// the duplicate request only needs the Empty ACK again.
	case statePending:
		ex.state = stateAcked
	}
	e.reply(sc.batch, empty(sc.out, typeACK, ex.key.mid), ex.key.addr)
}

// sessionKey finds the key the configured way, falling back to the source
// address. The result aliases the datagram or sc.key.
func (e *Endpoint) sessionKey(m *message.Message, from netip.AddrPort, sc *scratch) []byte {
	k := e.opts.Key
	switch k.Kind {
	case config.KeyPath:
		i := 0
		for _, o := range m.Options {
			if o.ID != optUriPath {
				continue
			}
			if i == len(k.Prefix) {
				if len(o.Value) > 0 {
					return o.Value
				}
				break
			}
			if string(o.Value) != k.Prefix[i] {
				break
			}
			i++
		}
	case config.KeyQuery:
		for _, o := range m.Options {
			if o.ID != optUriQuery {
				continue
			}
			name, val, ok := bytes.Cut(o.Value, []byte{'='})
			if ok && len(val) > 0 && string(name) == k.Query {
				return val
			}
		}
	}
	sc.key = from.AppendTo(sc.key[:0])
	return sc.key
}

// uriHash identifies a request's target for block-wise state, from its
// Uri-Host, Uri-Port, Uri-Path and Uri-Query options (FNV-1a).
func uriHash(m *message.Message) uint64 {
	h := uint64(14695981039346656037)
	for _, o := range m.Options {
		switch o.ID {
		case optUriHost, optUriPort, optUriPath, optUriQuery:
			h ^= uint64(o.ID)
			h *= 1099511628211
			for _, c := range o.Value {
				h ^= uint64(c)
				h *= 1099511628211
			}
			h ^= 0xFF
			h *= 1099511628211
		}
	}
	return h
}

// withoutOptions re-encodes m without the dropped options, with payload when
// it is non-nil, into a new buffer.
func (e *Endpoint) withoutOptions(sc *scratch, m *message.Message, payload []byte, drop ...message.OptionID) []byte {
	opts := replaceOptions(m.Options, drop)
	if payload == nil {
		payload = m.Payload
	}
	return appendMessage(nil, typeCON, m.Code, 0, m.Token, opts, payload)
}

// answer sends a response the gateway makes itself and records it in the
// exchange.
func (e *Endpoint) answer(ex *exchange, sc *scratch, code codes.Code, opts message.Options, payload []byte) {
	resp := appendMessage(nil, typeACK, code, 0, sc.msg.Token, opts, payload)
	e.deliver(ex, resp, sc.batch)
}

// Respond receives the worker's response; it implements Responder.
func (c *call) Respond(resp []byte, err error) {
	e := c.e
	e.counts.forward.Observe(time.Since(c.start).Seconds())
	if err != nil {
		if c.obs != nil {
			e.observes.remove(c.obs.id)
		}
		c.fail(err)
		return
	}
	if len(resp) < headerLen || int(resp[0]&0xF) != len(c.token) || len(resp) < headerLen+len(c.token) {
		e.counts.badGateway.Inc()
		e.deliver(c.ex, appendMessage(nil, typeACK, codes.BadGateway, 0, c.token, nil, nil), nil)
		return
	}
	if c.obs != nil {
		if v, ok := observeValue(resp); ok {
			c.obs.seq.Store(v)
		} else {
			// The worker did not add the observer; the response is a
			// plain one (RFC 7641 §4.1).
			e.observes.remove(c.obs.id)
		}
	}
	if c.block1 != nil || c.wantBlock2 || len(resp) > e.opts.BlockSize+64 {
		if out, ok := e.blockResponse(c, resp); ok {
			resp = out
		}
	}
	// Respond runs on a link event loop, and FlushResponses sends the
	// batch when the loop has handled everything it read.
	if !e.opts.BatchResponses {
		e.deliver(c.ex, resp, nil)
		return
	}
	e.linkMu.Lock()
	e.deliver(c.ex, resp, e.linkOut)
	e.linkMu.Unlock()
}

// fail answers a request the worker could not serve.
func (c *call) fail(err error) {
	e := c.e
	var code codes.Code
	switch {
	case errors.Is(err, ErrNoOwner):
		e.counts.noOwner.Inc()
		code = codeUnavailable
	case errors.Is(err, ErrOverloaded):
		e.counts.overloaded.Inc()
		code = codeUnavailable
	case errors.Is(err, ErrTimeout):
		e.counts.timeout.Inc()
		code = codeGatewayTimeout
	case errors.Is(err, ErrBadKey):
		e.counts.badKey.Inc()
		e.deliver(c.ex, appendMessage(nil, typeACK, codeBadRequest, 0, c.token, nil, []byte(err.Error())), nil)
		return
	default:
		// The worker's connection failed. Unless the device already has
		// an Empty ACK, forget the exchange so that its retransmission is
		// forwarded to the new owner.
		// NOTE: a worker that was only paused (failed by Serf, then back)
		// may still serve the frame from its socket buffer, so a POST can
		// then take effect twice. Workers do not deduplicate by the
		// device's Message ID, because the link does not carry the
		// device's address, which scopes Message IDs.
		e.counts.lost.Inc()
		acked := false
		e.exchanges.with(c.ex, func(ex *exchange) {
			acked = ex.state == stateAcked
			if !acked {
				ex.state = stateDone
				e.exchanges.forgetLocked(ex)
			}
		})
		if !acked {
			return
		}
		// Acknowledged requests are not retransmitted, so the device
		// must get an answer: 5.03 tells it to retry after Max-Age.
		code = codeUnavailable
	}
	var opts message.Options
	if code == codeUnavailable {
		// Max-Age on 5.03 tells the device when to retry (RFC 7252 §5.9.3.4).
		opts = message.Options{{ID: optMaxAge, Value: []byte{1}}}
	}
	e.deliver(c.ex, appendMessage(nil, typeACK, code, 0, c.token, opts, nil), nil)
}

// deliver sends resp, an encoded response, as the exchange requires:
// piggybacked in the ACK, as a separate CON after an Empty ACK, or as a NON
// (RFC 7252 §5.2). A piggybacked or NON response goes into out when it is
// not nil. resp may be reused after deliver returns.
func (e *Endpoint) deliver(ex *exchange, resp []byte, out *outBatch) {
	// The exchange may be recycled once it is done, so everything needed
	// after the lock is copied out under it.
	var state, typ uint8
	var to netip.AddrPort
	e.exchanges.with(ex, func(ex *exchange) {
		state, typ, to = ex.state, ex.typ, ex.key.addr
		if typ == typeCON && state == statePending {
			setHeader(resp, typeACK, ex.key.mid)
			ex.keepReply(resp)
		}
		ex.state = stateDone
	})
	e.counts.code(resp[1])
	switch {
	case typ == typeNON:
		setHeader(resp, typeNON, e.nextMID())
		e.reply(out, resp, to)
	case state == statePending:
		e.reply(out, resp, to)
	case state == stateAcked:
		mid := e.nextMID()
		setHeader(resp, typeCON, mid)
		e.sendConfirmable(to, mid, resp, 0)
	}
}

// hasObserve reports whether an encoded message carries an Observe option.
func hasObserve(b []byte) bool {
	var m message.Message
	m.Options = make(message.Options, 0, maxOptions)
	if err := decode(b, &m); err != nil {
		return false
	}
	return hasOption(m.Options, optObserve)
}

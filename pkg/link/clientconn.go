package link

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"
)

// clientEvents receives a Client's gnet events. gnet calls each method on
// the event loop that owns the connection, so none of them may block.
type clientEvents struct {
	gnet.BuiltinEventEngine
	c *Client
}

func (e *clientEvents) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	cc, ok := c.Context().(*clientConn)
	if !ok {
		return nil, gnet.Close
	}
	cc.w.init(c)
	return nil, gnet.None
}

func (e *clientEvents) OnClose(c gnet.Conn, err error) gnet.Action {
	cc, ok := c.Context().(*clientConn)
	if !ok {
		return gnet.None
	}
	cc.w.close()
	if n := cc.fail(); n > 0 || err != nil {
		e.c.log.Warn().Err(err).Str("worker", cc.addr).Int("failed_requests", n).
			Msg("link connection closed")
	}
	return gnet.None
}

func (e *clientEvents) OnTraffic(c gnet.Conn) gnet.Action {
	cc, ok := c.Context().(*clientConn)
	if !ok {
		return gnet.Close
	}
	err := readFrames(c, cc)
	if after := e.c.opts.AfterRead; after != nil {
		after()
	}
	if err != nil {
		e.c.log.Error().Err(err).Str("worker", cc.addr).
			Msg("closing link connection after a protocol error")
		return gnet.Close
	}
	return gnet.None
}

// pendingRequest is a request awaiting its response.
type pendingRequest struct {
	cb       Receiver
	deadline int64 // Client.now() value after which the request times out
}

// clientConn is one connection from a Client to a worker. It is safe for
// concurrent use.
type clientConn struct {
	c    *Client
	addr string
	w    frameWriter

	frame Frame // scratch frame for readFrames, used on the event loop only

	closed atomic.Bool // written under mu, read without it on the send path

	mu      sync.Mutex
	pending map[uint64]pendingRequest // by correlation id, nil once closed
}

func newClientConn(c *Client, addr string) *clientConn {
	return &clientConn{c: c, addr: addr, pending: make(map[uint64]pendingRequest)}
}

func (cc *clientConn) isClosed() bool { return cc.closed.Load() }

// request registers cb under f.Corr and queues f, writing it at once unless
// deferred is set.
func (cc *clientConn) request(f *Frame, cb Receiver, deferred bool) error {
	deadline := cc.c.now() + int64(cc.c.opts.RequestTimeout)
	cc.mu.Lock()
	if cc.pending == nil {
		cc.mu.Unlock()
		return ErrClosed
	}
	if len(cc.pending) >= cc.c.opts.MaxInFlight {
		cc.mu.Unlock()
		return ErrOverloaded
	}
	cc.pending[f.Corr] = pendingRequest{cb: cb, deadline: deadline}
	cc.mu.Unlock()

	var err error
	if deferred {
		err = cc.w.queue(f)
	} else {
		err = cc.w.send(f)
	}
	if err == nil {
		return nil
	}
	cc.mu.Lock()
	_, ok := cc.pending[f.Corr]
	delete(cc.pending, f.Corr)
	cc.mu.Unlock()
	if !ok {
		return nil // a close or timeout already passed cb its error
	}
	return err
}

func (cc *clientConn) scratch() *Frame { return &cc.frame }

// receive runs on the event loop.
func (cc *clientConn) receive(f *Frame) error {
	switch f.Type {
	case TypeResponse:
		cc.mu.Lock()
		p, ok := cc.pending[f.Corr]
		delete(cc.pending, f.Corr)
		cc.mu.Unlock()
		if ok {
			p.cb.Receive(f, nil)
		}
		// A response without a pending request arrived after its timeout.
		return nil
	case TypeNotify:
		if cc.c.opts.OnNotify != nil {
			cc.c.opts.OnNotify(cc.addr, f)
		}
		return nil
	case TypePing:
		return cc.w.send(&Frame{Type: TypePong, Corr: f.Corr})
	case TypePong:
		return nil
	}
	return fmt.Errorf("link: unexpected %s frame from worker %s", f.Type, cc.addr)
}

// expire removes the requests whose deadline is before now and appends
// their callbacks to dst for the caller to run outside the lock.
func (cc *clientConn) expire(now int64, dst []Receiver) []Receiver {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for corr, p := range cc.pending {
		if p.deadline <= now {
			delete(cc.pending, corr)
			dst = append(dst, p.cb)
		}
	}
	return dst
}

// fail marks the connection closed and fails every pending request with
// ErrClosed. It returns how many it failed, and 0 when already closed.
func (cc *clientConn) fail() int {
	cc.mu.Lock()
	pending := cc.pending
	cc.pending = nil
	cc.closed.Store(true)
	cc.mu.Unlock()
	if len(pending) == 0 {
		return 0
	}
	err := fmt.Errorf("%w: connection to worker %s", ErrClosed, cc.addr)
	for _, p := range pending {
		p.cb.Receive(nil, err)
	}
	return len(pending)
}

// shutdown fails the pending requests at once, then closes the socket.
// It returns how many requests it failed.
func (cc *clientConn) shutdown() int {
	n := cc.fail()
	if cc.w.conn != nil {
		_ = cc.w.conn.Close()
	}
	return n
}

func (cc *clientConn) inFlight() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.pending)
}

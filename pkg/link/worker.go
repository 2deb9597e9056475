package link

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// worker is a Client's set of connections to one worker address. It is safe
// for concurrent use.
type worker struct {
	c    *Client
	addr string
	next atomic.Uint32 // round-robin position in conns

	// conns has ConnsPerWorker slots. Senders load a slot without locking,
	// and redial a nil or closed slot under mu.
	conns []atomic.Pointer[clientConn]

	// mu is held while dialing, so concurrent Sends to a worker that is
	// down wait for one attempt instead of each dialing.
	mu        sync.Mutex
	retryAt   time.Time     // no dial before this
	backoff   time.Duration // wait after the next failure
	forgotten bool          // set by shutdown, which ends dialing
}

func newWorker(c *Client, addr string) *worker {
	return &worker{
		c:       c,
		addr:    addr,
		conns:   make([]atomic.Pointer[clientConn], c.opts.ConnsPerWorker),
		backoff: minRedialBackoff,
	}
}

// pick returns the next connection in turn, dialing it if it is missing or
// closed.
func (w *worker) pick() (*clientConn, error) {
	i := int(w.next.Add(1) % uint32(len(w.conns)))
	if cc := w.conns[i].Load(); cc != nil && !cc.isClosed() {
		return cc, nil
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if cc := w.conns[i].Load(); cc != nil && !cc.isClosed() {
		return cc, nil // another sender redialed it
	}
	if w.forgotten {
		return nil, fmt.Errorf("%w: worker %s was forgotten", ErrClosed, w.addr)
	}
	if wait := time.Until(w.retryAt); wait > 0 {
		return nil, fmt.Errorf("%w: worker %s unreachable, next dial in %v",
			ErrClosed, w.addr, wait.Round(time.Millisecond))
	}

	cc, err := w.dial()
	if err != nil {
		wait := w.backoff
		w.retryAt = time.Now().Add(wait)
		w.backoff = min(2*wait, maxRedialBackoff)
		w.c.log.Warn().Err(err).Str("worker", w.addr).Dur("retry_in", wait).Msg("link dial failed")
		return nil, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	w.backoff = minRedialBackoff
	w.conns[i].Store(cc)
	w.c.refreshLive()
	return cc, nil
}

func (w *worker) dial() (*clientConn, error) {
	nc, err := net.DialTimeout("tcp", w.addr, w.c.opts.DialTimeout)
	if err != nil {
		return nil, fmt.Errorf("link: dial worker %s: %w", w.addr, err)
	}
	cc := newClientConn(w.c, w.addr)
	// EnrollContext takes a duplicate of the socket and closes nc. Its
	// OnOpen sets cc's gnet connection before it returns.
	if _, err := w.c.gnet.EnrollContext(nc, cc); err != nil {
		return nil, fmt.Errorf("link: register connection to worker %s: %w", w.addr, err)
	}
	w.c.log.Info().Str("worker", w.addr).Msg("link connection opened")
	return cc, nil
}

// shutdown closes every connection and fails their pending requests with
// ErrClosed before it returns. reason goes into the log line.
func (w *worker) shutdown(reason string) {
	w.mu.Lock()
	w.forgotten = true
	w.mu.Unlock()
	failed, closed := 0, 0
	for i := range w.conns {
		if cc := w.conns[i].Swap(nil); cc != nil {
			failed += cc.shutdown()
			closed++
		}
	}
	if closed > 0 {
		w.c.log.Info().Str("worker", w.addr).Str("reason", reason).Int("connections", closed).
			Int("failed_requests", failed).Msg("link connections to worker closed")
	}
}

func (w *worker) inFlight() int {
	n := 0
	for i := range w.conns {
		if cc := w.conns[i].Load(); cc != nil {
			n += cc.inFlight()
		}
	}
	return n
}

func (w *worker) appendConns(dst []*clientConn) []*clientConn {
	for i := range w.conns {
		if cc := w.conns[i].Load(); cc != nil {
			dst = append(dst, cc)
		}
	}
	return dst
}

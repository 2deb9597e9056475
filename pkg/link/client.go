package link

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/rs/zerolog"
)

// Callback receives the outcome of one request. The Client calls it exactly
// once, from an event loop or its timeout goroutine (or from Forget or Close
// on the caller's goroutine), so it must not block. When err is non-nil
// (ErrClosed, ErrTimeout), resp is nil. Otherwise resp.Status carries the
// worker's verdict (see Status.Err), and resp.Key and resp.Body are valid
// only during the call.
//
// NOTE: a callback must not call Send or SendCancel itself, because they may
// dial, and a dial waits for an event loop that may be the one running the
// callback. Hand retries to another goroutine.
type Callback func(resp *Frame, err error)

// ClientOptions configures a Client. Zero values take the defaults below.
type ClientOptions struct {
	Logger zerolog.Logger
	// OnNotify receives notify frames. It runs on an event loop, so it must
	// not block, and f is valid only during the call.
	OnNotify func(workerAddr string, f *Frame)
	// AfterRead, if set, runs on the event loop after the callbacks and
	// notifications of one read from a worker, so a caller can flush what
	// they queued as one batch. It must not block.
	AfterRead func()
	// DialTimeout bounds one connection attempt, 1 s by default.
	DialTimeout time.Duration
	// RequestTimeout fails a request with ErrTimeout when no response
	// arrived within it, 5 s by default. Expiry is checked every
	// RequestTimeout/20, so a request may live that much longer.
	RequestTimeout time.Duration
	// MaxInFlight bounds the requests awaiting a response on one
	// connection, 4096 by default. Send fails with ErrOverloaded beyond it.
	MaxInFlight int
	// ConnsPerWorker is the number of connections to each worker, 1 by
	// default. Requests are spread over them in turn.
	ConnsPerWorker int
}

// Redial backoff after a failed connection attempt to a worker: Sends to it
// fail fast with ErrClosed until the backoff passes, and each further failure
// doubles it up to maxRedialBackoff.
const (
	minRedialBackoff = 50 * time.Millisecond
	maxRedialBackoff = 2 * time.Second
)

// Client keeps multiplexed connections from a gateway to its workers. Its
// methods are safe for concurrent use.
type Client struct {
	opts  ClientOptions
	log   zerolog.Logger
	gnet  *gnet.Client
	epoch time.Time // deadlines are nanoseconds since epoch, on the monotonic clock

	// corr numbers requests across all connections, so an observation id
	// stays unique per worker even with several connections or a reconnect.
	corr atomic.Uint64

	stop       chan struct{} // closed by Close to end the timeout goroutine
	tickerDone chan struct{}

	// live lists every connection for Flush, replaced whole on each dial
	// and Forget so that Flush reads it without locking.
	live atomic.Pointer[[]*clientConn]

	mu      sync.Mutex
	workers map[string]*worker
	closed  bool
}

// NewClient starts the Client's event loops and timeout goroutine.
func NewClient(o ClientOptions) (*Client, error) {
	if o.DialTimeout <= 0 {
		o.DialTimeout = time.Second
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 4096
	}
	if o.ConnsPerWorker <= 0 {
		o.ConnsPerWorker = 1
	}
	c := &Client{
		opts:       o,
		log:        o.Logger.With().Str("component", "link-client").Logger(),
		epoch:      time.Now(),
		stop:       make(chan struct{}),
		tickerDone: make(chan struct{}),
		workers:    make(map[string]*worker),
	}

	g, err := gnet.NewClient(&clientEvents{c: c},
		gnet.WithMulticore(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		// NOTE: the client sends no pings, so a worker that stops reading
		// without closing shows only as request timeouts until TCP
		// keepalive ends the connection.
		gnet.WithTCPKeepAlive(15*time.Second),
		gnet.WithLogger(newGnetLogger(c.log)))
	if err != nil {
		return nil, fmt.Errorf("link: create gnet client: %w", err)
	}
	if err := g.Start(); err != nil {
		return nil, fmt.Errorf("link: start gnet client: %w", err)
	}
	c.gnet = g
	go c.expireLoop()
	return c, nil
}

// Send sends the request f to the worker at workerAddr and arranges for cb to
// receive the response. It sets f.Type to TypeRequest and f.Corr to a fresh
// correlation id, unless f has FlagObserve and a non-zero Corr: then Corr is
// the caller's observation id, which the caller keeps unique, for example
// by setting its top bit (the counter never reaches it).
// f is encoded before Send returns, so the caller may reuse its buffers.
// When Send returns an error, cb is not called.
func (c *Client) Send(workerAddr string, f *Frame, cb Callback) error {
	if cb == nil {
		return errors.New("link: Send needs a callback")
	}
	return c.SendTo(workerAddr, f, cb)
}

// Receiver receives the outcome of one request, like a Callback, but lets
// a caller pass a long-lived or pooled object instead of a new closure, so
// that a request costs no allocation. Receive has the Callback contract.
type Receiver interface {
	Receive(resp *Frame, err error)
}

// Receive calls cb, so a Callback is a Receiver.
func (cb Callback) Receive(resp *Frame, err error) { cb(resp, err) }

// SendTo is Send with a Receiver.
func (c *Client) SendTo(workerAddr string, f *Frame, r Receiver) error {
	return c.sendTo(workerAddr, f, r, false)
}

// QueueTo is SendTo except that the frame may wait in the connection's
// queue until the next Flush, so that a caller handling a batch of requests
// sends each connection's share in one write. A later SendTo on the same
// connection also writes it.
func (c *Client) QueueTo(workerAddr string, f *Frame, r Receiver) error {
	return c.sendTo(workerAddr, f, r, true)
}

// Flush writes the frames queued by QueueTo on every connection.
func (c *Client) Flush() {
	if conns := c.live.Load(); conns != nil {
		for _, cc := range *conns {
			_ = cc.w.writeNow() // a failure closes the connection, which fails its requests
		}
	}
}

func (c *Client) sendTo(workerAddr string, f *Frame, r Receiver, deferred bool) error {
	if r == nil {
		return errors.New("link: SendTo needs a receiver")
	}
	cb := r
	cc, err := c.conn(workerAddr)
	if err != nil {
		return err
	}
	f.Type = TypeRequest
	if f.Flags&FlagObserve == 0 || f.Corr == 0 {
		f.Corr = c.corr.Add(1)
	}
	return cc.request(f, cb, deferred)
}

// SendCancel sends a frame that gets no response, such as a cancel frame
// whose Corr is the observation id.
func (c *Client) SendCancel(workerAddr string, f *Frame) error {
	if f.Type == TypeRequest {
		return errors.New("link: SendCancel cannot send a request frame, use Send")
	}
	cc, err := c.conn(workerAddr)
	if err != nil {
		return err
	}
	return cc.w.send(f)
}

// Forget closes the connections to a worker that left the cluster. Its
// pending requests fail with ErrClosed before Forget returns.
func (c *Client) Forget(workerAddr string) {
	c.mu.Lock()
	w := c.workers[workerAddr]
	delete(c.workers, workerAddr)
	c.mu.Unlock()
	if w != nil {
		w.shutdown("the worker left the cluster")
	}
	c.refreshLive()
}

// refreshLive rebuilds the connection list that Flush walks.
func (c *Client) refreshLive() {
	c.mu.Lock()
	defer c.mu.Unlock()
	var conns []*clientConn
	for _, w := range c.workers {
		conns = w.appendConns(conns)
	}
	c.live.Store(&conns)
}

// Close closes every connection, failing pending requests with ErrClosed,
// and stops the event loops. Later Sends fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	workers := c.workers
	c.workers = nil
	c.mu.Unlock()

	for _, w := range workers {
		w.shutdown("the link client closed")
	}
	close(c.stop)
	<-c.tickerDone
	if err := c.gnet.Stop(); err != nil {
		return fmt.Errorf("link: stop gnet client: %w", err)
	}
	return nil
}

// Stats returns the number of requests in flight per worker address.
func (c *Client) Stats() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	stats := make(map[string]int, len(c.workers))
	for addr, w := range c.workers {
		stats[addr] = w.inFlight()
	}
	return stats
}

// conn returns an open connection to workerAddr, dialing when needed.
func (c *Client) conn(workerAddr string) (*clientConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	w := c.workers[workerAddr]
	if w == nil {
		w = newWorker(c, workerAddr)
		c.workers[workerAddr] = w
	}
	c.mu.Unlock()
	return w.pick()
}

// now returns the monotonic time since c.epoch.
func (c *Client) now() int64 { return int64(time.Since(c.epoch)) }

// expireLoop fails requests whose deadline passed, scanning every
// connection's pending set on each tick instead of arming a timer per
// request.
func (c *Client) expireLoop() {
	defer close(c.tickerDone)
	tick := time.NewTicker(max(c.opts.RequestTimeout/20, time.Millisecond))
	defer tick.Stop()

	var conns []*clientConn
	var expired []Receiver
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		conns = c.appendConns(conns[:0])
		now := c.now()
		for _, cc := range conns {
			expired = cc.expire(now, expired[:0])
			for _, cb := range expired {
				cb.Receive(nil, ErrTimeout)
			}
		}
		clear(conns)
		clear(expired)
	}
}

func (c *Client) appendConns(dst []*clientConn) []*clientConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.workers {
		dst = w.appendConns(dst)
	}
	return dst
}

package coap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/pkg/config"
	"github.com/shardgate/shardgate/pkg/metrics"
)

// Forwarder sends requests to the worker that owns their session key.
// The gateway's assembly implements it over the ring and the link.
type Forwarder interface {
	// Forward sends msg, an encoded CoAP request, to the owner of key and
	// returns the owner's link address. A non-zero observe registers an
	// observation with that id. r.Respond is called exactly once, from a
	// goroutine that must not block, with the encoded response (valid only
	// during the call) or an error. It is not called when Forward itself
	// returns an error. key and msg are not kept after Forward returns.
	Forward(key []byte, msg []byte, observe uint64, r Responder) (worker string, err error)
	// CancelObserve ends observation id at worker.
	CancelObserve(worker string, key []byte, id uint64)
}

// QueueForwarder is a Forwarder that can hold requests until Flush, so that
// the requests of one read batch reach each worker in one write. The
// endpoint's readers call QueueForward instead of Forward, and Flush at the
// end of each batch.
type QueueForwarder interface {
	Forwarder
	QueueForward(key []byte, msg []byte, observe uint64, r Responder) (worker string, err error)
	Flush()
}

// Responder receives the worker's response to one forwarded request. It is
// an interface rather than a function so that the endpoint can pass its
// per-request record without allocating a closure.
type Responder interface {
	Respond(resp []byte, err error)
}

// ResponderFunc adapts a function to the Responder interface.
type ResponderFunc func(resp []byte, err error)

// Respond calls f(resp, err).
func (f ResponderFunc) Respond(resp []byte, err error) { f(resp, err) }

// Errors a Forwarder returns or passes to Respond, wrapped. The endpoint
// picks the response to the device from them. Any other error is treated as a lost worker:
// the request is dropped unanswered so that the device retransmits.
var (
	ErrNoOwner    = errors.New("no active worker owns the key")
	ErrOverloaded = errors.New("worker overloaded")
	ErrTimeout    = errors.New("worker timed out")
	// ErrBadKey rejects a session key that cannot be routed, such as one
	// longer than the link carries; the device gets 4.00.
	ErrBadKey = errors.New("invalid session key")
)

// Transmission parameters (RFC 7252 §4.8).
const (
	AckTimeout       = 2 * time.Second
	AckRandomFactor  = 1.5
	MaxRetransmit    = 4
	ExchangeLifetime = 247 * time.Second
)

// Options configures an Endpoint. Zero values take the defaults shown.
type Options struct {
	// Addr is the UDP listen address, default ":5683".
	Addr string
	// Key is where a request's session key is found.
	Key       config.CoAPKey
	Forwarder Forwarder
	Metrics   *metrics.Metrics
	Logger    zerolog.Logger
	// PiggybackWait is how long a CON request may wait for the worker
	// before an Empty ACK goes out and the response becomes separate
	// (RFC 7252 §5.2.2). Default 1 s, half of ACK_TIMEOUT, so the device
	// has the ACK before its first retransmission.
	PiggybackWait time.Duration
	// BlockSize is the largest payload sent in one datagram; larger
	// responses go block-wise (RFC 7959). Default 1024.
	BlockSize int
	// MaxBody bounds a request body assembled from Block1 blocks. Default 64 KiB.
	MaxBody int
	// MaxExchanges bounds the exchanges remembered for duplicate
	// detection. Default 262144.
	// NOTE: above about 1,000 requests/s the default holds less than
	// EXCHANGE_LIFETIME (at 77k req/s about 3.4 s), so a late duplicate
	// is forwarded again; shardgate_packets_total{outcome="exchange_evicted"}
	// counts the early evictions.
	MaxExchanges int
	// Readers is the number of goroutines reading datagrams. On Linux each
	// has its own socket, bound with SO_REUSEPORT to the same address, so
	// the kernel spreads devices over them and no reader waits for another.
	// Default: the number of CPUs.
	Readers int
	// BatchResponses queues worker responses delivered through Respond
	// callbacks until FlushResponses, which the caller must then call after
	// each burst of callbacks (the gateway does after each link read).
	// When false, each response is sent at once.
	BatchResponses bool
	// AckTimeout is the initial retransmission timeout of the CON messages
	// the gateway sends (separate responses, notifications). Default 2 s.
	AckTimeout time.Duration
}

func (o *Options) setDefaults() {
	if o.Addr == "" {
		o.Addr = ":5683"
	}
	if o.Key.Kind == 0 {
		o.Key = config.CoAPKey{Kind: config.KeyPath, Prefix: []string{"d"}}
	}
	if o.PiggybackWait <= 0 {
		o.PiggybackWait = time.Second
	}
	if o.BlockSize <= 0 {
		o.BlockSize = 1024
	}
	o.BlockSize = 1 << (szxFor(o.BlockSize) + 4)
	if o.MaxBody <= 0 {
		o.MaxBody = 64 << 10
	}
	if o.MaxExchanges <= 0 {
		o.MaxExchanges = 1 << 18
	}
	if o.Readers <= 0 {
		o.Readers = runtime.NumCPU()
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = AckTimeout
	}
}

// Endpoint is the CoAP server a device talks to. It is safe for concurrent use.
type Endpoint struct {
	opts Options
	log  zerolog.Logger
	// socks are the bound sockets, one per reader on Linux. sock is the
	// first, which sends everything not sent by a reader.
	socks []*batchSocket
	sock  *batchSocket
	mid   atomic.Uint32

	// lifeMu orders starting readers in Serve against Close, which waits
	// for the readers before it closes the sockets.
	lifeMu  sync.Mutex
	closed  bool
	readers sync.WaitGroup

	// linkMu guards linkOut, the batch of responses delivered by link
	// callbacks, which FlushResponses sends. Lock order: linkMu, then an
	// exchange shard's lock.
	linkMu  sync.Mutex
	linkOut *outBatch

	exchanges *exchangeCache
	out       *outbound
	// queue is opts.Forwarder when it implements QueueForwarder, else nil.
	queue    QueueForwarder
	blocks   *blockStore
	observes *observeTable
	counts   counters

	stop chan struct{}
	wg   sync.WaitGroup
}

// New validates opts and returns an Endpoint that is not yet listening.
func New(opts Options) (*Endpoint, error) {
	if opts.Forwarder == nil {
		return nil, errors.New("coap: endpoint needs a Forwarder")
	}
	if opts.Metrics == nil {
		return nil, errors.New("coap: endpoint needs Metrics")
	}
	opts.setDefaults()
	queue, _ := opts.Forwarder.(QueueForwarder)
	e := &Endpoint{
		queue:    queue,
		opts:     opts,
		log:      opts.Logger.With().Str("component", "coap").Logger(),
		blocks:   newBlockStore(),
		observes: newObserveTable(),
		stop:     make(chan struct{}),
	}
	e.counts = newCounters(opts.Metrics)
	e.exchanges = newExchangeCache(ExchangeLifetime, opts.MaxExchanges, e.counts.evicted.Inc)
	e.out = newOutbound()
	e.mid.Store(uint32(time.Now().UnixNano()))
	return e, nil
}

// Listen binds the UDP socket.
func (e *Endpoint) Listen() error {
	addr, err := net.ResolveUDPAddr("udp", e.opts.Addr)
	if err != nil {
		return fmt.Errorf("coap: resolve listen address %q: %w", e.opts.Addr, err)
	}
	socks, err := listenUDP(addr, e.opts.Readers)
	if err != nil {
		return fmt.Errorf("coap: listen on %q: %w", e.opts.Addr, err)
	}
	e.socks, e.sock = socks, socks[0]
	e.linkOut = newOutBatch(e.sock, e.countSendErrors)
	return nil
}

func (e *Endpoint) countSendErrors(n int) { e.counts.sendErrors.Add(float64(n)) }

// FlushResponses sends the worker responses delivered since the last flush.
// The gateway calls it after each read from a worker's link connection.
func (e *Endpoint) FlushResponses() {
	e.linkMu.Lock()
	e.linkOut.flush()
	e.linkMu.Unlock()
}

// Addr returns the bound address; valid after Listen.
func (e *Endpoint) Addr() net.Addr { return e.sock.localAddr() }

// Serve reads datagrams until ctx ends or Close is called, then returns nil.
func (e *Endpoint) Serve(ctx context.Context) error {
	if e.sock == nil {
		return errors.New("coap: Serve called before Listen")
	}
	e.lifeMu.Lock()
	if e.closed {
		e.lifeMu.Unlock()
		return nil
	}
	e.wg.Add(1)
	go e.timers()
	errs := make(chan error, e.opts.Readers)
	for i := 0; i < e.opts.Readers; i++ {
		sock := e.socks[i%len(e.socks)]
		e.readers.Add(1)
		go func() {
			defer e.readers.Done()
			errs <- e.read(sock)
		}()
	}
	e.lifeMu.Unlock()
	var err error
	select {
	case <-ctx.Done():
	case <-e.stop:
	case err = <-errs:
	}
	e.Close()
	e.wg.Wait()
	return err
}

// Close stops the endpoint: it wakes the readers, waits for them to return,
// then closes the sockets. It is safe to call more than once.
func (e *Endpoint) Close() {
	e.lifeMu.Lock()
	if e.closed {
		e.lifeMu.Unlock()
		return
	}
	e.closed = true
	close(e.stop)
	e.lifeMu.Unlock()

	for _, s := range e.socks {
		s.shutdown()
	}
	e.readers.Wait()
	for _, s := range e.socks {
		s.close()
	}
}

// scratch is one reader's reusable state.
type scratch struct {
	msg message.Message
	key []byte
	out []byte
	// batch collects the replies to one read batch; nil sends at once.
	batch *outBatch
	// queued is set when a request of this batch waits in the forwarder
	// for Flush.
	queued bool
}

// read serves one reader's socket until it closes.
func (e *Endpoint) read(sock *batchSocket) error {
	rb := newReadBatch()
	sc := &scratch{msg: message.Message{Options: make(message.Options, 0, maxOptions)},
		key: make([]byte, 0, 64), out: make([]byte, 0, 2048), batch: newOutBatch(sock, e.countSendErrors)}
	for {
		n, err := sock.read(rb)
		if err != nil {
			select {
			case <-e.stop:
				return nil
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			e.log.Error().Err(err).Msg("coap: read failed")
			continue
		}
		for i := 0; i < n; i++ {
			b, from, ok := rb.datagram(i)
			if !ok {
				e.tooLarge(b, from, sc)
				continue
			}
			e.handle(b, from, sc)
		}
		if sc.queued {
			sc.queued = false
			e.queue.Flush()
		}
		sc.batch.flush()
	}
}

// tooLarge answers a datagram longer than slotSize, of which b holds the
// start: a CON request gets 4.13 with Size1 set to the block size, which
// asks the device to send the body block-wise (RFC 7959 §2.9.3).
func (e *Endpoint) tooLarge(b []byte, from netip.AddrPort, sc *scratch) {
	e.counts.tooLarge.Inc()
	if len(b) < headerLen || b[0]>>6 != 1 || b[0]>>4&3 != typeCON || b[1] == 0 || b[1]>>5 != 0 {
		return
	}
	size1 := message.Options{{ID: optSize1, Value: uintValue(uint32(e.opts.BlockSize))}}
	e.rejectRequest(b, from, sc, codeTooLarge, size1, nil)
}

// rejectRequest answers a CON request that could not be decoded in full,
// echoing the Message ID and token from its header (RFC 7252 §3).
func (e *Endpoint) rejectRequest(b []byte, from netip.AddrPort, sc *scratch, code codes.Code, opts message.Options, diag []byte) {
	tkl := int(b[0] & 0xF)
	if tkl > 8 || len(b) < headerLen+tkl {
		e.reply(sc.batch, empty(sc.out, typeRST, uint16(b[2])<<8|uint16(b[3])), from)
		return
	}
	e.counts.code(uint8(code))
	resp := appendMessage(sc.out[:0], typeACK, code, uint16(b[2])<<8|uint16(b[3]), b[4:4+tkl], opts, diag)
	e.reply(sc.batch, resp, from)
}

// send writes one datagram now; failures are counted, not logged per packet.
func (e *Endpoint) send(b []byte, to netip.AddrPort) {
	if err := e.sock.sendTo(b, to); err != nil {
		e.counts.sendErrors.Inc()
	}
}

// reply queues b on out when there is one, else sends it now.
func (e *Endpoint) reply(out *outBatch, b []byte, to netip.AddrPort) {
	if out == nil {
		e.send(b, to)
		return
	}
	out.add(b, to)
}

func (e *Endpoint) nextMID() uint16 { return uint16(e.mid.Add(1)) }

// handle processes one datagram from a device.
func (e *Endpoint) handle(b []byte, from netip.AddrPort, sc *scratch) {
	if len(b) < headerLen {
		// Too short to carry a Message ID, so nothing can echo it.
		e.counts.malformed.Inc()
		return
	}
	typ := b[0] >> 4 & 3
	mid := uint16(b[2])<<8 | uint16(b[3])
	m := &sc.msg
	m.Options = m.Options[:0]
	if err := decode(b, m); err != nil {
		if errors.Is(err, message.ErrOptionsTooSmall) && typ == typeCON && b[1] != 0 && b[1]>>5 == 0 {
			// Well formed but with more options than the gateway decodes.
			e.counts.tooManyOptions.Inc()
			e.rejectRequest(b, from, sc, codeBadRequest, nil, []byte("too many options"))
			return
		}
		e.counts.malformed.Inc()
		if typ == typeCON {
			e.reply(sc.batch, empty(sc.out, typeRST, mid), from)
		}
		return
	}
	switch typ {
	case typeACK:
		e.counts.ack.Inc()
		e.out.acknowledge(from, mid)
		return
	case typeRST:
		e.counts.rst.Inc()
		if id, ok := e.out.reset(from, mid); ok {
			e.endObservation(id, true)
		}
		return
	}
	if m.Code == codes.Empty {
		if typ == typeCON {
			// An Empty CON is a ping: answer RST (RFC 7252 §4.3).
			e.counts.ping.Inc()
			e.reply(sc.batch, empty(sc.out, typeRST, mid), from)
			return
		}
		e.counts.dropped.Inc()
		return
	}
	if !isRequest(m.Code) {
		// A response the gateway did not ask for: reject (RFC 7252 §4.2, §4.3).
		e.counts.dropped.Inc()
		if typ == typeCON {
			e.reply(sc.batch, empty(sc.out, typeRST, mid), from)
		}
		return
	}
	e.request(b, from, typ, mid, sc)
}

package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/rs/zerolog"
)

// Peer is one gateway connection as seen by a worker. It is safe for
// concurrent use, and stays usable after the request that revealed it, so a
// handler may keep it to send notifications until Done is closed.
type Peer interface {
	// Send queues f for the gateway and returns once f is encoded, so the
	// caller may reuse f's buffers. It fails with ErrClosed after the
	// connection closed and with ErrOverloaded when the gateway reads too
	// slowly. Workers send only response, notify and pong frames.
	Send(f *Frame) error
	RemoteAddr() string
	// Done is closed when the connection closes.
	Done() <-chan struct{}
}

// Handler serves the request and cancel frames a Server receives. ServeFrame
// runs on the Server's pool of goroutines (or on an event loop, for frames an
// InlineHandler accepts), so it may block briefly, but each blocked call
// holds one pool goroutine. f.Key and
// f.Body are valid only during the call. A request is answered with
// p.Send(&Frame{Type: TypeResponse, Corr: f.Corr, ...}). A cancel frame gets
// no answer.
type Handler interface {
	ServeFrame(p Peer, f *Frame)
}

// InlineHandler is a Handler that can tell, frame by frame, that ServeFrame
// will return at once without blocking: it only touches memory. The Server
// then calls ServeFrame on the event loop that read the frame, skipping the
// hand-off to the pool and back, and the response leaves in the same write
// as the other responses to that read. Inline must itself be fast and must
// not block.
type InlineHandler interface {
	Handler
	Inline(f *Frame) bool
}

// ServerOptions configures a Server. Zero values take the defaults below.
type ServerOptions struct {
	Addr    string // host:port to listen on, where port 0 picks a free port
	Handler Handler
	Logger  zerolog.Logger
	// Workers is the number of goroutines running Handler, 4*GOMAXPROCS by
	// default.
	Workers int
	// QueueLen bounds the frames waiting for a worker goroutine, 1024 by
	// default. A request that finds it full is answered StatusOverloaded at
	// once.
	QueueLen int
	// Multicore runs one event loop per CPU instead of one in total.
	Multicore bool
}

// Server accepts gateway connections and hands their frames to a Handler.
// Its methods are safe for concurrent use.
type Server struct {
	opts ServerOptions
	// inline is opts.Handler when it implements InlineHandler, else nil.
	inline InlineHandler
	log    zerolog.Logger
	// dropLog logs rejected frames, sampled because a flood repeats them.
	dropLog zerolog.Logger

	jobs    chan *job
	workers sync.WaitGroup
	conns   atomic.Int64

	booted chan struct{} // closed by OnBoot
	done   chan struct{} // closed when gnet.Run returns
	runErr error         // written before done is closed

	mu      sync.Mutex
	eng     gnet.Engine
	addr    string
	started bool
	stopped bool
}

// NewServer returns a Server that does not listen until Start.
func NewServer(o ServerOptions) *Server {
	if o.Workers <= 0 {
		o.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	if o.QueueLen <= 0 {
		o.QueueLen = 1024
	}
	log := o.Logger.With().Str("component", "link-server").Logger()
	inline, _ := o.Handler.(InlineHandler)
	return &Server{
		opts:    o,
		inline:  inline,
		log:     log,
		dropLog: log.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second}),
		addr:    o.Addr,
		booted:  make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Start listens on the configured address and returns once the listener is
// bound, or with the error that prevented it.
func (s *Server) Start() error {
	if s.opts.Handler == nil {
		return errors.New("link: ServerOptions.Handler is nil, set the worker's frame handler")
	}
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("link: server already started")
	}
	// gnet reports a port in use as "setsockopt: bad file descriptor", so
	// a plain listen first turns that into "address already in use". The
	// server stays unstarted then, so Stop has nothing to wait for.
	probe, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("link: listen on %s: %w", s.opts.Addr, err)
	}
	probe.Close()
	s.started = true
	s.mu.Unlock()

	s.jobs = make(chan *job, s.opts.QueueLen)
	for range s.opts.Workers {
		s.workers.Add(1)
		go s.work()
	}
	go s.run()

	select {
	case <-s.booted:
		s.log.Info().Str("addr", s.Addr()).Int("workers", s.opts.Workers).
			Int("queue_len", s.opts.QueueLen).Msg("link server listening")
		return nil
	case <-s.done:
		close(s.jobs)
		s.workers.Wait()
		return fmt.Errorf("link: listen on %s: %w", s.opts.Addr, s.runErr)
	}
}

func (s *Server) run() {
	err := gnet.Run(&serverEvents{s: s}, "tcp://"+s.opts.Addr,
		gnet.WithMulticore(s.opts.Multicore),
		gnet.WithReuseAddr(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithTCPKeepAlive(15*time.Second),
		gnet.WithLogger(newGnetLogger(s.log)))
	s.runErr = err
	close(s.done)
}

// Addr returns the bound address once Start returned, else the configured one.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Conns returns the number of open gateway connections.
func (s *Server) Conns() int { return int(s.conns.Load()) }

// Stop closes the listener and every connection, then waits for running
// handlers to return. It returns nil after a clean shutdown, and ctx's error
// when ctx ends first.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.started || s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()

	select {
	case <-s.booted:
	case <-s.done:
		return nil // Start failed and cleaned up
	}
	s.mu.Lock()
	eng := s.eng
	s.mu.Unlock()

	// Engine.Stop polls for the end of the shutdown every 500 ms in gnet
	// v2.9.7, so wait on Run returning instead and cancel the poll after.
	stopCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = eng.Stop(stopCtx) }()
	select {
	case <-s.done:
	case <-ctx.Done():
		return fmt.Errorf("link: stop server %s: %w", s.Addr(), ctx.Err())
	}

	close(s.jobs)
	idle := make(chan struct{})
	go func() {
		s.workers.Wait()
		close(idle)
	}()
	select {
	case <-idle:
	case <-ctx.Done():
		return fmt.Errorf("link: stop server %s: handlers still running: %w", s.Addr(), ctx.Err())
	}
	s.log.Info().Str("addr", s.Addr()).Msg("link server stopped")
	return nil
}

// boundAddr reads the listener's address from a duplicate of its socket,
// because gnet does not expose it and a port of 0 is chosen by the kernel.
func boundAddr(eng gnet.Engine) (string, error) {
	fd, err := eng.Dup()
	if err != nil {
		return "", fmt.Errorf("duplicate listener: %w", err)
	}
	f := os.NewFile(uintptr(fd), "link-listener")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return "", fmt.Errorf("open duplicated listener: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

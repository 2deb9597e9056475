package link

import (
	"fmt"
	"sync"

	"github.com/panjf2000/gnet/v2"
)

// serverEvents receives a Server's gnet events. gnet calls each method on the
// event loop that owns the connection, so none of them may block.
type serverEvents struct {
	gnet.BuiltinEventEngine
	s *Server
}

func (e *serverEvents) OnBoot(eng gnet.Engine) gnet.Action {
	s := e.s
	addr, err := boundAddr(eng)
	s.mu.Lock()
	s.eng = eng
	if err == nil {
		s.addr = addr
	}
	s.mu.Unlock()
	if err != nil {
		s.log.Warn().Err(err).Str("addr", s.opts.Addr).
			Msg("reading the bound link address failed, Addr reports the configured one")
	}
	close(s.booted)
	return gnet.None
}

func (e *serverEvents) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	p := &peer{s: e.s, remote: c.RemoteAddr().String(), done: make(chan struct{})}
	p.w.init(c)
	c.SetContext(p)
	e.s.conns.Add(1)
	e.s.log.Debug().Str("gateway", p.remote).Msg("link connection opened")
	return nil, gnet.None
}

func (e *serverEvents) OnClose(c gnet.Conn, err error) gnet.Action {
	p, ok := c.Context().(*peer)
	if !ok {
		return gnet.None
	}
	p.w.close()
	close(p.done)
	e.s.conns.Add(-1)
	e.s.log.Debug().Err(err).Str("gateway", p.remote).Msg("link connection closed")
	return gnet.None
}

func (e *serverEvents) OnTraffic(c gnet.Conn) gnet.Action {
	p, ok := c.Context().(*peer)
	if !ok {
		return gnet.Close
	}
	// Responses from handlers run inline go out in one write after the read.
	p.w.beginLoop()
	err := readFrames(c, p)
	p.w.endLoop()
	if err != nil {
		e.s.dropLog.Warn().Err(err).Str("gateway", p.remote).
			Msg("closing link connection after a protocol error")
		return gnet.Close
	}
	return gnet.None
}

// frameReceiver handles one parsed frame on the event loop. A non-nil error
// closes the connection.
type frameReceiver interface {
	receive(f *Frame) error
	// scratch returns a Frame owned by the connection's event loop, reused
	// for every parsed frame so parsing does not allocate.
	scratch() *Frame
}

// readFrames passes each complete frame buffered on c to r, then discards
// the bytes of those frames and keeps any partial frame for the next call.
// It runs on c's event loop. Frames alias gnet's buffer until the Discard.
func readFrames(c gnet.Conn, r frameReceiver) error {
	n := c.InboundBuffered()
	if n == 0 {
		return nil
	}
	b, err := c.Peek(n)
	if err != nil {
		return fmt.Errorf("peek %d buffered bytes: %w", n, err)
	}

	f := r.scratch()
	used := 0
	for used < len(b) {
		var m int
		*f, m, err = ParseFrame(b[used:])
		if err != nil {
			return err
		}
		if m == 0 {
			break
		}
		used += m
		err = r.receive(f)
		*f = Frame{} // drop the references into gnet's buffer
		if err != nil {
			return err
		}
	}
	// gnet's Discard treats 0 as "discard everything", so skip it when only
	// part of a frame is buffered.
	if used > 0 {
		_, _ = c.Discard(used)
	}
	return nil
}

// peer is the Server's state for one gateway connection. It is safe for
// concurrent use.
type peer struct {
	s      *Server
	w      frameWriter
	remote string
	done   chan struct{} // closed by OnClose
	frame  Frame         // scratch frame for readFrames, used on the event loop only
}

var _ Peer = (*peer)(nil)

func (p *peer) Send(f *Frame) error {
	if f.Type == TypeRequest || f.Type == TypeCancel {
		return fmt.Errorf("link: a worker cannot send a %s frame to gateway %s", f.Type, p.remote)
	}
	return p.w.send(f)
}

func (p *peer) RemoteAddr() string    { return p.remote }
func (p *peer) Done() <-chan struct{} { return p.done }

func (p *peer) scratch() *Frame { return &p.frame }

// receive runs on the event loop.
func (p *peer) receive(f *Frame) error {
	switch f.Type {
	case TypeRequest, TypeCancel:
		if p.s.inline != nil && p.s.inline.Inline(f) {
			p.s.serveInline(p, f)
			return nil
		}
		p.s.dispatch(p, f)
		return nil
	case TypePing:
		return p.w.send(&Frame{Type: TypePong, Corr: f.Corr})
	case TypePong:
		return nil
	}
	return fmt.Errorf("link: unexpected %s frame from gateway %s", f.Type, p.remote)
}

// job is one frame waiting for a pool goroutine, with its own copy of the
// key and body because gnet reuses its read buffer.
type job struct {
	peer  *peer
	frame Frame
	buf   []byte
}

var jobPool = sync.Pool{New: func() any { return new(job) }}

// maxPooledJobBuf is the largest job buffer returned to jobPool. Larger ones
// are left to the garbage collector.
const maxPooledJobBuf = 64 << 10

func newJob(p *peer, f *Frame) *job {
	j := jobPool.Get().(*job)
	j.peer = p
	j.buf = append(append(j.buf[:0], f.Key...), f.Body...)
	j.frame = *f
	k := len(f.Key)
	j.frame.Key = j.buf[:k:k]
	j.frame.Body = j.buf[k:]
	return j
}

func (j *job) release() {
	j.peer = nil
	j.frame = Frame{}
	if cap(j.buf) > maxPooledJobBuf {
		j.buf = nil
	}
	jobPool.Put(j)
}

// dispatch queues f for the pool without blocking the event loop. A request
// that finds the queue full is answered StatusOverloaded, and a cancel frame
// is dropped.
func (s *Server) dispatch(p *peer, f *Frame) {
	j := newJob(p, f)
	select {
	case s.jobs <- j:
		return
	default:
	}
	j.release()

	if f.Type == TypeCancel {
		// NOTE: the observation stays registered until the gateway's
		// connection closes or the application expires it.
		s.dropLog.Warn().Str("gateway", p.remote).Uint64("observation", f.Corr).
			Msg("link queue full, dropped a cancel frame")
		return
	}
	resp := statusResponse(f, StatusOverloaded)
	if err := p.w.send(&resp); err != nil {
		s.dropLog.Warn().Err(err).Str("gateway", p.remote).Msg("sending an overloaded response failed")
	}
}

// statusResponse returns a response to req that carries only a status.
func statusResponse(req *Frame, s Status) Frame {
	return Frame{Type: TypeResponse, Proto: req.Proto, Corr: req.Corr, Shard: req.Shard, Status: s}
}

// work runs Handler for queued frames until Stop closes the queue.
func (s *Server) work() {
	defer s.workers.Done()
	for j := range s.jobs {
		s.serve(j)
	}
}

// serve runs Handler for a queued frame.
func (s *Server) serve(j *job) {
	defer j.release()
	defer s.recoverHandler(j.peer, &j.frame)
	s.opts.Handler.ServeFrame(j.peer, &j.frame)
}

// serveInline runs Handler on the event loop for a frame that its Inline
// method accepted. f aliases gnet's read buffer, which the contract of
// ServeFrame allows.
func (s *Server) serveInline(p *peer, f *Frame) {
	defer s.recoverHandler(p, f)
	s.opts.Handler.ServeFrame(p, f)
}

// recoverHandler, deferred around ServeFrame, recovers a panicking handler
// so one bad request does not end the worker process, and responds to the
// request with StatusHandlerError.
func (s *Server) recoverHandler(p *peer, f *Frame) {
	v := recover()
	if v == nil {
		return
	}
	s.log.Error().Str("gateway", p.remote).Uint64("corr", f.Corr).
		Str("type", f.Type.String()).Interface("panic", v).Msg("link handler panicked")
	if f.Type == TypeRequest {
		resp := statusResponse(f, StatusHandlerError)
		_ = p.w.send(&resp)
	}
}

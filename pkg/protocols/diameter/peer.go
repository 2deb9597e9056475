package diameter

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// peerState is the responder side of the peer state machine (RFC 6733 §5.6).
type peerState uint8

const (
	stateWaitCER peerState = iota // connected, waiting for the CER
	stateOpen                     // CER/CEA done, requests flow
	stateClosing                  // DPR sent or received, or CEA failed
	stateClosed
)

func (st peerState) String() string {
	switch st {
	case stateWaitCER:
		return "wait-cer"
	case stateOpen:
		return "open"
	case stateClosing:
		return "closing"
	}
	return "closed"
}

// peer is one Diameter connection. Its reader goroutine runs the state machine;
// the writer goroutine and the watchdog goroutine run beside it. It is safe for
// concurrent use.
type peer struct {
	s      *Server
	conn   net.Conn
	remote string
	w      *writer
	closed chan struct{} // closed by close
	// queued is set by the reader when a forwarded request waits for
	// QueueForwarder.Flush. Only the reader goroutine uses it.
	queued bool
	dpa    chan struct{} // closed when the DPA to our DPR arrives

	inFlight atomic.Int64
	requests atomic.Uint64
	lastRecv atomic.Int64 // unix nanoseconds of the last message read
	once     sync.Once    // guards close
	dpaOnce  sync.Once
	// claimed is the lower-cased Origin-Host this connection holds in
	// Server.hosts, or "". Only the reader goroutine writes it, and
	// Server.removePeer reads it after that goroutine is done.
	claimed string

	mu          sync.Mutex
	state       peerState
	host, realm string
	label       string // "peer" label of the metrics, set at CEA
	apps        []uint32
	log         zerolog.Logger
	dwrPending  bool
	lastDWA     time.Time
}

func newPeer(s *Server, conn net.Conn) *peer {
	remote := conn.RemoteAddr().String()
	return &peer{
		s:      s,
		conn:   conn,
		remote: remote,
		w:      newWriter(conn, s.opts.Watchdog, s.opts.MaxInFlightPerPeer+64),
		closed: make(chan struct{}),
		dpa:    make(chan struct{}),
		label:  otherPeerLabel,
		log:    s.log.With().Str("remote", remote).Logger(),
	}
}

// setState moves the peer to st and logs the transition once.
func (p *peer) setState(st peerState) {
	p.mu.Lock()
	from := p.state
	p.state = st
	log := p.log
	p.mu.Unlock()
	if from != st {
		log.Info().Stringer("from", from).Stringer("to", st).Msg("diameter peer state")
	}
}

func (p *peer) getState() peerState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// run reads and dispatches messages until the connection ends.
func (p *peer) run() {
	go p.w.run()
	defer func() {
		p.close("connection ended")
		<-p.w.done
	}()
	p.log.Info().Stringer("to", stateWaitCER).Msg("diameter peer state")

	// Until its CER is accepted a connection gets a small buffer and a
	// message limit of maxCER, so connections not yet accepted cost little
	// memory. An open connection reads through a larger buffer stacked on the
	// small one, and reads pass through the small one once it is empty.
	r := bufio.NewReaderSize(p.conn, maxCER)
	limit := min(maxCER, p.s.opts.MaxMessage)
	open := false
	// A peer must send its CER promptly (RFC 6733 §5.6 has no timer for it,
	// so the watchdog interval is used).
	_ = p.conn.SetReadDeadline(time.Now().Add(p.s.opts.Watchdog))
	for {
		msg, h, err := readFrame(r, limit)
		if err != nil {
			p.logReadError(err)
			return
		}
		p.lastRecv.Store(time.Now().UnixNano())
		if !p.dispatch(h, msg) {
			p.awaitWriter()
			return
		}
		if p.queued && !wholeMessageBuffered(r) {
			// The next read may wait for the peer, so send what was queued.
			p.queued = false
			p.s.queue.Flush()
		}
		if !open && p.getState() == stateOpen {
			open = true
			r = bufio.NewReaderSize(r, 32<<10)
			limit = p.s.opts.MaxMessage
		}
	}
}

// wholeMessageBuffered reports whether r holds a whole message, which the
// next read returns without waiting. The rest of a partial message may come
// only after the peer has its answers to the earlier ones.
func wholeMessageBuffered(r *bufio.Reader) bool {
	n := r.Buffered()
	if n < HeaderLen {
		return false
	}
	b, err := r.Peek(4)
	if err != nil {
		return false
	}
	length := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	return n >= length
}

// awaitWriter waits, at most one write timeout, for the writer to send the
// last answer queued with sendAndClose.
func (p *peer) awaitWriter() {
	t := time.NewTimer(p.w.timeout)
	defer t.Stop()
	select {
	case <-p.w.done:
	case <-p.closed:
	case <-t.C:
	}
}

func (p *peer) logReadError(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return
	}
	ev := p.log.Warn()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		ev = p.log.Info()
	}
	ev.Err(err).Stringer("state", p.getState()).Msg("diameter peer connection closed")
}

// readFrame reads one whole message from a stream. The buffer is sized by the
// header's Message Length only after it has been checked against maxMessage.
func readFrame(r io.Reader, maxMessage int) ([]byte, Header, error) {
	var hb [HeaderLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return nil, Header{}, err
	}
	h, err := ReadHeader(hb[:])
	if err != nil {
		return nil, h, fmt.Errorf("read header: %w", err)
	}
	if int(h.Length) > maxMessage {
		return nil, h, fmt.Errorf("read header: message length %d over the %d-byte limit "+
			"(4096 before the CER is accepted, then ServerOptions.MaxMessage)", h.Length, maxMessage)
	}
	msg := make([]byte, h.Length)
	copy(msg, hb[:])
	if _, err := io.ReadFull(r, msg[HeaderLen:]); err != nil {
		return nil, h, fmt.Errorf("read %d-byte message: %w", h.Length, err)
	}
	return msg, h, nil
}

// dispatch handles one message and reports whether to keep reading.
func (p *peer) dispatch(h Header, msg []byte) bool {
	st := p.getState()
	if st == stateWaitCER {
		if h.AppID != AppCommon || h.CommandCode != CmdCapabilitiesExchange || !h.IsRequest() {
			// RFC 6733 §5.6.1: nothing but a CER is accepted before the exchange.
			p.log.Warn().Uint32("command", h.CommandCode).Uint32("app", h.AppID).
				Msg("diameter message before CER, closing")
			p.close("message before CER")
			return false
		}
		return p.handleCER(h, msg)
	}
	if !h.IsRequest() {
		p.handleAnswer(h, msg)
		return true
	}
	if h.Version != Version {
		p.answerError(h, nil, ResultUnsupportedVersion, "unsupported Diameter version", nil)
		return true
	}
	if h.Flags&FlagError != 0 {
		p.answerError(h, nil, ResultInvalidHeaderBits, "E bit set in a request", nil)
		return true
	}
	if h.AppID == AppCommon {
		return p.handleBase(h, msg)
	}
	p.handleRequest(h, msg)
	return true
}

// handleBase answers the base protocol requests of an open connection.
func (p *peer) handleBase(h Header, msg []byte) bool {
	switch h.CommandCode {
	case CmdDeviceWatchdog:
		p.w.send(p.appendBaseAnswer(nil, h, ResultSuccess, true))
		return true
	case CmdDisconnectPeer:
		// Answer, then let the peer close; the writer closes our side after
		// the DPA is written (RFC 6733 §5.4).
		p.setState(stateClosing)
		p.w.sendAndClose(p.appendBaseAnswer(nil, h, ResultSuccess, false))
		return false
	case CmdCapabilitiesExchange:
		// A second CER on an open connection (RFC 6733 §5.6: R-Open has no
		// transition for it).
		p.answerError(h, nil, ResultUnableToComply, "capabilities already exchanged", nil)
		return true
	}
	p.answerError(h, sessionIDOf(msg), ResultCommandUnsupported, "command not supported", nil)
	return true
}

// appendBaseAnswer builds a DWA or DPA.
func (p *peer) appendBaseAnswer(dst []byte, req Header, result uint32, stateID bool) []byte {
	dst = AppendAnswerStart(dst, req, nil, result, p.s.id)
	if stateID {
		dst = AppendUint32(dst, AVPOriginStateID, AVPFlagMandatory, 0, p.s.stateID)
	}
	return SetLength(dst)
}

// handleAnswer takes the answers to the gateway's own DWR and DPR.
func (p *peer) handleAnswer(h Header, msg []byte) {
	if h.AppID != AppCommon {
		return
	}
	switch h.CommandCode {
	case CmdDeviceWatchdog:
		p.mu.Lock()
		p.dwrPending = false
		p.lastDWA = time.Now()
		p.mu.Unlock()
	case CmdDisconnectPeer:
		p.dpaOnce.Do(func() { close(p.dpa) })
	}
}

// answerError sends an error answer for req built by the gateway.
func (p *peer) answerError(req Header, sessionID []byte, result uint32, msg string, failed []byte) {
	p.w.send(AppendErrorAnswer(nil, req, sessionID, result, p.s.id, msg, failed))
	p.s.metrics.answered(p.peerLabel(), req.AppID, result)
}

func (p *peer) setLabel(label string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.label = label
}

// peerLabel returns the "peer" label value for this connection's metrics.
func (p *peer) peerLabel() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.label
}

// sessionIDOf returns the Session-Id data of msg, or nil.
func sessionIDOf(msg []byte) []byte {
	data, ok, _ := FindAVP(msg, AVPSessionID, 0)
	if !ok {
		return nil
	}
	return data
}

// close ends the connection once; later calls do nothing.
func (p *peer) close(reason string) {
	p.once.Do(func() {
		p.setState(stateClosed)
		p.log.Debug().Str("reason", reason).Msg("diameter peer closing")
		close(p.closed)
		p.w.stop()
		p.conn.Close()
	})
}

// disconnect starts the gateway's side of a disconnect: DPR to an open peer
// (RFC 6733 §5.4), an immediate close otherwise.
func (p *peer) disconnect() {
	if p.getState() != stateOpen {
		p.close("shutdown")
		return
	}
	p.setState(stateClosing)
	id := p.s.nextID()
	dpr := AppendHeader(nil, Header{Flags: FlagRequest, CommandCode: CmdDisconnectPeer, HopByHop: id, EndToEnd: id})
	dpr = AppendString(dpr, AVPOriginHost, AVPFlagMandatory, 0, p.s.id.Host)
	dpr = AppendString(dpr, AVPOriginRealm, AVPFlagMandatory, 0, p.s.id.Realm)
	dpr = AppendUint32(dpr, AVPDisconnectCause, AVPFlagMandatory, 0, disconnectCauseRebooting)
	if !p.w.send(SetLength(dpr)) {
		p.close("DPR not sent")
	}
}

func (p *peer) info() PeerInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PeerInfo{
		OriginHost:   p.host,
		OriginRealm:  p.realm,
		RemoteAddr:   p.remote,
		State:        p.state.String(),
		Applications: append([]uint32(nil), p.apps...),
		InFlight:     p.inFlight.Load(),
		Requests:     p.requests.Load(),
		LastDWA:      p.lastDWA,
	}
}

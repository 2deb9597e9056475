package load

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// DiameterConfig selects the Diameter requests and the identities in them.
type DiameterConfig struct {
	// App is cc (Credit-Control sessions: one CCR-I, Updates CCR-U, one
	// CCR-T), test (freeDiameter test_app Test-Requests) or mix (half the
	// slots of each connection run each).
	App         string
	Updates     int
	OriginHost  string
	OriginRealm string
	DestRealm   string
}

func (c *DiameterConfig) check() error {
	switch c.App {
	case "cc", "test", "mix":
	default:
		return fmt.Errorf("invalid -diameter-app %q: want cc, test or mix", c.App)
	}
	if c.Updates < 0 || c.Updates > 1000 {
		return fmt.Errorf("invalid -cc-updates %d: want 0 to 1000", c.Updates)
	}
	if c.OriginHost == "" || c.OriginRealm == "" || c.DestRealm == "" {
		return fmt.Errorf("missing Diameter identity: set -origin-host, -origin-realm and -dest-realm")
	}
	return nil
}

// diamProto builds CCRs and Test-Requests. Hop-by-Hop carries the slot index
// in its high 16 bits and the low 16 bits of the slot generation.
type diamProto struct {
	cfg      DiameterConfig
	conn     int
	sessions uint64
	e2e      uint32
	ccState  []ccSession // per slot
}

// ccSession is the Credit-Control session a slot is running (RFC 4006 §7).
type ccSession struct {
	id     string
	number uint32 // CC-Request-Number of the next request
}

func (p *diamProto) retransmits() bool { return false }

func (p *diamProto) fill(f *flow, i int, s *slot) {
	hbh := uint32(i)<<16 | s.gen&0xffff
	p.e2e++
	var m diamMsg
	if p.cfg.App == "test" || (p.cfg.App == "mix" && i%2 == 1) {
		p.sessions++
		m.begin(s.buf, flagRequest|flagProxiable, cmdTestRequest, appTest, hbh, p.e2e)
		m.str(avpSessionID, p.sessionID())
		m.str(avpDestinationRealm, p.cfg.DestRealm)
		m.str(avpOriginHost, p.cfg.OriginHost)
		m.str(avpOriginRealm, p.cfg.OriginRealm)
		m.u32(avpTest, 0, vendorTest, uint32(f.rng.Int32()))
		s.buf = m.end()
		return
	}
	cc := &p.ccState[i]
	reqType := uint32(2) // UPDATE_REQUEST
	switch {
	case cc.id == "":
		p.sessions++
		cc.id, cc.number, reqType = p.sessionID(), 0, 1 // INITIAL_REQUEST
	case cc.number > uint32(p.cfg.Updates):
		reqType = 3 // TERMINATION_REQUEST
	}
	m.begin(s.buf, flagRequest|flagProxiable, cmdCreditControl, appCreditControl, hbh, p.e2e)
	m.str(avpSessionID, cc.id)
	m.str(avpOriginHost, p.cfg.OriginHost)
	m.str(avpOriginRealm, p.cfg.OriginRealm)
	m.str(avpDestinationRealm, p.cfg.DestRealm)
	m.u32(avpAuthApplicationID, avpFlagMandatory, 0, appCreditControl)
	m.str(avpServiceContextID, "32251@3gpp.org")
	m.u32(avpCCRequestType, avpFlagMandatory, 0, reqType)
	m.u32(avpCCRequestNumber, avpFlagMandatory, 0, cc.number)
	s.buf = m.end()
	cc.number++
	if reqType == 3 {
		cc.id = ""
	}
}

// sessionID formats a Session-Id as <DiameterIdentity>;<high>;<low>
// (RFC 6733 §8.8), unique per connection and session.
func (p *diamProto) sessionID() string {
	return p.cfg.OriginHost + ";" + strconv.Itoa(p.conn) + ";" + strconv.FormatUint(p.sessions, 10)
}

// tcpWire buffers writes to one connection. Guarded by its flow's mutex.
type tcpWire struct{ w *bufio.Writer }

func (w *tcpWire) queue(b []byte) { _, _ = w.w.Write(b) }
func (w *tcpWire) flush() error   { return w.w.Flush() }

// dialDiameter opens the connections and runs CER/CEA on each.
func (r *runner) dialDiameter() ([]*flow, func(), error) {
	var flows []*flow
	var conns []net.Conn
	closeAll := func() {
		for _, c := range conns {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		}
		for _, f := range flows {
			f.mu.Lock()
			if !f.closed {
				f.closed = true
				disconnect(f)
			}
			f.mu.Unlock()
		}
		for _, c := range conns {
			c.Close()
		}
	}
	per, extra := r.cfg.InFlight/r.cfg.Sockets, r.cfg.InFlight%r.cfg.Sockets
	for i := range r.cfg.Sockets {
		c, err := net.DialTimeout("tcp", r.cfg.Target, 5*time.Second)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("dial Diameter peer %s: %w", r.cfg.Target, err)
		}
		conns = append(conns, c)
		rd := bufio.NewReaderSize(c, 64<<10)
		// Each connection is a peer of its own: a Diameter node keeps one
		// connection per Origin-Host (RFC 6733 §5.6) and rejects a second.
		cfg := r.cfg.Diameter
		cfg.OriginHost = "c" + strconv.Itoa(i) + "." + cfg.OriginHost
		if err := exchangeCapabilities(c, rd, cfg, i); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("connection %d to %s: %w", i, r.cfg.Target, err)
		}
		n := per
		if i < extra {
			n++
		}
		p := &diamProto{cfg: cfg, conn: i, ccState: make([]ccSession, n)}
		f := newFlow(r, i, n, p)
		f.wire = &tcpWire{w: bufio.NewWriterSize(c, 64<<10)}
		flows = append(flows, f)
		go f.readDiameter(rd)
	}
	return flows, closeAll, nil
}

// exchangeCapabilities sends a CER and waits up to 5 s for a CEA with
// Result-Code 2001 (RFC 6733 §5.3). The CER offers Credit-Control and the
// test_app application.
func exchangeCapabilities(c net.Conn, rd *bufio.Reader, cfg DiameterConfig, conn int) error {
	var m diamMsg
	m.begin(nil, flagRequest, cmdCapabilitiesExchange, 0, uint32(conn), uint32(conn))
	m.str(avpOriginHost, cfg.OriginHost)
	m.str(avpOriginRealm, cfg.OriginRealm)
	m.avp(avpHostIPAddress, avpFlagMandatory, 0, []byte{0, 1, 127, 0, 0, 1}) // family 1, IPv4
	m.u32(avpVendorID, avpFlagMandatory, 0, 0)
	m.avp(avpProductName, 0, 0, []byte("shardgate-loadgen"))
	m.u32(avpOriginStateID, avpFlagMandatory, 0, uint32(time.Now().Unix()))
	m.u32(avpAuthApplicationID, avpFlagMandatory, 0, appCreditControl)
	m.group(avpVendorSpecificAppID, func() {
		m.u32(avpVendorID, avpFlagMandatory, 0, vendorTest)
		m.u32(avpAuthApplicationID, avpFlagMandatory, 0, appTest)
	})

	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(m.end()); err != nil {
		return fmt.Errorf("send CER: %w", err)
	}

	msg, h, err := readDiameter(rd, nil)
	if err != nil {
		return fmt.Errorf("read CEA: %w", err)
	}
	if h.cmd != cmdCapabilitiesExchange || h.flags&flagRequest != 0 {
		return fmt.Errorf("expected CEA, got command %d flags %#x", h.cmd, h.flags)
	}
	if rc := resultCode(msg); rc != resultSuccess {
		return fmt.Errorf("CEA Result-Code %d, want 2001: check that the peer accepts "+
			"Origin-Host %q and application 4 or %d", rc, cfg.OriginHost, appTest)
	}
	return nil
}

// readDiameter reads one message into buf, which grows as needed up to
// diamMaxLen.
func readDiameter(rd *bufio.Reader, buf []byte) ([]byte, diamHeader, error) {
	hb, err := rd.Peek(diamHeaderLen)
	if err != nil {
		return nil, diamHeader{}, err
	}
	h, err := parseDiamHeader(hb)
	if err != nil {
		return nil, h, err
	}
	if cap(buf) < h.length {
		buf = make([]byte, h.length)
	}
	buf = buf[:h.length]
	if _, err := io.ReadFull(rd, buf); err != nil {
		return nil, h, fmt.Errorf("read %d-byte message: %w", h.length, err)
	}
	return buf, h, nil
}

// readDiameter matches answers to slots and answers the peer's DWRs until
// the connection closes. Writes made while handling buffered messages are
// flushed together once the reader has nothing buffered.
func (f *flow) readDiameter(rd *bufio.Reader) {
	buf := make([]byte, 4096)
	for {
		msg, h, err := readDiameter(rd, buf)
		if err != nil {
			f.mu.Lock()
			closed := f.closed
			f.mu.Unlock()
			if !closed {
				f.r.fail(fmt.Errorf("connection %d: %w", f.id, err))
			}
			return
		}
		buf = msg[:cap(msg)]
		f.mu.Lock()
		f.onDiameter(msg, h)
		if rd.Buffered() < diamHeaderLen {
			err = f.wire.flush()
		}
		f.mu.Unlock()
		if err != nil {
			f.r.fail(fmt.Errorf("connection %d: %w", f.id, err))
			return
		}
	}
}

func (f *flow) onDiameter(msg []byte, h diamHeader) {
	if h.flags&flagRequest != 0 {
		f.answerPeer(h)
		return
	}
	if h.cmd == cmdDisconnectPeer || h.cmd == cmdDeviceWatchdog {
		return
	}
	i := int(h.hbh >> 16)
	if i >= len(f.slots) || f.slots[i].gen&0xffff != h.hbh&0xffff {
		f.count("stale")
		return
	}
	// Answers come through a buffered TCP stream, where one read can carry
	// several answers and no kernel timestamp marks each one, so they are
	// stamped when the reader parses them (rx_clock "user").
	f.complete(i, f.slots[i].gen, resultLabel(resultCode(msg)), readNow(f.r.now()))
}

// resultLabels contains the outcome labels of Result-Codes below 6000 (every
// code RFC 6733 §7.1 defines), so that counting an answer does not allocate.
var resultLabels = func() (t [6000]string) {
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func resultLabel(rc uint32) string {
	if rc < uint32(len(resultLabels)) {
		return resultLabels[rc]
	}
	return strconv.FormatUint(uint64(rc), 10)
}

// answerPeer answers a DWR or DPR with 2001 (RFC 6733 §5.5.2, §5.4.2) and
// any other request with 3002 DIAMETER_UNABLE_TO_DELIVER, since the
// generator serves no application.
func (f *flow) answerPeer(h diamHeader) {
	cfg := peerConfig(f)
	var m diamMsg
	rc := uint32(resultSuccess)
	flags := byte(0)
	if h.cmd != cmdDeviceWatchdog && h.cmd != cmdDisconnectPeer {
		rc, flags = 3002, flagError
	}
	m.begin(nil, flags, h.cmd, h.app, h.hbh, h.e2e)
	m.u32(avpResultCode, avpFlagMandatory, 0, rc)
	m.str(avpOriginHost, cfg.OriginHost)
	m.str(avpOriginRealm, cfg.OriginRealm)
	f.wire.queue(m.end())
	f.count("peer-" + strconv.FormatUint(uint64(h.cmd), 10))
}

// disconnect sends a DPR so the peer closes without logging an error
// (RFC 6733 §5.4). The DPA is not awaited. Called with f.mu held.
func disconnect(f *flow) {
	cfg := peerConfig(f)
	var m diamMsg
	m.begin(nil, flagRequest, cmdDisconnectPeer, 0, 0xffffffff, 0xffffffff)
	m.str(avpOriginHost, cfg.OriginHost)
	m.str(avpOriginRealm, cfg.OriginRealm)
	m.u32(avpDisconnectCause, avpFlagMandatory, 0, disconnectRebooting)
	f.wire.queue(m.end())
	_ = f.wire.flush()
}

// peerConfig returns the Diameter settings of f's connection, whose
// Origin-Host is its own.
func peerConfig(f *flow) DiameterConfig {
	if p, ok := f.proto.(*diamProto); ok && p.cfg.OriginHost != "" {
		return p.cfg
	}
	return f.r.cfg.Diameter
}

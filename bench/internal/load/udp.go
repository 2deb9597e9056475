package load

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"golang.org/x/net/ipv4"
)

// batchSize is the number of datagrams per recvmmsg/sendmmsg call.
const batchSize = 64

// udpWire batches outgoing datagrams of one connected UDP socket into
// sendmmsg calls. It is guarded by its flow's mutex.
type udpWire struct {
	pc   *ipv4.PacketConn
	msgs []ipv4.Message
	n    int
}

func newUDPWire(c *net.UDPConn) *udpWire {
	w := &udpWire{pc: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, batchSize)}
	for i := range w.msgs {
		w.msgs[i].Buffers = make([][]byte, 1)
	}
	return w
}

// queue keeps a reference to b until the next flush. Callers do not change b
// before then, because both run under the flow's mutex.
func (w *udpWire) queue(b []byte) {
	if w.n == len(w.msgs) {
		_ = w.flush()
	}
	w.msgs[w.n].Buffers[0] = b
	w.n++
}

// flush sends the queued datagrams. Send errors are not returned: at the
// end of a run the socket is closed, and before that the only error is
// ECONNREFUSED from an earlier ICMP port unreachable. Either way the
// datagrams not sent time out and are counted lost.
func (w *udpWire) flush() error {
	for off := 0; off < w.n; {
		k, err := w.pc.WriteBatch(w.msgs[off:w.n], 0)
		if err != nil {
			break
		}
		off += k
	}
	w.n = 0
	return nil
}

// dialUDP opens one connected socket per flow and sets SO_TIMESTAMPNS on
// each, so the kernel stamps every received datagram. If any socket rejects
// the option, the run stamps responses at the read on every socket, so all
// flows use the same clock.
func (r *runner) dialUDP(newProto func() proto) ([]*flow, func(), error) {
	raddr, err := net.ResolveUDPAddr("udp", r.cfg.Target)
	if err != nil {
		return nil, nil, fmt.Errorf("resolve target %s: %w", r.cfg.Target, err)
	}
	var flows []*flow
	var conns []*net.UDPConn
	closeAll := func() {
		for _, f := range flows {
			f.mu.Lock()
			f.closed = true
			f.mu.Unlock()
		}
		for _, c := range conns {
			c.Close()
		}
	}
	per, extra := r.cfg.InFlight/r.cfg.Sockets, r.cfg.InFlight%r.cfg.Sockets
	r.kernelRx = true
	for i := range r.cfg.Sockets {
		c, err := net.DialUDP("udp", nil, raddr)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("dial %s: %w", r.cfg.Target, err)
		}
		_ = c.SetReadBuffer(4 << 20)
		_ = c.SetWriteBuffer(4 << 20)
		if r.kernelRx {
			if err := enableRxTimestamps(c); err != nil {
				r.kernelRx = false
				r.cfg.Log.Warn().Err(err).Str("target", r.cfg.Target).
					Msg("kernel receive timestamps unavailable: latency includes the generator's read wakeup (rx_clock user)")
			}
		}
		conns = append(conns, c)
		n := per
		if i < extra {
			n++
		}
		f := newFlow(r, i, n, newProto())
		f.wire = newUDPWire(c)
		flows = append(flows, f)
	}
	for i, f := range flows {
		go f.readUDP(conns[i])
	}
	return flows, closeAll, nil
}

// readUDP receives datagrams in batches until the socket closes and hands
// each to the protocol's response parser with its arrival time.
func (f *flow) readUDP(c *net.UDPConn) {
	pc := ipv4.NewPacketConn(c)
	msgs := make([]ipv4.Message, batchSize)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
		if f.r.kernelRx {
			msgs[i].OOB = make([]byte, rxOOBLen)
		}
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ECONNREFUSED and the like: the timer counts the loss
		}
		f.mu.Lock()
		now := f.r.now()
		for _, m := range msgs[:n] {
			f.onDatagram(m.Buffers[0][:m.N], f.arrivalOf(m.OOB[:m.NN], now))
		}
		err = f.wire.flush()
		f.mu.Unlock()
		if err != nil {
			f.r.fail(err)
			return
		}
	}
}

// arrivalOf returns the arrival of a datagram read at runner time read
// whose control messages are oob. Without a kernel timestamp the datagram is
// stamped at the read, and counted if the socket should have had one.
func (f *flow) arrivalOf(oob []byte, read int64) arrival {
	if !f.r.kernelRx {
		return readNow(read)
	}
	wall, ok := parseRxTimestamp(oob)
	if !ok {
		if f.r.inWindow(read) {
			f.st.noRxStamp++
		}
		return readNow(read)
	}
	// The kernel stamped the datagram before the read, so a later stamp
	// can only come from the error of wallOffset. Clamp it to the read.
	return arrival{stamp: min(f.r.fromWallClock(wall), read), read: read}
}

func (f *flow) onDatagram(b []byte, at arrival) {
	switch p := f.proto.(type) {
	case *echoProto:
		if len(b) < 8 {
			f.count("short")
			return
		}
		f.complete(int(binary.BigEndian.Uint32(b)), binary.BigEndian.Uint32(b[4:]), "echo", at)
	case *coapProto:
		p.onResponse(f, b, at)
	}
}

// echoProto sends datagrams of cfg.Payload bytes that start with the slot
// index and generation; an echo server returns them unchanged.
type echoProto struct{ size int }

func (p *echoProto) fill(_ *flow, i int, s *slot) {
	if s.buf == nil {
		s.buf = make([]byte, p.size)
	}
	binary.BigEndian.PutUint32(s.buf, uint32(i))
	binary.BigEndian.PutUint32(s.buf[4:], s.gen)
}

func (p *echoProto) retransmits() bool { return false }

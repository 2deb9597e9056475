//go:build !linux

package load

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/net/ipv4"
)

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
		_ = c.SetReadBuffer(socketBufferBytes)
		_ = c.SetWriteBuffer(socketBufferBytes)
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
		msgs[i].Buffers = [][]byte{make([]byte, maxDatagram)}
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

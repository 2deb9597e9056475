//go:build !linux

package coap

import (
	"net"
	"net/netip"
)

// batchSocket moves one datagram per system call where recvmmsg and
// sendmmsg are not available.
type batchSocket struct{ conn *net.UDPConn }

func (s *batchSocket) localAddr() net.Addr { return s.conn.LocalAddr() }

// shutdown closes the socket, which ends a blocked read.
func (s *batchSocket) shutdown() { s.conn.Close() }

func (s *batchSocket) close() { s.conn.Close() }

func (s *batchSocket) sendTo(b []byte, to netip.AddrPort) error {
	_, err := s.conn.WriteToUDPAddrPort(b, to)
	return err
}

type readBatch struct {
	buf  [slotSize + 1]byte
	n    int
	from netip.AddrPort
}

type sendState struct{}

func newReadBatch() *readBatch { return &readBatch{} }

func (s *batchSocket) read(r *readBatch) (int, error) {
	n, from, err := s.conn.ReadFromUDPAddrPort(r.buf[:])
	if err != nil {
		return 0, err
	}
	r.n, r.from = n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	return 1, nil
}

func (r *readBatch) datagram(int) ([]byte, netip.AddrPort, bool) {
	if r.n > slotSize {
		return r.buf[:slotSize], r.from, false
	}
	return r.buf[:r.n], r.from, true
}

func (s *batchSocket) writeBatch(_ *sendState, bufs [][]byte, to []netip.AddrPort) int {
	failed := 0
	for i, b := range bufs {
		if _, err := s.conn.WriteToUDPAddrPort(b, to[i]); err != nil {
			failed++
		}
	}
	return failed
}

// listenUDP binds one socket, which all readers share.
func listenUDP(addr *net.UDPAddr, _ int) ([]*batchSocket, error) {
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, err
	}
	// Large socket buffers absorb bursts while readers are busy.
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	return []*batchSocket{{conn: conn}}, nil
}

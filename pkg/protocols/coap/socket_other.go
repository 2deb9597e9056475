//go:build !linux

package coap

import (
	"net"
	"net/netip"
)

// batchSocket moves one datagram per system call where recvmmsg and
// sendmmsg are not available.
type batchSocket struct{ conn *net.UDPConn }

func newBatchSocket(conn *net.UDPConn) (*batchSocket, error) { return &batchSocket{conn: conn}, nil }

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
func listenUDP(addr *net.UDPAddr, _ int) ([]*net.UDPConn, error) {
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, err
	}
	return []*net.UDPConn{conn}, nil
}

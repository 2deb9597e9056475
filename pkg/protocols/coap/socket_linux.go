//go:build linux

package coap

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchSocket moves many datagrams per system call with recvmmsg and
// sendmmsg through the socket's RawConn, so waiting still goes through Go's
// network poller. The per-call state lives in a readBatch or a sendState
// that each caller owns, so the socket itself is safe for concurrent use.
type batchSocket struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	// v6 is true for an AF_INET6 socket, which needs IPv4 peers as
	// IPv4-mapped IPv6 addresses.
	v6 bool
}

func newBatchSocket(conn *net.UDPConn) (*batchSocket, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("coap: raw socket: %w", err)
	}
	local, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, errors.New("coap: socket is not UDP")
	}
	// A socket bound to a specific IPv4 address is AF_INET; one bound to
	// the unspecified address or an IPv6 address is AF_INET6.
	v6 := local.IP.To4() == nil || local.IP.IsUnspecified()
	var sa unix.Sockaddr
	var ctlErr error
	if err := rc.Control(func(fd uintptr) { sa, ctlErr = unix.Getsockname(int(fd)) }); err != nil {
		return nil, fmt.Errorf("coap: raw socket: %w", err)
	}
	if ctlErr == nil {
		_, v6 = sa.(*unix.SockaddrInet6)
	}
	return &batchSocket{conn: conn, rc: rc, v6: v6}, nil
}

// listenUDP binds n sockets to addr with SO_REUSEPORT, one per reader, so
// that the kernel spreads devices over them by address and port, and readers
// never queue on one descriptor's read lock. A plain bind first claims the
// address: it fails with "address already in use" when another process
// holds the port, even one that set SO_REUSEPORT too, and resolves port 0.
func listenUDP(addr *net.UDPAddr, n int) ([]*net.UDPConn, error) {
	probe, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, err
	}
	if n <= 1 {
		return []*net.UDPConn{probe}, nil
	}
	bound := probe.LocalAddr().String()
	probe.Close()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	conns := make([]*net.UDPConn, 0, n)
	for range n {
		pc, err := lc.ListenPacket(context.Background(), "udp", bound)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("bind reader socket %d of %d with SO_REUSEPORT: %w", len(conns)+1, n, err)
		}
		conns = append(conns, pc.(*net.UDPConn))
	}
	return conns, nil
}

// readBatch is one reader's receive buffers.
type readBatch struct {
	hdrs  [batchSize]unix.Mmsghdr
	iovs  [batchSize]unix.Iovec
	names [batchSize]unix.RawSockaddrInet6
	bufs  [batchSize][slotSize]byte
	// recv is the RawConn callback, built once so that a read allocates
	// no closure; it leaves its results in n and errno.
	recv  func(fd uintptr) bool
	n     int
	errno syscall.Errno
}

func newReadBatch() *readBatch {
	r := &readBatch{}
	for i := range r.hdrs {
		r.iovs[i].Base = &r.bufs[i][0]
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.SetIovlen(1)
		r.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	r.recv = func(fd uintptr) bool {
		r0, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])),
			batchSize, unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN || e == unix.EINTR {
			return false
		}
		r.n, r.errno = int(r0), e
		return true
	}
	return r
}

// read fills r with up to batchSize datagrams, blocking until one arrives,
// and returns how many it got.
func (s *batchSocket) read(r *readBatch) (int, error) {
	for i := range r.hdrs {
		r.iovs[i].SetLen(slotSize)
		r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		r.hdrs[i].Hdr.Flags = 0
		r.hdrs[i].Len = 0
	}
	r.n, r.errno = 0, 0
	if err := s.rc.Read(r.recv); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, fmt.Errorf("coap: recvmmsg: %w", r.errno)
	}
	return r.n, nil
}

// datagram returns message i of the last read and its source. ok is false
// for a datagram longer than slotSize, and b then holds its first slotSize
// bytes.
func (r *readBatch) datagram(i int) (b []byte, from netip.AddrPort, ok bool) {
	h := &r.hdrs[i]
	from = sockaddrToAddrPort(&r.names[i])
	if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
		return r.bufs[i][:], from, false
	}
	return r.bufs[i][:h.Len], from, true
}

func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	// The port is in network byte order in both address families.
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	if sa.Family == unix.AF_INET {
		in4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
}

func (s *batchSocket) fillSockaddr(sa *unix.RawSockaddrInet6, to netip.AddrPort) uint32 {
	*sa = unix.RawSockaddrInet6{}
	addr := to.Addr()
	if !s.v6 {
		in4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		in4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&in4.Port))[:], to.Port())
		in4.Addr = addr.Unmap().As4()
		return unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], to.Port())
	sa.Addr = addr.As16()
	return unix.SizeofSockaddrInet6
}

// sendState holds the sendmmsg headers of one outBatch, kept off the stack
// because the kernel reads them through pointers.
type sendState struct {
	hdrs  [batchSize]unix.Mmsghdr
	iovs  [batchSize]unix.Iovec
	names [batchSize]unix.RawSockaddrInet6
	// send is the RawConn callback, built on first use so that a write
	// allocates no closure; it sends hdrs[sent:n] and leaves its results
	// in done and errno.
	send    func(fd uintptr) bool
	sent, n int
	done    int
	errno   syscall.Errno
}

// writeBatch sends each bufs[i] to to[i] and returns how many datagrams
// could not be sent.
func (s *batchSocket) writeBatch(st *sendState, bufs [][]byte, to []netip.AddrPort) int {
	if st.send == nil {
		st.send = func(fd uintptr) bool {
			r0, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&st.hdrs[st.sent])),
				uintptr(st.n-st.sent), unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EAGAIN || e == unix.EINTR {
				return false
			}
			st.done, st.errno = int(r0), e
			return true
		}
	}
	st.n = len(bufs)
	for i := 0; i < st.n; i++ {
		if len(bufs[i]) > 0 {
			st.iovs[i].Base = &bufs[i][0]
		}
		st.iovs[i].SetLen(len(bufs[i]))
		st.hdrs[i].Hdr.Iov = &st.iovs[i]
		st.hdrs[i].Hdr.SetIovlen(1)
		st.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&st.names[i]))
		st.hdrs[i].Hdr.Namelen = s.fillSockaddr(&st.names[i], to[i])
	}
	failed := 0
	for st.sent = 0; st.sent < st.n; {
		st.done, st.errno = 0, 0
		if err := s.rc.Write(st.send); err != nil {
			return failed + st.n - st.sent
		}
		if st.errno != 0 || st.done == 0 {
			// The first datagram of the rest was refused (for example
			// EHOSTUNREACH): skip it and send the others.
			failed++
			st.sent++
			continue
		}
		st.sent += st.done
	}
	return failed
}

//go:build linux

package coap

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchSocket moves many datagrams per system call with recvmmsg and
// sendmmsg on a socket that Go's network poller does not manage. A reader
// blocks in recvmmsg itself, so a datagram wakes its thread directly,
// without a round through the poller and the scheduler. The per-call state
// lives in a readBatch or a sendState that each caller owns, so the socket
// itself is safe for concurrent use.
type batchSocket struct {
	fd    int
	local *net.UDPAddr
	// v6 is true for an AF_INET6 socket, which needs IPv4 peers as
	// IPv4-mapped IPv6 addresses.
	v6 bool
	// stopping is set by shutdown, after which reads return net.ErrClosed.
	stopping atomic.Bool

	// mu is held for reading around each send and for writing by close, so
	// a send never reaches a descriptor number that was closed and reused.
	mu     sync.RWMutex
	closed bool
}

// readTimeout bounds one blocking recvmmsg, so a reader notices shutdown
// even if the wakeup from shutdown(2) were lost.
const readTimeout = time.Second

// listenUDP binds n sockets to addr with SO_REUSEPORT, one per reader, so
// that the kernel spreads devices over them by address and port, and readers
// never queue on one descriptor's read lock. A plain bind first claims the
// address: it fails with "address already in use" when another process
// holds the port, even one that set SO_REUSEPORT too. It also resolves port
// 0 and picks the address family Go would pick.
func listenUDP(addr *net.UDPAddr, n int) ([]*batchSocket, error) {
	probe, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, err
	}
	local, _ := probe.LocalAddr().(*net.UDPAddr)
	var sa unix.Sockaddr
	rc, err := probe.SyscallConn()
	if err == nil {
		var serr error
		err = rc.Control(func(fd uintptr) { sa, serr = unix.Getsockname(int(fd)) })
		if err == nil {
			err = serr
		}
	}
	probe.Close()
	if err != nil {
		return nil, fmt.Errorf("read the bound address: %w", err)
	}
	socks := make([]*batchSocket, 0, max(n, 1))
	for range max(n, 1) {
		s, err := bindReusePort(sa, local)
		if err != nil {
			for _, s := range socks {
				s.close()
			}
			return nil, fmt.Errorf("bind reader socket %d of %d with SO_REUSEPORT: %w", len(socks)+1, n, err)
		}
		socks = append(socks, s)
	}
	if err := checkExclusive(socks); err != nil {
		for _, s := range socks {
			s.close()
		}
		return nil, err
	}
	return socks, nil
}

// checkExclusive fails when a socket of another owner is bound to the same
// address and port as socks, which SO_REUSEPORT allows for a process of the
// same user that binds in the moment between the plain bind and ours. The
// kernel would then split the devices between the two processes. It reads
// the sockets of the network namespace from /proc/net/udp and udp6.
// NOTE: without a readable /proc the check is skipped.
func checkExclusive(socks []*batchSocket) error {
	ours := make(map[string]bool, len(socks))
	for _, s := range socks {
		var st unix.Stat_t
		if err := unix.Fstat(s.fd, &st); err != nil {
			return nil
		}
		ours[strconv.FormatUint(st.Ino, 10)] = true
	}
	var lines []string
	for _, name := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil
		}
		lines = append(lines, strings.Split(string(b), "\n")...)
	}
	// Fields: sl local_address rem_address st ... uid timeout inode.
	owners := map[string][]string{} // local address to inodes
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) < 10 || f[0] == "sl" {
			continue
		}
		owners[f[1]] = append(owners[f[1]], f[9])
	}
	for _, inodes := range owners {
		mine, other := false, false
		for _, ino := range inodes {
			if ours[ino] {
				mine = true
			} else {
				other = true
			}
		}
		if mine && other {
			return fmt.Errorf("another socket shares the address through SO_REUSEPORT: %w", unix.EADDRINUSE)
		}
	}
	return nil
}

// bindReusePort opens one blocking UDP socket of sa's family bound to sa.
func bindReusePort(sa unix.Sockaddr, local *net.UDPAddr) (*batchSocket, error) {
	family := unix.AF_INET
	_, v6 := sa.(*unix.SockaddrInet6)
	if v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("open socket: %w", err)
	}

	tv := unix.NsecToTimeval(int64(readTimeout))
	opts := []struct {
		level, name, value int
	}{
		{unix.SOL_SOCKET, unix.SO_REUSEPORT, 1},
		// Large buffers absorb bursts while readers are busy; the kernel
		// caps them at net.core.rmem_max and wmem_max.
		{unix.SOL_SOCKET, unix.SO_RCVBUF, 4 << 20},
		{unix.SOL_SOCKET, unix.SO_SNDBUF, 4 << 20},
	}
	if v6 {
		// Accept IPv4 too, as Go's own sockets on "udp" do.
		opts = append(opts, struct{ level, name, value int }{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0})
	}

	for _, o := range opts {
		if err = unix.SetsockoptInt(fd, o.level, o.name, o.value); err != nil {
			break
		}
	}
	if err == nil {
		err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}
	if err == nil {
		err = unix.Bind(fd, sa)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}

	return &batchSocket{fd: fd, local: local, v6: v6}, nil
}

func (s *batchSocket) localAddr() net.Addr { return s.local }

// shutdown wakes the readers blocked on the socket and makes later reads
// return net.ErrClosed. Sends still work until close.
func (s *batchSocket) shutdown() {
	s.stopping.Store(true)
	_ = unix.Shutdown(s.fd, unix.SHUT_RD)
}

// close closes the descriptor once no send is using it. Readers must have
// returned first.
func (s *batchSocket) close() {
	s.stopping.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		_ = unix.Close(s.fd)
	}
}

// sendTo sends one datagram.
func (s *batchSocket) sendTo(b []byte, to netip.AddrPort) error {
	var sa unix.RawSockaddrInet6
	n := s.fillSockaddr(&sa, to)
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return net.ErrClosed
	}
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), uintptr(p), uintptr(len(b)), 0,
		uintptr(unsafe.Pointer(&sa)), uintptr(n))
	if e != 0 {
		return fmt.Errorf("coap: sendto %s: %w", to, e)
	}
	return nil
}

// readBatch is one reader's receive buffers.
type readBatch struct {
	hdrs  [batchSize]unix.Mmsghdr
	iovs  [batchSize]unix.Iovec
	names [batchSize]unix.RawSockaddrInet6
	bufs  [batchSize][slotSize]byte
}

func newReadBatch() *readBatch {
	r := &readBatch{}
	for i := range r.hdrs {
		r.iovs[i].Base = &r.bufs[i][0]
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.SetIovlen(1)
		r.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	return r
}

// read fills r with up to batchSize datagrams, blocking until one arrives,
// and returns how many it got. After shutdown it returns net.ErrClosed.
func (s *batchSocket) read(r *readBatch) (int, error) {
	for {
		for i := range r.hdrs {
			r.iovs[i].SetLen(slotSize)
			r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
			r.hdrs[i].Hdr.Flags = 0
			r.hdrs[i].Len = 0
		}
		if s.stopping.Load() {
			return 0, net.ErrClosed
		}
		// MSG_WAITFORONE blocks for the first datagram only and takes the
		// rest of the batch from what is already queued.
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&r.hdrs[0])),
			batchSize, unix.MSG_WAITFORONE, 0, 0)
		if s.stopping.Load() {
			return 0, net.ErrClosed
		}
		switch e {
		case 0:
			return int(n), nil
		case unix.EAGAIN, unix.EINTR:
			continue // readTimeout passed, or a signal
		}
		return 0, fmt.Errorf("coap: recvmmsg: %w", e)
	}
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
}

// writeBatch sends each bufs[i] to to[i] and returns how many datagrams
// could not be sent. The socket is blocking, so a full send buffer waits
// for room instead of dropping.
func (s *batchSocket) writeBatch(st *sendState, bufs [][]byte, to []netip.AddrPort) int {
	n := len(bufs)
	for i := 0; i < n; i++ {
		if len(bufs[i]) > 0 {
			st.iovs[i].Base = &bufs[i][0]
		}
		st.iovs[i].SetLen(len(bufs[i]))
		st.hdrs[i].Hdr.Iov = &st.iovs[i]
		st.hdrs[i].Hdr.SetIovlen(1)
		st.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&st.names[i]))
		st.hdrs[i].Hdr.Namelen = s.fillSockaddr(&st.names[i], to[i])
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return n
	}
	failed := 0
	for sent := 0; sent < n; {
		done, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&st.hdrs[sent])),
			uintptr(n-sent), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 || done == 0 {
			// The first datagram of the rest was rejected (for example
			// EHOSTUNREACH): skip it and send the others.
			failed++
			sent++
			continue
		}
		sent += int(done)
	}
	return failed
}

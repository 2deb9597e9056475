//go:build linux

package load

import (
	"fmt"
	"net"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// On Linux the UDP flows use sockets made with raw system calls, so that Go's
// netpoller never watches them. One receive thread (udpReceiver) reads them
// all. A netpoller registration would wake the runtime's poller, and then a
// reader goroutine, for nearly every datagram.

const (
	// sendPollTimeoutMs is how long a flush waits in poll for room in a full
	// send buffer before it sends again. maxSendPolls bounds those waits per
	// flush, because the flow's mutex is held meanwhile.
	sendPollTimeoutMs = 1
	maxSendPolls      = 4
)

// udpSocketSet is the raw UDP sockets of one run, their flows, and the
// receive thread that reads them.
type udpSocketSet struct {
	r     *runner
	fds   []int
	flows []*flow
	wires []*mmsgWire
	rx    *udpReceiver // nil until every socket is open

	closeOnce sync.Once
}

// dialUDP opens one connected, non-blocking socket per flow and sets
// SO_TIMESTAMPNS on each, so the kernel stamps every received datagram. If
// any socket rejects the option, the run stamps responses at the read on
// every socket, so all flows use the same clock. It then starts the receive
// thread.
func (r *runner) dialUDP(newProto func() proto) ([]*flow, func(), error) {
	raddr, err := net.ResolveUDPAddr("udp", r.cfg.Target)
	if err != nil {
		return nil, nil, fmt.Errorf("resolve target %s: %w", r.cfg.Target, err)
	}
	family, sa := udpSockaddr(raddr)

	set := &udpSocketSet{r: r}
	per, extra := r.cfg.InFlight/r.cfg.Sockets, r.cfg.InFlight%r.cfg.Sockets
	r.kernelRx = true
	for i := range r.cfg.Sockets {
		fd, err := openUDPSocket(family, sa)
		if err != nil {
			set.close()
			return nil, nil, fmt.Errorf("open UDP socket %d to %s: %w", i, r.cfg.Target, err)
		}
		set.fds = append(set.fds, fd)

		if r.kernelRx {
			if err := setRxTimestamps(fd); err != nil {
				r.kernelRx = false
				r.cfg.Log.Warn().Err(err).Str("target", r.cfg.Target).
					Msg("kernel receive timestamps unavailable: latency includes the generator's read wakeup (rx_clock user)")
			}
		}

		n := per
		if i < extra {
			n++
		}
		f := newFlow(r, i, n, newProto())
		w := newMmsgWire(fd)
		f.wire = w
		set.flows = append(set.flows, f)
		set.wires = append(set.wires, w)
	}

	rx, err := newUDPReceiver(r, set.fds, set.flows)
	if err != nil {
		set.close()
		return nil, nil, fmt.Errorf("start the UDP receive thread for %s: %w", r.cfg.Target, err)
	}
	set.rx = rx
	rx.start()
	return set.flows, set.close, nil
}

// udpSockaddr returns the address family and socket address of a.
func udpSockaddr(a *net.UDPAddr) (int, unix.Sockaddr) {
	if ip4 := a.IP.To4(); ip4 != nil {
		sa := &unix.SockaddrInet4{Port: a.Port}
		copy(sa.Addr[:], ip4)
		return unix.AF_INET, sa
	}
	sa := &unix.SockaddrInet6{Port: a.Port}
	copy(sa.Addr[:], a.IP.To16())
	return unix.AF_INET6, sa
}

// openUDPSocket returns a non-blocking UDP socket connected to sa.
func openUDPSocket(family int, sa unix.Sockaddr) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	// The kernel caps the sizes at net.core.rmem_max and wmem_max without
	// an error, so, as with net.UDPConn.SetReadBuffer, a failure here only
	// leaves the default size.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBufferBytes)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBufferBytes)
	if err := unix.Connect(fd, sa); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("connect: %w", err)
	}
	return fd, nil
}

// close stops the receive thread and then closes the sockets. It first
// marks every wire closed under its flow's mutex, so that no sender uses a
// socket's number after the socket is closed and the kernel may reuse the
// number. Later calls do nothing.
func (s *udpSocketSet) close() {
	s.closeOnce.Do(func() {
		var unsent uint64
		for i, f := range s.flows {
			f.mu.Lock()
			f.closed = true
			unsent += s.wires[i].unsent
			s.wires[i].fd = -1
			f.mu.Unlock()
		}
		if s.rx != nil {
			s.rx.stop()
		}
		for _, fd := range s.fds {
			_ = unix.Close(fd)
		}
		if unsent > 0 {
			s.r.cfg.Log.Warn().Uint64("datagrams", unsent).Str("target", s.r.cfg.Target).
				Msg("datagrams not sent: sendmmsg failed or the send buffer stayed full; their requests count lost")
		}
		if s.rx != nil && s.rx.errs > 0 {
			s.r.cfg.Log.Warn().Err(s.rx.lastErr).Uint64("errors", s.rx.errs).Str("target", s.r.cfg.Target).
				Msg("recvmmsg failed on UDP sockets; the error is the last one")
		}
	})
}

// mmsgWire batches the outgoing datagrams of one raw, connected UDP socket
// into sendmmsg calls. It is guarded by its flow's mutex.
type mmsgWire struct {
	fd   int // -1 once the socket set is closing
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
	n    int
	// unsent counts datagrams that flush dropped while the socket was open.
	unsent  uint64
	pollFds [1]unix.PollFd
}

func newMmsgWire(fd int) *mmsgWire {
	w := &mmsgWire{fd: fd, hdrs: make([]unix.Mmsghdr, batchSize), iovs: make([]unix.Iovec, batchSize)}
	for i := range w.hdrs {
		w.hdrs[i].Hdr.Iov = &w.iovs[i]
		w.hdrs[i].Hdr.SetIovlen(1)
	}
	w.pollFds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT}
	return w
}

// queue keeps a reference to b until the next flush. Callers do not change b
// before then, because both run under the flow's mutex.
func (w *mmsgWire) queue(b []byte) {
	if w.n == len(w.hdrs) {
		_ = w.flush()
	}
	w.iovs[w.n].Base = unsafe.SliceData(b)
	w.iovs[w.n].SetLen(len(b))
	w.n++
}

// flush sends the queued datagrams. When the send buffer is full it waits
// for room up to maxSendPolls times. It counts the datagrams it could not
// send in unsent and returns no error, because their requests time out and
// count lost like requests that get no response. Before the end of a run
// the usual error is ECONNREFUSED from an earlier ICMP port unreachable.
func (w *mmsgWire) flush() error {
	sent, polls := 0, 0
	for sent < w.n && w.fd >= 0 {
		k, err := sendmmsg(w.fd, w.hdrs[sent:w.n])
		if err == nil && k > 0 {
			sent += k
			continue
		}
		if err == unix.EINTR {
			continue
		}
		// NOTE: no test fills a send buffer, so this wait has not run. On
		// loopback the kernel frees the buffer space as it delivers.
		if err == unix.EAGAIN && polls < maxSendPolls {
			polls++
			_, _ = unix.Poll(w.pollFds[:], sendPollTimeoutMs)
			continue
		}
		break
	}
	if w.fd >= 0 {
		w.unsent += uint64(w.n - sent)
	}
	w.n = 0
	return nil
}

// sendmmsg sends msgs on fd in one sendmmsg(2) call without blocking and
// returns how many the kernel took.
func sendmmsg(fd int, msgs []unix.Mmsghdr) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd),
		uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

//go:build linux

package load

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// epollTimeoutMs bounds each epoll_wait, so that the receive thread
	// checks stopping at least that often even if the eventfd write in stop
	// failed.
	epollTimeoutMs = 100
	// wakeToken marks the eventfd in the epoll set. Sockets are marked with
	// their index in udpReceiver.socks.
	wakeToken = -1
)

// udpReceiver is the one thread that reads the sockets of all UDP flows. It
// waits in epoll_wait, level-triggered, on every socket and on an eventfd
// that stop writes. Then it drains each ready socket with recvmmsg into
// buffers it reuses, so a datagram costs no allocation.
type udpReceiver struct {
	r      *runner
	epfd   int
	wakefd int
	socks  []rxSocket
	events []unix.EpollEvent
	hdrs   []unix.Mmsghdr
	iovs   []unix.Iovec
	bufs   []byte // batchSize datagram buffers of maxDatagram bytes
	oob    []byte // batchSize control buffers of rxOOBLen bytes

	stopping atomic.Bool
	done     chan struct{} // closed when run returns; nil before start

	// errs counts recvmmsg errors other than EAGAIN, EINTR and
	// ECONNREFUSED, and lastErr is the latest. Only run writes them.
	errs    uint64
	lastErr error
}

// rxSocket is one flow's socket.
type rxSocket struct {
	fd   int
	flow *flow
}

// newUDPReceiver creates the epoll set and the eventfd and registers the
// socket fds[i] of each flows[i]. The receiver does not own the sockets.
func newUDPReceiver(r *runner, fds []int, flows []*flow) (*udpReceiver, error) {
	rx := &udpReceiver{r: r, epfd: -1, wakefd: -1}
	var err error
	if rx.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if rx.wakefd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		rx.closeFds()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := rx.watch(rx.wakefd, wakeToken); err != nil {
		rx.closeFds()
		return nil, err
	}
	for i, fd := range fds {
		if err := rx.watch(fd, int32(i)); err != nil {
			rx.closeFds()
			return nil, err
		}
		rx.socks = append(rx.socks, rxSocket{fd: fd, flow: flows[i]})
	}

	rx.events = make([]unix.EpollEvent, len(fds)+1)
	rx.hdrs = make([]unix.Mmsghdr, batchSize)
	rx.iovs = make([]unix.Iovec, batchSize)
	rx.bufs = make([]byte, batchSize*maxDatagram)
	rx.oob = make([]byte, batchSize*rxOOBLen)
	for i := range rx.hdrs {
		rx.iovs[i].Base = &rx.bufs[i*maxDatagram]
		rx.iovs[i].SetLen(maxDatagram)
		rx.hdrs[i].Hdr.Iov = &rx.iovs[i]
		rx.hdrs[i].Hdr.SetIovlen(1)
		if r.kernelRx {
			rx.hdrs[i].Hdr.Control = &rx.oob[i*rxOOBLen]
		}
	}
	return rx, nil
}

// watch adds fd to the epoll set for input, level-triggered, under token.
func (rx *udpReceiver) watch(fd int, token int32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: token}
	if err := unix.EpollCtl(rx.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl add fd %d: %w", fd, err)
	}
	return nil
}

func (rx *udpReceiver) start() {
	rx.done = make(chan struct{})
	go rx.run()
}

// stop makes run return, waits for it, and closes the epoll set and the
// eventfd. The sockets stay open.
func (rx *udpReceiver) stop() {
	if rx.done != nil {
		rx.stopping.Store(true)
		var increment [8]byte
		binary.NativeEndian.PutUint64(increment[:], 1)
		if _, err := unix.Write(rx.wakefd, increment[:]); err != nil {
			rx.r.cfg.Log.Warn().Err(err).Str("target", rx.r.cfg.Target).
				Msg("waking the UDP receive thread failed: it stops at its next epoll_wait timeout")
		}
		<-rx.done
	}
	rx.closeFds()
}

func (rx *udpReceiver) closeFds() {
	if rx.wakefd >= 0 {
		_ = unix.Close(rx.wakefd)
		rx.wakefd = -1
	}
	if rx.epfd >= 0 {
		_ = unix.Close(rx.epfd)
		rx.epfd = -1
	}
}

// run serves the sockets on a thread of its own until stop. The lock keeps
// the goroutine on the thread that returns from epoll_wait, so the runtime
// does not hand the wakeup to another thread.
func (rx *udpReceiver) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(rx.done)
	for !rx.stopping.Load() {
		n, err := unix.EpollWait(rx.epfd, rx.events, epollTimeoutMs)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			rx.r.fail(fmt.Errorf("UDP receive thread: epoll_wait: %w", err))
			return
		}
		for _, ev := range rx.events[:n] {
			if ev.Fd == wakeToken {
				return
			}
			rx.drain(&rx.socks[ev.Fd])
		}
	}
}

// drain reads batches from s until it has none left or a batch comes back
// short, and hands each datagram to s's flow with its arrival time. It stops
// at the first error. ECONNREFUSED, from an ICMP port unreachable for an
// earlier send, is not counted as a receive error, because the loss timer
// already counts the request.
func (rx *udpReceiver) drain(s *rxSocket) {
	f := s.flow
	for !rx.stopping.Load() {
		n, err := rx.receiveBatch(s.fd)
		switch err {
		case nil:
		case unix.EINTR:
			continue
		case unix.EAGAIN, unix.ECONNREFUSED:
			return
		default:
			rx.errs++
			rx.lastErr = fmt.Errorf("fd %d of flow %d: %w", s.fd, f.id, err)
			return
		}

		f.mu.Lock()
		now := f.r.now()
		for i := range n {
			h := &rx.hdrs[i]
			b := rx.bufs[i*maxDatagram : i*maxDatagram+int(h.Len)]
			oob := rx.oob[i*rxOOBLen : i*rxOOBLen+int(h.Hdr.Controllen)]
			f.onDatagram(b, f.arrivalOf(oob, now))
		}
		err = f.wire.flush()
		f.mu.Unlock()
		if err != nil {
			f.r.fail(err)
			return
		}
		if n < batchSize {
			return
		}
	}
}

// receiveBatch reads up to batchSize datagrams from fd with one recvmmsg(2)
// call that does not block.
func (rx *udpReceiver) receiveBatch(fd int) (int, error) {
	if rx.r.kernelRx {
		// The kernel sets msg_controllen to the length it wrote.
		for i := range rx.hdrs {
			rx.hdrs[i].Hdr.SetControllen(rxOOBLen)
		}
	}
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd),
		uintptr(unsafe.Pointer(&rx.hdrs[0])), uintptr(len(rx.hdrs)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

//go:build linux

package load

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// A closed-loop run over 16 sockets that sends a fixed number of requests
// gets every response back, on every socket, through the receive thread.
func TestUDPSixteenSocketsAllAnswered(t *testing.T) {
	addr := serveUDP(t, echoHandler)
	cfg := baseConfig("echo", addr)
	cfg.Sockets, cfg.InFlight, cfg.Warmup = 16, 64, 0
	cfg.MaxRequests = 16 * 100 // each flow sends MaxRequests/Sockets+1 = 101
	r, res := runChecked(t, cfg)
	const perFlow, want = 101, 16 * 101
	if res.Sent != want {
		t.Errorf("sent %d, want %d", res.Sent, want)
	}
	if res.Completed != want {
		t.Errorf("completed %d, want all %d", res.Completed, want)
	}
	if res.Lost != 0 {
		t.Errorf("lost %d, want 0", res.Lost)
	}
	for _, f := range r.flows {
		if got := f.done.Load(); got != perFlow {
			t.Errorf("flow %d completed %d, want %d", f.id, got, perFlow)
		}
	}
	if res.RxClock != "kernel" {
		t.Errorf("rx_clock %q, want kernel", res.RxClock)
	}
	if res.NoRxTimestamp != 0 {
		t.Errorf("%d datagrams without a kernel timestamp, want 0", res.NoRxTimestamp)
	}
}

// An open-loop run over 16 sockets with loadgen's default pace quantum of
// 100 us loses nothing.
func TestUDPSixteenSocketsOpenLoop(t *testing.T) {
	addr := serveUDP(t, echoHandler)
	cfg := baseConfig("echo", addr)
	cfg.Sockets, cfg.InFlight, cfg.Rate = 16, 256, 2000
	cfg.Duration, cfg.PaceQuantum = 500*time.Millisecond, 100*time.Microsecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Lost != 0 {
		t.Errorf("lost %d, want 0", res.Lost)
	}
	if res.Sent < 900 || res.Sent > 1100 {
		t.Errorf("sent %d in 0.5 s at 2000 req/s, want 900 to 1100", res.Sent)
	}
	// A request sent just before the window whose response arrives in it
	// counts as completed but not sent. One sent at the window's end can
	// count as sent but not completed.
	if res.Completed+20 < res.Sent || res.Completed > res.Sent+20 {
		t.Errorf("completed %d, sent %d: want them within 20", res.Completed, res.Sent)
	}
	if res.RxClock != "kernel" {
		t.Errorf("rx_clock %q, want kernel", res.RxClock)
	}
}

func TestUDPIPv6Loopback(t *testing.T) {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	addr := serveUDPConn(t, c, echoHandler)
	res, err := Run(context.Background(), baseConfig("echo", addr))
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed == 0 {
		t.Error("no echo completed")
	}
	if res.Lost != 0 {
		t.Errorf("lost %d, want 0", res.Lost)
	}
	if res.RxClock != "kernel" {
		t.Errorf("rx_clock %q, want kernel", res.RxClock)
	}
}

// Cancelling a run with requests in flight returns within 1 s and leaves
// no goroutine behind: the receive thread, the timer loop and the pacer
// all end.
func TestUDPShutdownWithRequestsInFlight(t *testing.T) {
	for _, tc := range []struct {
		name   string
		handle func([]byte) [][]byte
		rate   float64
	}{
		{"closed loop against echo", echoHandler, 0},
		{"open loop against a silent server", func([]byte) [][]byte { return nil }, 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveUDP(t, tc.handle)
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			cfg := baseConfig("echo", addr)
			cfg.Sockets, cfg.InFlight, cfg.Rate = 16, 64, tc.rate
			cfg.Duration, cfg.LossTimeout = time.Minute, 10*time.Second
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err := Run(ctx, cfg)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Run error %v, want context.DeadlineExceeded", err)
			}
			deadline, _ := ctx.Deadline()
			if late := time.Since(deadline); late > time.Second {
				t.Errorf("Run returned %v after the context ended, want under 1 s", late)
			}
		})
	}
}

// Closing the socket set wakes the receive thread through the eventfd, well
// before its epoll_wait timeout of epollTimeoutMs. A flush after the close
// sends nothing and counts nothing.
func TestUDPCloseWakesReceiver(t *testing.T) {
	addr := serveUDP(t, echoHandler)
	cfg := baseConfig("echo", addr)
	cfg.Sockets = 4
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	r := newRunner(cfg)
	flows, closeAll, err := r.dial()
	if err != nil {
		t.Fatal(err)
	}
	// Let the receive thread enter epoll_wait.
	time.Sleep(20 * time.Millisecond)

	start := time.Now()
	closeAll()
	if took := time.Since(start); took > epollTimeoutMs*time.Millisecond/2 {
		t.Errorf("close took %v, want well under the %d ms epoll_wait timeout", took, epollTimeoutMs)
	}
	closeAll() // a second call must not close the descriptors again

	f := flows[0]
	w := f.wire.(*mmsgWire)
	f.mu.Lock()
	w.queue(make([]byte, 16))
	err = w.flush()
	f.mu.Unlock()
	if err != nil {
		t.Errorf("flush after close: %v", err)
	}
	if w.unsent != 0 {
		t.Errorf("unsent %d after a flush on a closed wire, want 0", w.unsent)
	}
}

// unboundPort returns a loopback UDP port with no socket bound to it.
func unboundPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	return port
}

// After an ICMP port unreachable, sendmmsg fails with ECONNREFUSED. The wire
// counts the datagrams it dropped, and closing the set logs the count.
func TestMmsgWireCountsUnsent(t *testing.T) {
	port := unboundPort(t)
	sa := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	fd, err := openUDPSocket(unix.AF_INET, sa)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	r := &runner{cfg: Config{Target: "127.0.0.1", Log: zerolog.New(&logs)}, base: time.Now()}
	f := newFlow(r, 0, 1, &echoProto{size: 16})
	w := newMmsgWire(fd)
	f.wire = w
	set := &udpSocketSet{r: r, fds: []int{fd}, flows: []*flow{f}, wires: []*mmsgWire{w}}
	defer set.close()

	if _, err := unix.Write(fd, make([]byte, 16)); err != nil {
		t.Fatalf("first send: %v", err)
	}
	// poll reports POLLERR once the ICMP error is pending on the socket.
	pfd := []unix.PollFd{{Fd: int32(fd)}}
	if n, err := unix.Poll(pfd, 1000); err != nil || n != 1 || pfd[0].Revents&unix.POLLERR == 0 {
		t.Fatalf("poll for the ICMP error: n %d revents %#x err %v", n, pfd[0].Revents, err)
	}

	f.mu.Lock()
	for range 3 {
		w.queue(make([]byte, 16))
	}
	_ = w.flush()
	f.mu.Unlock()
	if w.unsent != 3 {
		t.Errorf("unsent %d after sendmmsg got ECONNREFUSED, want 3", w.unsent)
	}

	set.close()
	if !strings.Contains(logs.String(), `"datagrams":3`) {
		t.Errorf("close logged %q, want the unsent count 3", logs.String())
	}
}

// The receive thread's read path, from recvmmsg to the next closed-loop
// send, allocates nothing per datagram.
func TestUDPReceiverAllocatesNothing(t *testing.T) {
	peer, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(peer)
	if err := unix.Bind(peer, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	peerAddr, err := unix.Getsockname(peer)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := openUDPSocket(unix.AF_INET, peerAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := setRxTimestamps(fd); err != nil {
		t.Fatal(err)
	}
	flowAddr, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(peer, flowAddr); err != nil {
		t.Fatal(err)
	}

	r := &runner{base: time.Now(), endNs: 1 << 62, maxPerFlow: 1 << 62, kernelRx: true,
		cfg: Config{Mode: "echo", LossTimeout: time.Second}}
	f := newFlow(r, 0, 1, &echoProto{size: 16})
	f.wire = newMmsgWire(fd)
	rx, err := newUDPReceiver(r, []int{fd}, []*flow{f})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.stop()
	if err := f.start(); err != nil {
		t.Fatal(err)
	}

	// In each pass the peer sends the response to the slot's current
	// request, and drain completes it and sends the next request.
	response := make([]byte, 16)
	allocs := testing.AllocsPerRun(100, func() {
		binary.BigEndian.PutUint32(response[4:], f.slots[0].gen)
		if _, err := unix.Write(peer, response); err != nil {
			t.Fatal(err)
		}
		rx.drain(&rx.socks[0])
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per datagram, want 0", allocs)
	}
	if f.st.completed < 50 {
		t.Errorf("completed %d of 101 responses, want most", f.st.completed)
	}
	if f.st.noRxStamp != 0 {
		t.Errorf("%d datagrams without a kernel timestamp, want 0", f.st.noRxStamp)
	}
}

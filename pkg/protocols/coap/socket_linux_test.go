package coap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardgate/shardgate/pkg/config"
	"github.com/shardgate/shardgate/pkg/metrics"
)

// TestReadersShareThePort sends from many source ports to an endpoint with
// four readers: the kernel spreads the devices over the readers' sockets,
// and every request gets its response from the endpoint's one address.
func TestReadersShareThePort(t *testing.T) {
	e, _ := startEndpoint(t, &fakeForwarder{}, func(o *Options) { o.Readers = 4 })
	if got := len(e.socks); got != 4 {
		t.Fatalf("%d sockets for 4 readers, want 4", got)
	}
	for i := range 40 {
		c, err := net.DialUDP("udp", nil, e.Addr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		path := fmt.Sprintf("d/dev%d/state", i)
		got := parse(t, roundTrip(t, c, request(typeCON, 1, uint16(i), []byte{byte(i)}, path, nil, nil), time.Second))
		c.Close()
		if want := fmt.Sprintf("key=dev%d", i); string(got.Payload) != want {
			t.Fatalf("device %d got payload %q, want %q", i, got.Payload, want)
		}
	}
}

// TestSecondListenOnPortFails checks that the readers' SO_REUSEPORT does not
// let a second endpoint share a port that one already serves.
func TestSecondListenOnPortFails(t *testing.T) {
	e, _ := startEndpoint(t, &fakeForwarder{}, func(o *Options) { o.Readers = 2 })
	second, err := New(Options{Addr: e.Addr().String(), Forwarder: &fakeForwarder{}, Readers: 2,
		Metrics: metrics.New(prometheus.NewRegistry()), Key: config.CoAPKey{Kind: config.KeyPath, Prefix: []string{"d"}}})
	if err != nil {
		t.Fatal(err)
	}
	err = second.Listen()
	if err == nil {
		second.Close()
		t.Fatalf("second Listen on %s succeeded, want address already in use", e.Addr())
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second Listen: %v, want EADDRINUSE", err)
	}
}

// TestCloseWakesBlockedReaders checks that Close ends readers waiting for
// a datagram well before their read timeout.
func TestCloseWakesBlockedReaders(t *testing.T) {
	e, err := New(Options{Addr: "127.0.0.1:0", Forwarder: &fakeForwarder{}, Readers: 3,
		Metrics: metrics.New(prometheus.NewRegistry()), Key: config.CoAPKey{Kind: config.KeyPath, Prefix: []string{"d"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.Serve(context.Background()) }()
	time.Sleep(50 * time.Millisecond) // let the readers block

	start := time.Now()
	e.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve returned %v after Close, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running 5 s after Close")
	}
	if took := time.Since(start); took > readTimeout/2 {
		t.Errorf("Close took %v, want well under the %v read timeout", took, readTimeout)
	}
	if err := e.sock.sendTo([]byte{0x40, 0, 0, 1}, e.Addr().(*net.UDPAddr).AddrPort()); err == nil {
		t.Error("send after Close succeeded, want an error")
	}
}

// TestConcurrentListenNotShared binds the same port from two goroutines at
// once, many times: SO_REUSEPORT must never let both keep the port.
func TestConcurrentListenNotShared(t *testing.T) {
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.LocalAddr().(*net.UDPAddr)
	probe.Close()

	for i := range 300 {
		results := make(chan []*batchSocket, 2)
		for range 2 {
			go func() {
				socks, err := listenUDP(addr, 2)
				if err != nil {
					socks = nil
				}
				results <- socks
			}()
		}
		a, b := <-results, <-results
		if a != nil && b != nil {
			t.Fatalf("try %d: both listeners bound %s", i, addr)
		}
		for _, s := range append(a, b...) {
			s.close()
		}
	}
}

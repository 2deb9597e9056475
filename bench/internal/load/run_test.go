package load

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/avp"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"github.com/fiorix/go-diameter/v4/diam/dict"
	"go.uber.org/goleak"

	"github.com/shardgate/shardgate/bench/internal/result"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serveUDP runs handle on every datagram received on a loopback socket
// until the test ends. handle returns the datagrams to send back.
func serveUDP(t *testing.T, handle func(b []byte) [][]byte) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return serveUDPConn(t, c, handle)
}

// serveUDPConn is serveUDP on the socket c, which it closes when the test
// ends.
func serveUDPConn(t *testing.T, c *net.UDPConn, handle func(b []byte) [][]byte) string {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			for _, out := range handle(buf[:n]) {
				_, _ = c.WriteToUDP(out, from)
			}
		}
	})
	t.Cleanup(func() { c.Close(); wg.Wait() })
	return c.LocalAddr().String()
}

// echoHandler returns each datagram unchanged.
func echoHandler(b []byte) [][]byte { return [][]byte{append([]byte(nil), b...)} }

// runChecked validates cfg and runs it, failing the test on any error. It
// returns the runner too, for counters the result does not carry.
func runChecked(t *testing.T, cfg Config) (*runner, *result.Run) {
	t.Helper()
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	r := newRunner(cfg)
	res, err := r.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r, res
}

func baseConfig(mode, target string) Config {
	return Config{
		Mode: mode, Target: target, Sockets: 2, InFlight: 8,
		Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond, Payload: 64,
		ACKTimeout: 20 * time.Millisecond, MaxRetransmit: 4, LossTimeout: 500 * time.Millisecond,
		TimerTick: 5 * time.Millisecond,
		CoAP: CoAPConfig{Confirmable: true, Method: "mix", GetPath: "/d/{id}/state",
			PostPath: "/d/{id}/telemetry", Keys: 100},
		Diameter: DiameterConfig{App: "cc", Updates: 2, OriginHost: "lg.test",
			OriginRealm: "test", DestRealm: "srv.test"},
	}
}

func TestEchoClosedLoop(t *testing.T) {
	addr := serveUDP(t, func(b []byte) [][]byte { return [][]byte{append([]byte(nil), b...)} })
	res, err := Run(context.Background(), baseConfig("echo", addr))
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed == 0 {
		t.Fatal("no echo completed")
	}
	if res.Lost != 0 {
		t.Errorf("lost %d, want 0 on loopback", res.Lost)
	}
	if res.Outcomes["echo"] != res.Completed {
		t.Errorf("outcomes %v, want all %d as echo", res.Outcomes, res.Completed)
	}
	if _, ok := res.CPU["loadgen"]; !ok {
		t.Errorf("CPU %v has no loadgen entry", res.CPU)
	}
	if res.Latency.P50 <= 0 || res.Latency.P99 < res.Latency.P50 {
		t.Errorf("latency %+v, want 0 < p50 <= p99", res.Latency)
	}
}

// wantRxClock returns the rx_clock of a UDP run on this system.
func wantRxClock() string {
	if runtime.GOOS == "linux" {
		return "kernel"
	}
	return "user"
}

func TestEchoOpenLoopRate(t *testing.T) {
	addr := serveUDP(t, func(b []byte) [][]byte { return [][]byte{append([]byte(nil), b...)} })
	cfg := baseConfig("echo", addr)
	cfg.Rate, cfg.InFlight, cfg.Duration = 2000, 64, 500*time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Throughput < 1600 || res.Throughput > 2400 {
		t.Errorf("throughput %.0f req/s at 2000 offered, want within 20%%", res.Throughput)
	}
	if res.Offered != 2000 {
		t.Errorf("offered %v, want 2000", res.Offered)
	}
	if res.RxClock != wantRxClock() {
		t.Errorf("rx_clock %q, want %q", res.RxClock, wantRxClock())
	}
	if res.NoRxTimestamp != 0 {
		t.Errorf("%d datagrams without a kernel timestamp, want 0", res.NoRxTimestamp)
	}
	// Each response is stamped no later than it is read and sent no
	// earlier than intended, so the quantiles keep that order.
	if res.ReadLatency.P50 < res.Latency.P50 || res.ReadLatency.P99 < res.Latency.P99 {
		t.Errorf("read latency %+v below latency %+v", res.ReadLatency, res.Latency)
	}
	if res.Service.P99 > res.Latency.P99 {
		t.Errorf("service p99 %.0f us above latency p99 %.0f us", res.Service.P99, res.Latency.P99)
	}
	if res.ReadLatency.P50 <= 0 {
		t.Errorf("read latency %+v, want p50 > 0", res.ReadLatency)
	}
}

// A server that never answers: every request is counted lost, none completed.
func TestEchoLossCounted(t *testing.T) {
	addr := serveUDP(t, func([]byte) [][]byte { return nil })
	cfg := baseConfig("echo", addr)
	cfg.LossTimeout = 50 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 0 || res.Lost == 0 {
		t.Errorf("completed %d lost %d, want 0 and > 0", res.Completed, res.Lost)
	}
}

// coapAnswer builds a response of the given type to request req.
func coapAnswer(req []byte, typ byte, mid uint16) []byte {
	tkl := int(req[0] & 0xf)
	out := []byte{1<<6 | typ<<4 | byte(tkl), 0x45, byte(mid >> 8), byte(mid)}
	return append(append(out, req[4:4+tkl]...), 0xff, 'o', 'k')
}

// The server ignores the first transmission of every fifth Message ID, so
// the client must retransmit (RFC 7252 §4.2) and still complete everything.
func TestCoAPRetransmits(t *testing.T) {
	var mu sync.Mutex
	seen := map[uint16]bool{}
	addr := serveUDP(t, func(b []byte) [][]byte {
		mid := binary.BigEndian.Uint16(b[2:])
		mu.Lock()
		defer mu.Unlock()
		if mid%5 == 0 && !seen[mid] {
			seen[mid] = true
			return nil
		}
		return [][]byte{coapAnswer(b, coapTypeACK, mid)}
	})
	res, err := Run(context.Background(), baseConfig("coap", addr))
	if err != nil {
		t.Fatal(err)
	}
	if res.Retransmits == 0 {
		t.Error("no retransmissions counted")
	}
	if res.Lost != 0 {
		t.Errorf("lost %d, want 0", res.Lost)
	}
	if res.Outcomes["2.05"] != res.Completed || res.Completed == 0 {
		t.Errorf("outcomes %v, want all %d as 2.05", res.Outcomes, res.Completed)
	}
	if res.RxClock != wantRxClock() {
		t.Errorf("rx_clock %q, want %q", res.RxClock, wantRxClock())
	}
	if res.ReadLatency.P99 < res.Latency.P99 {
		t.Errorf("read latency p99 %.0f us below latency p99 %.0f us", res.ReadLatency.P99, res.Latency.P99)
	}
}

// A separate response (RFC 7252 §5.2.2): an empty ACK, then a CON response
// that the client must acknowledge.
func TestCoAPSeparateResponse(t *testing.T) {
	var acks atomic.Int64
	addr := serveUDP(t, func(b []byte) [][]byte {
		mid := binary.BigEndian.Uint16(b[2:])
		if b[0]>>4&3 == coapTypeACK {
			acks.Add(1)
			return nil
		}
		empty := []byte{1<<6 | coapTypeACK<<4, 0, b[2], b[3]}
		return [][]byte{empty, coapAnswer(b, coapTypeCON, mid^0x8000)}
	})
	cfg := baseConfig("coap", addr)
	cfg.ACKTimeout = 250 * time.Millisecond // only a missing empty ACK may cause a retransmission
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed == 0 || res.Outcomes["2.05"] != res.Completed {
		t.Errorf("outcomes %v, want all %d as 2.05", res.Outcomes, res.Completed)
	}
	if acks.Load() < int64(res.Completed) {
		t.Errorf("server got %d ACKs for %d CON responses", acks.Load(), res.Completed)
	}
	if res.Retransmits != 0 {
		t.Errorf("retransmits %d after empty ACKs, want 0", res.Retransmits)
	}
}

// serveDiameter answers the CER and every request with go-diameter, sends a
// DWR after the CEA, and records whether the client answered it.
func serveDiameter(t *testing.T, dwa *atomic.Bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { serveDiameterConn(c, dwa) })
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func serveDiameterConn(c net.Conn, dwa *atomic.Bool) {
	defer c.Close()
	rd := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	for {
		m, err := diam.ReadMessage(rd, dict.Default)
		if err != nil {
			return
		}
		if m.Header.CommandFlags&diam.RequestFlag == 0 {
			if m.Header.CommandCode == diam.DeviceWatchdog {
				dwa.Store(true)
			}
			continue
		}
		a := diam.NewMessage(m.Header.CommandCode, 0, m.Header.ApplicationID,
			m.Header.HopByHopID, m.Header.EndToEndID, dict.Default)
		if sid, err := m.FindAVP(avp.SessionID, 0); err == nil {
			a.AddAVP(sid)
		}
		a.NewAVP(avp.ResultCode, avp.Mbit, 0, datatype.Unsigned32(2001))
		a.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("srv"))
		a.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("srv.test"))
		if _, err := a.WriteTo(w); err != nil {
			return
		}
		if m.Header.CommandCode == diam.CapabilitiesExchange {
			dwr := diam.NewRequest(diam.DeviceWatchdog, 0, dict.Default)
			dwr.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("srv"))
			dwr.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("srv.test"))
			_, _ = dwr.WriteTo(w)
		}
		if rd.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

func TestDiameterCreditControl(t *testing.T) {
	var dwa atomic.Bool
	addr := serveDiameter(t, &dwa)
	res, err := Run(context.Background(), baseConfig("diameter", addr))
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed == 0 || res.Outcomes["2001"] != res.Completed {
		t.Errorf("outcomes %v, want all %d as 2001", res.Outcomes, res.Completed)
	}
	if !dwa.Load() {
		t.Error("the server's DWR got no DWA")
	}
	if res.RxClock != "user" {
		t.Errorf("rx_clock %q over TCP, want user", res.RxClock)
	}
	if res.ReadLatency != res.Latency {
		t.Errorf("read latency %+v, want it equal to latency %+v when stamped at the read",
			res.ReadLatency, res.Latency)
	}
}

func TestDiameterRejectedCEA(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		m, err := diam.ReadMessage(c, dict.Default)
		if err != nil {
			return
		}
		a := m.Answer(5010) // DIAMETER_NO_COMMON_APPLICATION
		_, _ = a.WriteTo(c)
		_, _ = diam.ReadMessage(c, dict.Default)
	}()
	_, err = Run(context.Background(), baseConfig("diameter", ln.Addr().String()))
	if err == nil {
		t.Fatal("Run succeeded against a peer that rejected the CER")
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:5683", "[::1]:5683", "127.1.2.3:1", "localhost:9"} {
		if err := CheckLoopback(ok); err != nil {
			t.Errorf("CheckLoopback(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"192.0.2.1:5683", "0.0.0.0:5683", "[::]:1", "127.0.0.1", "127.0.0.1:0", "10.0.0.1:80"} {
		if err := CheckLoopback(bad); err == nil {
			t.Errorf("CheckLoopback(%q) = nil, want an error", bad)
		}
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	cfg := baseConfig("echo", "192.0.2.1:7")
	if _, err := Run(context.Background(), cfg); err == nil {
		t.Error("Run accepted a non-loopback target")
	}
	cfg = baseConfig("echo", "127.0.0.1:7")
	cfg.InFlight = 1
	if _, err := Run(context.Background(), cfg); err == nil {
		t.Error("Run accepted fewer requests in flight than sockets")
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	addr := serveUDP(t, func(b []byte) [][]byte { return [][]byte{append([]byte(nil), b...)} })
	cfg := baseConfig("echo", addr)
	cfg.Duration = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Run(ctx, cfg)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run error %v, want context.DeadlineExceeded", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("Run took %v after cancel", time.Since(start))
	}
}

// After an empty ACK the client stops retransmitting and waits for a
// separate response that comes later than the ACK timeout.
func TestCoAPLateSeparateResponse(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer c.Close()
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			req := append([]byte(nil), buf[:n]...)
			if req[0]>>4&3 == coapTypeACK {
				continue
			}
			_, _ = c.WriteToUDP([]byte{1<<6 | coapTypeACK<<4, 0, req[2], req[3]}, from)
			time.AfterFunc(60*time.Millisecond, func() {
				_, _ = c.WriteToUDP(coapAnswer(req, coapTypeNON, 1), from)
			})
		}
	})
	cfg := baseConfig("coap", c.LocalAddr().String())
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed == 0 || res.Outcomes["2.05"] != res.Completed {
		t.Errorf("outcomes %v, want all %d as 2.05", res.Outcomes, res.Completed)
	}
	if res.Lost != 0 || res.Retransmits != 0 {
		t.Errorf("lost %d retransmits %d, want 0 and 0", res.Lost, res.Retransmits)
	}
	if res.Latency.P50 < 60_000 {
		t.Errorf("p50 %.0f us, want at least the 60 ms delay", res.Latency.P50)
	}
}

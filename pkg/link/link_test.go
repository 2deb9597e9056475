package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// ants, a gnet dependency, starts its default pool at package init.
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"))
}

// handlerFunc adapts a function to Handler.
type handlerFunc func(p Peer, f *Frame)

func (h handlerFunc) ServeFrame(p Peer, f *Frame) { h(p, f) }

// echo responds to each request with its key and body.
var echo = handlerFunc(func(p Peer, f *Frame) {
	if f.Type != TypeRequest {
		return
	}
	_ = p.Send(&Frame{Type: TypeResponse, Proto: f.Proto, Corr: f.Corr, Shard: f.Shard, Key: f.Key, Body: f.Body})
})

func testLogger() zerolog.Logger {
	if testing.Verbose() {
		return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(zerolog.DebugLevel)
	}
	return zerolog.Nop()
}

func startServer(t testing.TB, o ServerOptions) *Server {
	t.Helper()
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	o.Logger = testLogger()
	s := NewServer(o)
	if err := s.Start(); err != nil {
		t.Fatalf("start server on %s: %v", o.Addr, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("stop server: %v", err)
		}
	})
	return s
}

func newTestClient(t testing.TB, o ClientOptions) *Client {
	t.Helper()
	o.Logger = zerolog.Nop()
	c, err := NewClient(o)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close client: %v", err)
		}
	})
	return c
}

// result is a response copied out of a callback.
type result struct {
	resp Frame
	err  error
	at   time.Time
}

// sendAsync sends f and returns a channel that receives the outcome.
func sendAsync(t testing.TB, c *Client, addr string, f *Frame) <-chan result {
	t.Helper()
	ch := make(chan result, 1)
	err := c.Send(addr, f, func(resp *Frame, err error) {
		r := result{err: err, at: time.Now()}
		if resp != nil {
			r.resp = *resp
			r.resp.Key = append([]byte(nil), resp.Key...)
			r.resp.Body = append([]byte(nil), resp.Body...)
		}
		ch <- r
	})
	if err != nil {
		t.Fatalf("send to %s: %v", addr, err)
	}
	return ch
}

func await(t testing.TB, ch <-chan result, within time.Duration) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("no callback within %v", within)
		return result{}
	}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRoundTrip(t *testing.T) {
	s := startServer(t, ServerOptions{Handler: echo})
	c := newTestClient(t, ClientOptions{})

	req := Frame{Proto: ProtoCoAP, Shard: 17, Key: []byte("dev-1"), Body: coapObserveGET}
	r := await(t, sendAsync(t, c, s.Addr(), &req), 5*time.Second)
	if r.err != nil {
		t.Fatalf("callback error: %v", r.err)
	}
	want := Frame{Type: TypeResponse, Proto: ProtoCoAP, Corr: req.Corr, Shard: 17, Key: req.Key, Body: req.Body}
	assertFrameEqual(t, &r.resp, &want)
	if req.Corr == 0 {
		t.Error("Send left Corr at 0")
	}
	if got := s.Conns(); got != 1 {
		t.Errorf("server Conns = %d, want 1", got)
	}
	if got := c.Stats()[s.Addr()]; got != 0 {
		t.Errorf("Stats in flight = %d after the response, want 0", got)
	}
}

func TestManyInFlightOutOfOrder(t *testing.T) {
	const total, window = 10000, 256
	sleepy := handlerFunc(func(p Peer, f *Frame) {
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		echo(p, f)
	})
	s := startServer(t, ServerOptions{Handler: sleepy, Workers: 64, QueueLen: window})
	c := newTestClient(t, ClientOptions{MaxInFlight: window})

	slots := make(chan struct{}, window)
	var wg sync.WaitGroup
	var mismatched, failed, outOfOrder atomic.Int64
	var lastCorr atomic.Uint64
	for i := range total {
		slots <- struct{}{}
		wg.Add(1)
		body := fmt.Appendf(nil, "request %d", i)
		f := Frame{Proto: ProtoDiameter, Shard: uint32(i), Body: body}
		err := c.Send(s.Addr(), &f, func(resp *Frame, err error) {
			defer func() { <-slots; wg.Done() }()
			if err != nil {
				failed.Add(1)
				return
			}
			if string(resp.Body) != string(body) || resp.Shard != uint32(i) {
				mismatched.Add(1)
			}
			if prev := lastCorr.Swap(resp.Corr); resp.Corr < prev {
				outOfOrder.Add(1)
			}
		})
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	wg.Wait()

	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed", n)
	}
	if n := mismatched.Load(); n != 0 {
		t.Errorf("%d responses did not match their request", n)
	}
	if outOfOrder.Load() == 0 {
		t.Error("all responses arrived in request order; the test did not exercise reordering")
	}
}

func TestNotifyReachesOnNotify(t *testing.T) {
	const notifications = 3
	observe := handlerFunc(func(p Peer, f *Frame) {
		if f.Type != TypeRequest || !f.Observe() {
			return
		}
		id := f.Corr
		_ = p.Send(&Frame{Type: TypeResponse, Proto: f.Proto, Corr: id})
		// Notifications come later, from another goroutine, on the kept Peer.
		go func() {
			for i := range notifications {
				_ = p.Send(&Frame{Type: TypeNotify, Proto: ProtoCoAP, Corr: id, Body: []byte{byte(i)}})
			}
		}()
	})
	s := startServer(t, ServerOptions{Handler: observe})

	type note struct {
		addr string
		corr uint64
		body byte
	}
	notes := make(chan note, notifications)
	c := newTestClient(t, ClientOptions{OnNotify: func(addr string, f *Frame) {
		notes <- note{addr, f.Corr, f.Body[0]}
	}})

	req := Frame{Proto: ProtoCoAP, Flags: FlagObserve, Key: []byte("dev-1"), Body: coapObserveGET}
	if r := await(t, sendAsync(t, c, s.Addr(), &req), 5*time.Second); r.err != nil {
		t.Fatalf("observe request: %v", r.err)
	}
	for i := range notifications {
		select {
		case n := <-notes:
			if n.addr != s.Addr() || n.corr != req.Corr || n.body != byte(i) {
				t.Errorf("notification %d = %+v, want addr %s corr %d body %d", i, n, s.Addr(), req.Corr, i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("notification %d did not arrive", i)
		}
	}
}

func TestSlowHandlerDoesNotDelayOthers(t *testing.T) {
	release := make(chan struct{})
	blocking := handlerFunc(func(p Peer, f *Frame) {
		if string(f.Key) == "slow" {
			<-release
		}
		echo(p, f)
	})
	slow := startServer(t, ServerOptions{Handler: blocking, Workers: 8})
	fast := startServer(t, ServerOptions{Handler: echo})
	c := newTestClient(t, ClientOptions{})

	var stuck []<-chan result
	for range 4 {
		stuck = append(stuck, sendAsync(t, c, slow.Addr(), &Frame{Proto: ProtoCoAP, Key: []byte("slow")}))
	}
	defer close(release)

	for i := range 100 {
		r := await(t, sendAsync(t, c, fast.Addr(), &Frame{Proto: ProtoCoAP, Key: []byte("fast")}), time.Second)
		if r.err != nil {
			t.Fatalf("request %d to the fast worker: %v", i, r.err)
		}
	}
	// Other keys on the slow worker still get pool goroutines.
	r := await(t, sendAsync(t, c, slow.Addr(), &Frame{Proto: ProtoCoAP, Key: []byte("other")}), time.Second)
	if r.err != nil {
		t.Fatalf("other key on the slow worker: %v", r.err)
	}
	for i, ch := range stuck {
		select {
		case r := <-ch:
			t.Fatalf("blocked request %d finished early: %+v", i, r)
		default:
		}
	}
}

// parkUntilClosed sends no response. It holds each request until the
// gateway's connection closes.
var parkUntilClosed = handlerFunc(func(p Peer, f *Frame) { <-p.Done() })

func TestServerStopFailsPendingFast(t *testing.T) {
	const requests = 100
	var received atomic.Int64
	park := handlerFunc(func(p Peer, f *Frame) {
		received.Add(1)
		<-p.Done()
	})
	s := NewServer(ServerOptions{Addr: "127.0.0.1:0", Handler: park, Workers: requests, Logger: zerolog.Nop()})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, ClientOptions{RequestTimeout: 10 * time.Second})

	var results []<-chan result
	for range requests {
		results = append(results, sendAsync(t, c, s.Addr(), &Frame{Proto: ProtoCoAP}))
	}
	waitFor(t, 5*time.Second, "the server to receive every request", func() bool {
		return received.Load() == requests
	})

	stopped := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("Stop returned %v, want nil", err)
	}
	for i, ch := range results {
		r := await(t, ch, 2*time.Second)
		if !errors.Is(r.err, ErrClosed) {
			t.Fatalf("request %d: err = %v, want ErrClosed", i, r.err)
		}
		if d := r.at.Sub(stopped); d > time.Second {
			t.Fatalf("request %d failed %v after Stop, want well under the 10s timeout", i, d)
		}
	}
}

func TestReconnectAfterRestart(t *testing.T) {
	first := NewServer(ServerOptions{Addr: "127.0.0.1:0", Handler: echo, Logger: zerolog.Nop()})
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	addr := first.Addr()
	c := newTestClient(t, ClientOptions{})
	if r := await(t, sendAsync(t, c, addr, &Frame{Proto: ProtoCoAP}), 5*time.Second); r.err != nil {
		t.Fatalf("before restart: %v", r.err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := first.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// The client must see the close and refuse at once rather than hang.
	waitFor(t, 5*time.Second, "the client to notice the close", func() bool {
		err := c.Send(addr, &Frame{Proto: ProtoCoAP}, func(*Frame, error) {})
		return errors.Is(err, ErrClosed)
	})

	startServer(t, ServerOptions{Addr: addr, Handler: echo})
	var last error
	waitFor(t, 5*time.Second, "a request to succeed after the restart", func() bool {
		ch := make(chan error, 1)
		if last = c.Send(addr, &Frame{Proto: ProtoCoAP}, func(_ *Frame, err error) { ch <- err }); last != nil {
			return false
		}
		last = <-ch
		return last == nil
	})
}

func TestRequestTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	s := startServer(t, ServerOptions{Handler: parkUntilClosed})
	c := newTestClient(t, ClientOptions{RequestTimeout: timeout})

	sent := time.Now()
	r := await(t, sendAsync(t, c, s.Addr(), &Frame{Proto: ProtoCoAP}), 5*time.Second)
	if !errors.Is(r.err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", r.err)
	}
	if d := r.at.Sub(sent); d < timeout || d > 10*timeout {
		t.Errorf("timed out after %v, want between %v and %v", d, timeout, 10*timeout)
	}
	if got := c.Stats()[s.Addr()]; got != 0 {
		t.Errorf("Stats in flight = %d after the timeout, want 0", got)
	}
}

func TestClientMaxInFlight(t *testing.T) {
	const limit = 4
	s := startServer(t, ServerOptions{Handler: parkUntilClosed})
	c := newTestClient(t, ClientOptions{MaxInFlight: limit})

	var results []<-chan result
	for range limit {
		results = append(results, sendAsync(t, c, s.Addr(), &Frame{Proto: ProtoCoAP}))
	}
	err := c.Send(s.Addr(), &Frame{Proto: ProtoCoAP}, func(*Frame, error) {
		t.Error("callback of a rejected request was called")
	})
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Send beyond MaxInFlight: err = %v, want ErrOverloaded", err)
	}
	if got := c.Stats()[s.Addr()]; got != limit {
		t.Errorf("Stats in flight = %d, want %d", got, limit)
	}

	c.Forget(s.Addr())
	for i, ch := range results {
		if r := await(t, ch, time.Second); !errors.Is(r.err, ErrClosed) {
			t.Errorf("request %d after Forget: err = %v, want ErrClosed", i, r.err)
		}
	}
}

func TestServerQueueFullAnswersOverloaded(t *testing.T) {
	release := make(chan struct{})
	block := handlerFunc(func(p Peer, f *Frame) {
		<-release
		echo(p, f)
	})
	s := startServer(t, ServerOptions{Handler: block, Workers: 1, QueueLen: 1})
	c := newTestClient(t, ClientOptions{})

	var results []<-chan result
	for range 10 {
		results = append(results, sendAsync(t, c, s.Addr(), &Frame{Proto: ProtoDiameter, Shard: 5}))
	}
	// The first request occupies the only pool goroutine and the second the
	// only queue slot, so the other eight get an overloaded response at once.
	for i, ch := range results[2:] {
		r := await(t, ch, 5*time.Second)
		if r.err != nil {
			t.Fatalf("request %d: callback error: %v", i+2, r.err)
		}
		if !errors.Is(r.resp.Status.Err(), ErrOverloaded) {
			t.Errorf("request %d: status %s, want overloaded", i+2, r.resp.Status)
		}
		if r.resp.Shard != 5 || r.resp.Proto != ProtoDiameter {
			t.Errorf("request %d: shard %d proto %s, want 5 and diameter", i+2, r.resp.Shard, r.resp.Proto)
		}
	}
	close(release)
	for i, ch := range results[:2] {
		if r := await(t, ch, 5*time.Second); r.err != nil || r.resp.Status != StatusOK {
			t.Errorf("request %d after release: status %s, err %v", i, r.resp.Status, r.err)
		}
	}
}

func TestMalformedFrameClosesConnection(t *testing.T) {
	tests := []struct {
		name  string
		bytes []byte
	}{
		{"bad version", func() []byte { h := header(0, 0); h[0] = 9; return h }()},
		{"body too long", header(0, MaxBody+1)},
		{"key too long", header(MaxKey+1, 0)},
		{"response from gateway", func() []byte { h := header(0, 0); h[1] = byte(TypeResponse); return h }()},
	}
	s := startServer(t, ServerOptions{Handler: echo})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", s.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := io.Copy(io.Discard, conn)
			if err != nil {
				t.Fatalf("read after a bad frame: %v, want EOF", err)
			}
			if n != 0 {
				t.Errorf("server sent %d bytes before closing", n)
			}
		})
	}
	waitFor(t, 5*time.Second, "the server to drop every bad connection", func() bool { return s.Conns() == 0 })

	// The server still serves well-formed traffic.
	c := newTestClient(t, ClientOptions{})
	if r := await(t, sendAsync(t, c, s.Addr(), &Frame{Proto: ProtoCoAP}), 5*time.Second); r.err != nil {
		t.Fatalf("request after bad frames: %v", r.err)
	}
}

// TestServerReadsSplitAndBatchedFrames writes a request one byte at a time,
// then two requests and a ping in one write, over a plain socket.
func TestServerReadsSplitAndBatchedFrames(t *testing.T) {
	s := startServer(t, ServerOptions{Handler: echo})
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	req := goldenFrames[0].frame
	encoded, _ := AppendFrame(nil, &req)
	for i := range encoded {
		if _, err := conn.Write(encoded[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	batch := append(append([]byte(nil), encoded...), encoded...)
	batch, _ = AppendFrame(batch, &Frame{Type: TypePing, Corr: 99})
	if _, err := conn.Write(batch); err != nil {
		t.Fatal(err)
	}

	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf []byte
	var got []Frame
	for len(got) < 4 {
		chunk := make([]byte, 4096)
		n, err := conn.Read(chunk)
		if err != nil {
			t.Fatalf("read after %d frames: %v", len(got), err)
		}
		buf = append(buf, chunk[:n]...)
		for {
			f, m, err := ParseFrame(buf)
			if err != nil {
				t.Fatalf("parse response: %v", err)
			}
			if m == 0 {
				break
			}
			got = append(got, f)
			buf = buf[m:]
		}
	}
	pongs, responses := 0, 0
	for _, f := range got {
		switch {
		case f.Type == TypePong && f.Corr == 99:
			pongs++
		case f.Type == TypeResponse && f.Corr == req.Corr && string(f.Body) == string(req.Body):
			responses++
		default:
			t.Errorf("unexpected frame %+v", f)
		}
	}
	if pongs != 1 || responses != 3 {
		t.Errorf("got %d pongs and %d responses, want 1 and 3", pongs, responses)
	}
}

func TestDialFailureBacksOff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens on addr now

	c := newTestClient(t, ClientOptions{DialTimeout: time.Second})
	err = c.Send(addr, &Frame{Proto: ProtoCoAP}, func(*Frame, error) {})
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("first Send: err = %v, want ErrClosed", err)
	}
	started := time.Now()
	err = c.Send(addr, &Frame{Proto: ProtoCoAP}, func(*Frame, error) {})
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Send during backoff: err = %v, want ErrClosed", err)
	}
	if d := time.Since(started); d > 10*time.Millisecond {
		t.Errorf("Send during backoff took %v, want an immediate failure", d)
	}
}

func TestCancelAndConnsPerWorker(t *testing.T) {
	cancels := make(chan uint64, 1)
	h := handlerFunc(func(p Peer, f *Frame) {
		if f.Type == TypeCancel {
			cancels <- f.Corr
			return
		}
		echo(p, f)
	})
	s := startServer(t, ServerOptions{Handler: h})
	c := newTestClient(t, ClientOptions{ConnsPerWorker: 2})

	seen := make(map[uint64]bool)
	for range 4 {
		f := Frame{Proto: ProtoCoAP, Flags: FlagObserve}
		if r := await(t, sendAsync(t, c, s.Addr(), &f), 5*time.Second); r.err != nil {
			t.Fatalf("request: %v", r.err)
		}
		if seen[f.Corr] {
			t.Fatalf("correlation id %d reused", f.Corr)
		}
		seen[f.Corr] = true
	}
	if got := s.Conns(); got != 2 {
		t.Errorf("server Conns = %d, want 2 with ConnsPerWorker 2", got)
	}

	if err := c.SendCancel(s.Addr(), &Frame{Type: TypeCancel, Proto: ProtoCoAP, Corr: 1234}); err != nil {
		t.Fatalf("SendCancel: %v", err)
	}
	select {
	case id := <-cancels:
		if id != 1234 {
			t.Errorf("cancel for observation %d, want 1234", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel frame did not reach the handler")
	}
}

func TestServerStartAddressInUse(t *testing.T) {
	first := startServer(t, ServerOptions{Handler: echo})
	second := NewServer(ServerOptions{Addr: first.Addr(), Handler: echo, Logger: zerolog.Nop()})
	err := second.Start()
	if err == nil {
		t.Fatal("Start on a bound address succeeded")
	}
	if !strings.Contains(err.Error(), first.Addr()) {
		t.Errorf("error %q does not name the address %s", err, first.Addr())
	}
	if err := second.Stop(context.Background()); err != nil {
		t.Errorf("Stop after a failed Start: %v", err)
	}
}

func TestClientClosedRejectsSend(t *testing.T) {
	s := startServer(t, ServerOptions{Handler: echo})
	c, err := NewClient(ClientOptions{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	err = c.Send(s.Addr(), &Frame{Proto: ProtoCoAP}, func(*Frame, error) {})
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: err = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func BenchmarkRoundTrip(b *testing.B) {
	s := startServer(b, ServerOptions{Handler: echo})
	c := newTestClient(b, ClientOptions{})
	addr := s.Addr()
	body := coapObserveGET

	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		done := make(chan error, 1)
		cb := func(_ *Frame, err error) { done <- err }
		f := Frame{Proto: ProtoCoAP, Key: []byte("dev-1"), Body: body}
		for pb.Next() {
			if err := c.Send(addr, &f, cb); err != nil {
				b.Error(err)
				return
			}
			if err := <-done; err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPipelined keeps 256 requests in flight on one connection, so
// frames coalesce into shared writes as they do under load.
func BenchmarkPipelined(b *testing.B) {
	const window = 256
	s := startServer(b, ServerOptions{Handler: echo, QueueLen: window})
	c := newTestClient(b, ClientOptions{MaxInFlight: window})
	addr := s.Addr()

	slots := make(chan struct{}, window)
	var failed atomic.Int64
	cb := func(resp *Frame, err error) {
		if err != nil || resp.Status != StatusOK {
			failed.Add(1)
		}
		<-slots
	}
	f := Frame{Proto: ProtoCoAP, Key: []byte("dev-1"), Body: coapObserveGET}

	b.ReportAllocs()
	for b.Loop() {
		slots <- struct{}{}
		if err := c.Send(addr, &f, cb); err != nil {
			b.Fatal(err)
		}
	}
	for range window {
		slots <- struct{}{}
	}
	if n := failed.Load(); n != 0 {
		b.Fatalf("%d requests failed", n)
	}
}

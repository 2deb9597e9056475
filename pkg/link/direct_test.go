package link

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// inlineEcho responds on the event loop unless the body starts with "pool",
// and counts the frames served each way.
type inlineEcho struct {
	inline, pooled atomic.Int64
}

func (h *inlineEcho) Inline(f *Frame) bool { return !bytes.HasPrefix(f.Body, []byte("pool")) }

func (h *inlineEcho) ServeFrame(p Peer, f *Frame) {
	if f.Type != TypeRequest {
		return
	}
	if h.Inline(f) {
		h.inline.Add(1)
	} else {
		h.pooled.Add(1)
	}
	if bytes.Equal(f.Body, []byte("panic")) {
		panic("inline handler failure")
	}
	_ = p.Send(&Frame{Type: TypeResponse, Proto: f.Proto, Corr: f.Corr, Shard: f.Shard, Key: f.Key, Body: f.Body})
}

func TestInlineHandlerOnEventLoop(t *testing.T) {
	h := &inlineEcho{}
	s := startServer(t, ServerOptions{Handler: h})
	c := newTestClient(t, ClientOptions{})

	const n = 200
	chans := make([]<-chan result, 0, n+1)
	for i := range n {
		body := []byte{byte(i)}
		if i%4 == 0 {
			body = append([]byte("pool"), byte(i))
		}
		chans = append(chans, sendAsync(t, c, s.Addr(), &Frame{Proto: ProtoCoAP, Key: []byte("k"), Body: body}))
	}
	for i, ch := range chans {
		r := await(t, ch, 5*time.Second)
		if r.err != nil || r.resp.Status != StatusOK {
			t.Fatalf("request %d: err %v status %v", i, r.err, r.resp.Status)
		}
	}
	if got, want := h.inline.Load(), int64(n-n/4); got != want {
		t.Errorf("%d requests served inline, want %d", got, want)
	}
	if got, want := h.pooled.Load(), int64(n/4); got != want {
		t.Errorf("%d requests served by the pool, want %d", got, want)
	}

	// A panic on the event loop returns StatusHandlerError, and the
	// connection keeps serving.
	r := await(t, sendAsync(t, c, s.Addr(), &Frame{Proto: ProtoCoAP, Body: []byte("panic")}), 5*time.Second)
	if r.err != nil || r.resp.Status != StatusHandlerError {
		t.Fatalf("panicking inline handler: err %v status %v, want %v", r.err, r.resp.Status, StatusHandlerError)
	}
	r = await(t, sendAsync(t, c, s.Addr(), &Frame{Proto: ProtoCoAP, Body: []byte("after")}), 5*time.Second)
	if r.err != nil || string(r.resp.Body) != "after" {
		t.Fatalf("request after a panic: err %v body %q", r.err, r.resp.Body)
	}
}

// rawWorker accepts one link connection and hands its bytes to the test.
func rawWorker(t *testing.T) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		t.Cleanup(func() { c.Close() })
		ch <- c
	}()
	return ln.Addr().String(), ch
}

// readFramesFrom parses frames from c until it has want of them.
func readFramesFrom(t *testing.T, c net.Conn, want int, within time.Duration) []Frame {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	var buf []byte
	var got []Frame
	chunk := make([]byte, 64<<10)
	for len(got) < want {
		n, err := c.Read(chunk)
		if err != nil {
			t.Fatalf("read after %d of %d frames: %v", len(got), want, err)
		}
		buf = append(buf, chunk[:n]...)
		for {
			f, m, err := ParseFrame(buf)
			if err != nil {
				t.Fatalf("frame %d is corrupt: %v", len(got), err)
			}
			if m == 0 {
				break
			}
			f.Body = append([]byte(nil), f.Body...)
			got = append(got, f)
			buf = buf[m:]
		}
	}
	return got
}

// TestDirectWritesKeepOrder sends more than the socket
// buffers hold to a worker that is not reading, so that writes switch from
// the sender's goroutine to gnet's buffer and back. Every frame must arrive
// whole and in order.
func TestDirectWritesKeepOrder(t *testing.T) {
	addr, accepted := rawWorker(t)
	c := newTestClient(t, ClientOptions{RequestTimeout: time.Minute, MaxInFlight: 1 << 16})
	noop := Callback(func(*Frame, error) {})

	const frames = 600
	body := make([]byte, 16<<10)
	for i := range frames {
		binary.BigEndian.PutUint32(body, uint32(i))
		var err error
		if i%3 == 0 {
			err = c.QueueTo(addr, &Frame{Proto: ProtoCoAP, Body: body}, noop)
			c.Flush()
		} else {
			err = c.SendTo(addr, &Frame{Proto: ProtoCoAP, Body: body}, noop)
		}
		if err != nil {
			t.Fatalf("send frame %d: %v", i, err)
		}
	}
	conn := <-accepted
	got := readFramesFrom(t, conn, frames, 20*time.Second)
	for i, f := range got {
		if n := binary.BigEndian.Uint32(f.Body); n != uint32(i) || len(f.Body) != len(body) {
			t.Fatalf("frame %d carries number %d and %d bytes, want %d and %d", i, n, len(f.Body), i, len(body))
		}
	}
}

// TestQueuedFramesWaitForFlush checks that QueueTo keeps a frame queued until
// Flush, and that concurrent queuers and flushers lose nothing.
func TestQueuedFramesWaitForFlush(t *testing.T) {
	addr, accepted := rawWorker(t)
	c := newTestClient(t, ClientOptions{RequestTimeout: time.Minute, MaxInFlight: 1 << 16})
	noop := Callback(func(*Frame, error) {})

	if err := c.QueueTo(addr, &Frame{Proto: ProtoCoAP, Body: []byte("first")}, noop); err != nil {
		t.Fatal(err)
	}
	conn := <-accepted
	_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 64)); !isTimeout(err) || n != 0 {
		t.Fatalf("read %d bytes before Flush (err %v), want none", n, err)
	}
	c.Flush()
	if got := readFramesFrom(t, conn, 1, 5*time.Second); string(got[0].Body) != "first" {
		t.Fatalf("got body %q, want first", got[0].Body)
	}

	const goroutines, each = 4, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if err := c.QueueTo(addr, &Frame{Proto: ProtoCoAP, Shard: uint32(g), Body: []byte{byte(i)}}, noop); err != nil {
					t.Errorf("queue: %v", err)
					return
				}
				if i%7 == 0 {
					c.Flush()
					runtime.Gosched()
				}
			}
			c.Flush()
		})
	}
	wg.Wait()
	got := readFramesFrom(t, conn, goroutines*each, 10*time.Second)
	next := make([]int, goroutines)
	for _, f := range got {
		g := f.Shard
		if int(g) >= goroutines || int(f.Body[0]) != next[g]%256 {
			t.Fatalf("frame from goroutine %d carries %d, want %d", g, f.Body[0], next[g]%256)
		}
		next[g]++
	}
	_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _ := io.ReadFull(conn, make([]byte, 1)); n != 0 {
		t.Fatalf("extra bytes after the %d frames", len(got))
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestFailedLoopWriteKeepsServing makes the worker's write of a response
// fail: the gateway resets the connection while an inline handler works.
// gnet then closes the connection from inside the write, and the event loop
// must go on serving other connections.
func TestFailedLoopWriteKeepsServing(t *testing.T) {
	slow := handlerFunc(func(p Peer, f *Frame) {
		if f.Type != TypeRequest {
			return
		}
		if bytes.Equal(f.Body, []byte("slow")) {
			time.Sleep(100 * time.Millisecond)
		}
		_ = p.Send(&Frame{Type: TypeResponse, Proto: f.Proto, Corr: f.Corr, Body: f.Body})
	})
	s := startServer(t, ServerOptions{Handler: inlineAll{slow}})

	for i := range 3 {
		conn, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		req, _ := AppendFrame(nil, &Frame{Type: TypeRequest, Proto: ProtoCoAP, Corr: uint64(i + 1), Body: []byte("slow")})
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the handler is now sleeping
		// Close with a reset, so the response write fails.
		_ = conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
		time.Sleep(150 * time.Millisecond)
	}

	c := newTestClient(t, ClientOptions{RequestTimeout: 3 * time.Second})
	r := await(t, sendAsync(t, c, s.Addr(), &Frame{Proto: ProtoCoAP, Body: []byte("after")}), 5*time.Second)
	if r.err != nil {
		t.Fatalf("request after failed writes: %v", r.err)
	}
	if string(r.resp.Body) != "after" {
		t.Fatalf("response body %q, want after", r.resp.Body)
	}
}

// inlineAll runs every frame of h on the event loop.
type inlineAll struct{ Handler }

func (inlineAll) Inline(*Frame) bool { return true }

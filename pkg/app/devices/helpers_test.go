package devices

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/pkg/app"
)

// fakeClock is a session.Clock that tests move by hand.
type fakeClock struct{ nanos atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.nanos.Store(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.nanos.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.nanos.Add(int64(d)) }

// fakeObserver records notifications. Close ends the observation.
type fakeObserver struct {
	done chan struct{}
	once sync.Once
	// failing makes Notify return an error.
	failing atomic.Bool

	mu   sync.Mutex
	msgs [][]byte // guarded by mu
}

func newFakeObserver() *fakeObserver { return &fakeObserver{done: make(chan struct{})} }

var (
	errObserverFailed = errors.New("fake observer failed")
	errObserverClosed = errors.New("fake observer closed")
)

func (o *fakeObserver) Notify(msg []byte) error {
	select {
	case <-o.done:
		return errObserverClosed
	default:
	}
	if o.failing.Load() {
		return errObserverFailed
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.msgs = append(o.msgs, msg)
	return nil
}

func (o *fakeObserver) Done() <-chan struct{} { return o.done }
func (o *fakeObserver) Close()                { o.once.Do(func() { close(o.done) }) }

func (o *fakeObserver) messages() [][]byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([][]byte(nil), o.msgs...)
}

func newTestApp(t testing.TB, o Options) *App {
	t.Helper()
	if o.WorkerName == "" {
		o.WorkerName = "worker-1"
	}
	if o.Clock == nil {
		o.Clock = newFakeClock()
	}
	o.Logger = zerolog.Nop()
	return New(o)
}

// reqSpec describes a request to encode.
type reqSpec struct {
	code    codes.Code
	path    string
	token   []byte
	payload []byte
	opts    []message.Option
}

// buildRequest encodes a CoAP request with go-coap, as the gateway does.
func buildRequest(s reqSpec) ([]byte, error) {
	opts := make(message.Options, 0, 16)
	pathBuf := make([]byte, 512)
	opts, _, err := opts.SetPath(pathBuf, s.path)
	if err != nil {
		return nil, fmt.Errorf("set path %q: %w", s.path, err)
	}
	for _, o := range s.opts {
		opts = opts.Add(o)
	}
	m := message.Message{
		Code:      s.code,
		Token:     s.token,
		Options:   opts,
		Payload:   s.payload,
		Type:      message.Confirmable,
		MessageID: 0x1234,
	}
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		return nil, fmt.Errorf("size of %v %s: %w", s.code, s.path, err)
	}
	buf := make([]byte, size)
	if _, err := coder.DefaultCoder.Encode(m, buf); err != nil {
		return nil, fmt.Errorf("encode %v %s: %w", s.code, s.path, err)
	}
	return buf, nil
}

func encodeRequest(t testing.TB, s reqSpec) []byte {
	t.Helper()
	data, err := buildRequest(s)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func decodeResponse(t testing.TB, data []byte) message.Message {
	t.Helper()
	m := message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(data, &m); err != nil {
		t.Fatalf("decode response % x: %v", data, err)
	}
	return m
}

// do serves one request under the session key key and decodes the response.
func do(t testing.TB, a *App, key string, s reqSpec) message.Message {
	t.Helper()
	return doObserve(t, a, key, s, nil)
}

func doObserve(t testing.TB, a *App, key string, s reqSpec, obs app.Observer) message.Message {
	t.Helper()
	req := &app.Request{Proto: app.CoAP, Key: key, Message: encodeRequest(t, s), Observer: obs}
	out, err := a.Serve(context.Background(), req)
	if err != nil {
		t.Fatalf("serve %v %s: %v", s.code, s.path, err)
	}
	return decodeResponse(t, out)
}

func uintOpt(id message.OptionID, v uint32) message.Option {
	buf := make([]byte, 4)
	n, err := message.EncodeUint32(buf, v)
	if err != nil {
		panic(err)
	}
	return message.Option{ID: id, Value: buf[:n]}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Package app defines the interface between a worker and the applications it
// runs. The worker receives each request over the link from a gateway, already
// routed to it by session key, and hands it to the Handler registered for the
// request's protocol.
package app

import (
	"context"
	"errors"
	"fmt"
)

// Proto identifies the protocol of a request. The values match the proto byte
// of a link frame.
type Proto uint8

// Protocols carried over the link.
const (
	CoAP     Proto = 1
	Diameter Proto = 2
)

func (p Proto) String() string {
	switch p {
	case CoAP:
		return "coap"
	case Diameter:
		return "diameter"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// Request is one protocol request that a gateway routed to this worker.
type Request struct {
	Proto Proto
	// Key is the session key the gateway hashed to pick this worker.
	Key string
	// Shard is the ring shard of Key.
	Shard uint32
	// Message is the encoded request: a CoAP message in its UDP encoding
	// (RFC 7252 §3) or a Diameter message (RFC 6733 §3). It is valid only
	// until Serve returns; copy what must outlive the call.
	Message []byte
	// Observer is non-nil when the request registers an observation
	// (a CoAP GET with Observe=0, RFC 7641). The handler keeps it to send
	// notifications until its Done channel closes.
	Observer Observer
}

// Observer delivers notifications for one observation to the gateway that
// holds the registration. It is safe for concurrent use.
type Observer interface {
	// Notify sends one encoded notification. It fails once Done is closed.
	Notify(msg []byte) error
	// Done is closed when the observation ends: the device cancelled it or
	// the gateway's link connection closed.
	Done() <-chan struct{}
}

// Handler serves the requests of one protocol.
//
// Serve runs on a bounded pool of goroutines, so it may block briefly, and a
// handler that blocks for long holds a pool slot and delays other sessions.
// A handler that implements NonBlocking runs on a network event loop instead. It is called concurrently and must be safe for
// concurrent use. It returns the encoded response, which then belongs to the
// caller.
type Handler interface {
	Serve(ctx context.Context, req *Request) ([]byte, error)
}

// NonBlocking is implemented by a Handler whose Serve does not wait: it only
// computes and touches memory, taking locks that are held for microseconds.
// Nothing checks this, so a Handler that blocks stalls every request on
// its event loop.
// The worker then runs Serve on the network event loop that read the
// request, which saves two thread hand-offs per request. A Handler that
// calls a database or another service must not implement it.
type NonBlocking interface {
	Handler
	NonBlocking()
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, req *Request) ([]byte, error)

// Serve calls f(ctx, req).
func (f HandlerFunc) Serve(ctx context.Context, req *Request) ([]byte, error) {
	return f(ctx, req)
}

// ErrNoHandler is returned by Mux.Serve for a protocol with no handler.
var ErrNoHandler = errors.New("app: no handler registered for protocol")

// Mux routes each request to the Handler registered for its protocol.
// Register all handlers before the first Serve; after that a Mux is safe for
// concurrent use.
type Mux struct {
	handlers [4]Handler
}

// Register sets the handler for proto, replacing any earlier one.
func (m *Mux) Register(proto Proto, h Handler) error {
	if int(proto) >= len(m.handlers) || proto == 0 {
		return fmt.Errorf("app: register handler: unknown protocol %d", proto)
	}
	m.handlers[proto] = h
	return nil
}

// Handler returns the handler for proto, or nil.
func (m *Mux) Handler(proto Proto) Handler {
	if int(proto) >= len(m.handlers) {
		return nil
	}
	return m.handlers[proto]
}

// NonBlocking reports whether the handler for proto implements NonBlocking.
func (m *Mux) NonBlocking(proto Proto) bool {
	_, ok := m.Handler(proto).(NonBlocking)
	return ok
}

// Serve dispatches req to its protocol's handler.
func (m *Mux) Serve(ctx context.Context, req *Request) ([]byte, error) {
	h := m.Handler(req.Proto)
	if h == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoHandler, req.Proto)
	}
	return h.Serve(ctx, req)
}

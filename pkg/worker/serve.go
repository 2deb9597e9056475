package worker

import (
	"context"
	"sync"

	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/pkg/app"
	"github.com/shardgate/shardgate/pkg/link"
)

// frameHandler runs link frames through the applications. It is safe for
// concurrent use.
type frameHandler struct {
	mux *app.Mux
	log zerolog.Logger
	ctx context.Context

	mu sync.Mutex
	// observers holds the live observations by gateway connection and id.
	observers map[obsKey]*observer
}

type obsKey struct {
	peer link.Peer
	id   uint64
}

var _ link.InlineHandler = (*frameHandler)(nil)

// Inline implements link.InlineHandler: cancels, and the requests of
// applications that implement app.NonBlocking, run on the link's event loop.
func (h *frameHandler) Inline(f *link.Frame) bool {
	return f.Type == link.TypeCancel || h.mux.NonBlocking(app.Proto(f.Proto))
}

// ServeFrame implements link.Handler.
func (h *frameHandler) ServeFrame(p link.Peer, f *link.Frame) {
	switch f.Type {
	case link.TypeCancel:
		h.cancel(p, f.Corr)
		return
	case link.TypeRequest:
	default:
		return
	}
	req := app.Request{Proto: app.Proto(f.Proto), Key: string(f.Key), Shard: f.Shard, Message: f.Body}
	if f.Observe() {
		req.Observer = h.observe(p, f)
	}
	resp := link.Frame{Type: link.TypeResponse, Proto: f.Proto, Corr: f.Corr, Shard: f.Shard}
	body, err := h.mux.Serve(h.ctx, &req)
	if err != nil {
		resp.Status = link.StatusHandlerError
		if h.mux.Handler(req.Proto) == nil {
			resp.Status = link.StatusNoHandler
		}
		h.log.Warn().Err(err).Str("proto", req.Proto.String()).Str("key", req.Key).Msg("worker: request failed")
	}
	resp.Body = body
	if err := p.Send(&resp); err != nil {
		h.log.Debug().Err(err).Str("gateway", p.RemoteAddr()).Msg("worker: response not sent")
	}
}

// observe creates the observer for a registration request.
func (h *frameHandler) observe(p link.Peer, f *link.Frame) *observer {
	o := &observer{peer: p, id: f.Corr, proto: f.Proto, shard: f.Shard, key: string(f.Key), done: make(chan struct{})}
	k := obsKey{p, f.Corr}
	h.mu.Lock()
	if old := h.observers[k]; old != nil {
		old.end()
	}
	h.observers[k] = o
	h.mu.Unlock()
	go func() {
		// The observation also ends when the gateway's connection closes.
		select {
		case <-p.Done():
			h.cancel(p, o.id)
		case <-o.done:
		}
	}()
	return o
}

func (h *frameHandler) cancel(p link.Peer, id uint64) {
	k := obsKey{p, id}
	h.mu.Lock()
	o := h.observers[k]
	delete(h.observers, k)
	h.mu.Unlock()
	if o != nil {
		o.end()
	}
}

// observer sends one observation's notifications over the link. It is safe
// for concurrent use.
type observer struct {
	peer  link.Peer
	id    uint64
	proto link.Proto
	shard uint32
	key   string
	once  sync.Once
	done  chan struct{}
}

var _ app.Observer = (*observer)(nil)

func (o *observer) Notify(msg []byte) error {
	select {
	case <-o.done:
		return link.ErrClosed
	default:
	}
	return o.peer.Send(&link.Frame{Type: link.TypeNotify, Proto: o.proto, Corr: o.id, Shard: o.shard, Key: []byte(o.key), Body: msg})
}

func (o *observer) Done() <-chan struct{} { return o.done }

func (o *observer) end() { o.once.Do(func() { close(o.done) }) }

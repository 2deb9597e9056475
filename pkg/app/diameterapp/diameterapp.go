// Package diameterapp dispatches the Diameter requests a worker receives to
// the application they belong to: Credit-Control (RFC 4006) or freeDiameter's
// test_app. Other applications and commands get 3007 or 3001.
package diameterapp

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/pkg/app"
	"github.com/shardgate/shardgate/pkg/app/creditcontrol"
	"github.com/shardgate/shardgate/pkg/app/testapp"
	dia "github.com/shardgate/shardgate/pkg/protocols/diameter"
	"github.com/shardgate/shardgate/pkg/session"
)

// Options configure the worker's Diameter applications.
type Options struct {
	OriginHost  string // the worker's; the gateway replaces it in answers
	OriginRealm string
	WorkerName  string
	Quota       creditcontrol.Units                   // zero fields take creditcontrol's defaults
	Store       *session.Store[creditcontrol.Session] // nil: a store without limits or expiry
	Logger      zerolog.Logger
}

// Handler routes requests by Application-Id and Command-Code. It is safe for
// concurrent use.
type Handler struct {
	id   dia.Identity
	cc   *creditcontrol.Server
	test *testapp.App
}

var _ app.Handler = (*Handler)(nil)

// New returns the worker's Diameter handler. Empty identities default to the
// worker name and "shardgate.local".
func New(opts Options) app.Handler { return NewHandler(opts) }

// NewHandler is New returning the concrete type, which exposes CreditControl.
func NewHandler(opts Options) *Handler {
	if opts.OriginHost == "" {
		opts.OriginHost = opts.WorkerName
	}
	if opts.OriginHost == "" {
		opts.OriginHost = "worker"
	}
	if opts.OriginRealm == "" {
		opts.OriginRealm = "shardgate.local"
	}
	if opts.Store == nil {
		opts.Store = session.New[creditcontrol.Session](session.Options{})
	}
	id := dia.Identity{Host: opts.OriginHost, Realm: opts.OriginRealm}
	cc, _ := creditcontrol.New(creditcontrol.Options{ // cannot fail: Store is set
		Identity: id, WorkerName: opts.WorkerName, Quota: opts.Quota, Store: opts.Store, Logger: opts.Logger,
	})
	return &Handler{id: id, cc: cc, test: testapp.New(id)}
}

// CreditControl returns the credit-control application, for session lookups.
func (h *Handler) CreditControl() *creditcontrol.Server { return h.cc }

// NonBlocking marks the Handler as safe to run on the link's event loop: Serve
// only works in memory.
func (h *Handler) NonBlocking() {}

// Serve answers one request, or returns an error for bytes that are not a
// Diameter request (the gateway validated framing, so that is a bug upstream).
func (h *Handler) Serve(ctx context.Context, req *app.Request) ([]byte, error) {
	hdr, err := dia.ReadHeader(req.Message)
	if err != nil {
		return nil, fmt.Errorf("diameterapp: %w", err)
	}
	if !hdr.IsRequest() {
		return nil, fmt.Errorf("diameterapp: command %d app %d is an answer, not a request", hdr.CommandCode, hdr.AppID)
	}
	switch {
	case hdr.AppID == dia.AppCreditControl && hdr.CommandCode == dia.CmdCreditControl:
		return h.cc.Serve(ctx, req)
	case hdr.AppID == dia.AppTest && hdr.CommandCode == dia.CmdTest:
		return h.test.Serve(ctx, req)
	}
	result := uint32(dia.ResultApplicationUnsupported)
	if hdr.AppID == dia.AppCreditControl || hdr.AppID == dia.AppTest || hdr.AppID == dia.AppCommon {
		result = dia.ResultCommandUnsupported
	}
	sessionID, _, _ := dia.FindAVP(req.Message, dia.AVPSessionID, 0)
	return dia.AppendErrorAnswer(nil, hdr, sessionID, result, h.id, "command or application not supported", nil), nil
}

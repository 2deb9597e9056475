// Package devices is the reference CoAP application for IoT devices. It runs
// on a worker behind app.Handler and serves these resources (RFC 7252):
//
//	POST /d/{id}/telemetry   store the payload as the last reading and count it
//	GET  /d/{id}/state       the device state as JSON; observable (RFC 7641)
//	PUT  /d/{id}/config      store the body as the device configuration
//	GET  /.well-known/core   the resource list in CoRE link format (RFC 6690)
//
// The gateway does block-wise transfer (RFC 7959), so requests and responses
// carry whole bodies here. Device state lives in a session.Store keyed by the
// request's session key and expires after the configured idle time.
package devices

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/pkg/app"
	"github.com/shardgate/shardgate/pkg/session"
)

// Options configures an App.
type Options struct {
	// WorkerName is reported in the "worker" field of the device state.
	WorkerName string
	// IdleTimeout is how long a device's state is kept after its last
	// request. It is passed to session.Options.
	IdleTimeout time.Duration
	// MaxSessions caps the number of stored devices. A request that would
	// add one more gets 5.03 Service Unavailable. It is passed to
	// session.Options.
	MaxSessions int
	// Clock supplies the time for expiry and the "updated" field. Nil means
	// the system clock.
	Clock session.Clock
	// Logger receives start, stop and unexpected store errors.
	Logger zerolog.Logger
}

// App serves device requests. It implements app.Handler and is safe for
// concurrent use. It never holds a session store lock and the observer
// registry lock at the same time.
type App struct {
	worker    string
	clock     session.Clock
	log       zerolog.Logger
	sweep     time.Duration
	store     *session.Store[device]
	observers *registry
}

var _ app.Handler = (*App)(nil)

// Bounds of the sweep interval for idle devices and ended observations. The
// interval is an eighth of the idle timeout clamped to this range, and an
// idle device is removed at most one interval after its timeout.
const (
	minSweep = time.Second
	maxSweep = 30 * time.Second
)

// New returns an App with an empty device store.
func New(o Options) *App {
	a := &App{
		worker:    o.WorkerName,
		clock:     o.Clock,
		log:       o.Logger.With().Str("app", "devices").Logger(),
		sweep:     sweepInterval(o.IdleTimeout),
		observers: newRegistry(),
	}
	a.store = session.New[device](session.Options{
		IdleTimeout: o.IdleTimeout,
		Clock:       o.Clock,
		MaxSessions: o.MaxSessions,
	})
	return a
}

func sweepInterval(idle time.Duration) time.Duration {
	return min(max(idle/8, minSweep), maxSweep)
}

// Sessions returns the number of devices held in the store.
func (a *App) Sessions() int {
	return a.store.Len()
}

// Run expires idle devices and drops ended observations until ctx ends.
func (a *App) Run(ctx context.Context) {
	a.log.Info().Str("worker", a.worker).Dur("sweep", a.sweep).Msg("devices app started")
	defer a.log.Info().Msg("devices app stopped")

	done := make(chan struct{})
	go func() {
		defer close(done)
		a.store.Run(ctx, a.sweep)
	}()

	t := time.NewTicker(a.sweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-done
			return
		case <-t.C:
			a.observers.prune()
		}
	}
}

// NonBlocking marks the App as safe to run on the link's event loop: Serve
// only works in memory.
func (a *App) NonBlocking() {}

// Serve decodes one CoAP request and returns the encoded response. A bad
// request gets a CoAP error response and no error. Serve returns an error
// only for a request of another protocol or a response it cannot encode.
func (a *App) Serve(_ context.Context, req *app.Request) ([]byte, error) {
	if req.Proto != app.CoAP {
		return nil, fmt.Errorf("devices: invalid request protocol %s: register this handler for %s only",
			req.Proto, app.CoAP)
	}
	return a.serve(req).encode()
}

// now returns the current time from the configured clock.
func (a *App) now() time.Time {
	if a.clock == nil {
		return time.Now()
	}
	return a.clock.Now()
}

// storeFailure maps a store error to a response: 5.03 when the store is
// full, 5.00 (and a log line) for anything else.
func (a *App) storeFailure(r *request, key string, err error) *response {
	if errors.Is(err, session.ErrFull) {
		return r.diagnostic(codes.ServiceUnavailable, "device store is full; retry later")
	}
	a.log.Error().Err(err).Str("key", key).Msg("device store update failed")
	return r.diagnostic(codes.InternalServerError, "device store failed")
}

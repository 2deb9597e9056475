// Package link carries requests from gateways to workers and their answers
// back, over long-lived multiplexed TCP connections with a small binary
// framing (see frame.go for the layout).
//
// Both ends are event driven on gnet v2: the worker runs a Server, and each
// gateway runs one Client with its own connections to every worker. A sender
// writes its frames to the socket itself while gnet has nothing buffered for
// the connection, and hands them to the event loop otherwise (see
// frameWriter). Event loops never run application code that may block: the
// Server runs a handler on the loop only when it implements InlineHandler,
// hands other requests to a bounded goroutine pool, and the Client's
// callbacks must not block.
package link

import (
	"errors"
	"fmt"

	"github.com/rs/zerolog"
)

// Errors passed to callbacks or returned by Send. Callers branch on them with
// errors.Is.
var (
	// ErrClosed means the connection closed, or could not be opened, before
	// a response arrived. The request may or may not have been served.
	ErrClosed = errors.New("link: connection closed")
	// ErrTimeout means no response arrived within the request timeout.
	ErrTimeout = errors.New("link: request timed out")
	// ErrOverloaded means too many requests or bytes were queued on the
	// connection, or the worker answered StatusOverloaded.
	ErrOverloaded = errors.New("link: overloaded")
	// ErrNoHandler, ErrNotOwner and ErrHandler are returned by Status.Err
	// for the other non-OK statuses.
	ErrNoHandler = errors.New("link: worker has no handler for the proto")
	ErrNotOwner  = errors.New("link: worker does not own the shard")
	ErrHandler   = errors.New("link: worker handler failed")
)

// Err returns nil for StatusOK and the matching sentinel error otherwise,
// so a callback can fold the status into its error check.
func (s Status) Err() error {
	switch s {
	case StatusOK:
		return nil
	case StatusNoHandler:
		return ErrNoHandler
	case StatusNotOwner:
		return ErrNotOwner
	case StatusOverloaded:
		return ErrOverloaded
	case StatusHandlerError:
		return ErrHandler
	}
	return fmt.Errorf("%w: %d", ErrBadStatus, uint16(s))
}

// gnetLogger routes gnet's printf-style log lines into zerolog. It is safe for
// concurrent use.
type gnetLogger struct{ log zerolog.Logger }

func newGnetLogger(log zerolog.Logger) gnetLogger {
	return gnetLogger{log: log.With().Str("component", "gnet").Logger()}
}

func (l gnetLogger) Debugf(format string, args ...any) { l.log.Debug().Msgf(format, args...) }
func (l gnetLogger) Infof(format string, args ...any)  { l.log.Debug().Msgf(format, args...) }
func (l gnetLogger) Warnf(format string, args ...any)  { l.log.Warn().Msgf(format, args...) }
func (l gnetLogger) Errorf(format string, args ...any) { l.log.Error().Msgf(format, args...) }

// Fatalf logs at error level without exiting, because a library must not end
// the process. gnet v2.9.7 calls it only when a BSD poller cannot be created.
func (l gnetLogger) Fatalf(format string, args ...any) { l.log.Error().Msgf(format, args...) }

package creditcontrol

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/pkg/app"
	dia "github.com/shardgate/shardgate/pkg/protocols/diameter"
	"github.com/shardgate/shardgate/pkg/session"
)

// Session is the credit-control state of one Diameter session.
type Session struct {
	Worker    string // the worker that opened the session
	Requests  uint32 // CCRs served in this session
	Number    uint32 // CC-Request-Number of the last CCR
	Granted   Units  // total granted
	Used      Units  // total reported used
	TimeQuota bool   // grants are CC-Time rather than octets
}

// Options configure a Server.
type Options struct {
	Identity   dia.Identity // Origin-Host/Realm of answers; a gateway replaces them
	WorkerName string
	// Quota is granted per CCR-Initial, CCR-Update and CCR-Event: Octets when
	// the request asks for octets or for nothing, Seconds when it asks for
	// CC-Time. Defaults: 1 MiB and 3600 s.
	Quota  Units
	Store  *session.Store[Session] // required
	Logger zerolog.Logger
}

// Server answers CCRs. It is safe for concurrent use.
type Server struct {
	opts Options
	log  zerolog.Logger
}

var _ app.Handler = (*Server)(nil)

// New returns a Server; zero quotas take their defaults.
func New(o Options) (*Server, error) {
	if o.Store == nil {
		return nil, errors.New("creditcontrol: Options.Store must be set")
	}
	if o.Quota.Octets == 0 {
		o.Quota.Octets = 1 << 20
	}
	if o.Quota.Seconds == 0 {
		o.Quota.Seconds = 3600
	}
	log := o.Logger.With().Str("app", "credit_control").Str("worker", o.WorkerName).Logger()
	return &Server{opts: o, log: log}, nil
}

// Lookup returns the state of the session with id, for tests and debugging.
func (s *Server) Lookup(id string) (Session, bool) { return s.opts.Store.Get(id) }

// NonBlocking marks the Server as safe to run on the link's event loop: Serve
// only works in memory.
func (s *Server) NonBlocking() {}

// Serve answers one CCR (RFC 4006 §3.1): the answer echoes Session-Id
// first, Auth-Application-Id, CC-Request-Type and CC-Request-Number.
func (s *Server) Serve(_ context.Context, req *app.Request) ([]byte, error) {
	h, err := dia.ReadHeader(req.Message)
	if err != nil {
		return nil, fmt.Errorf("creditcontrol: %w", err)
	}
	body, err := dia.Body(req.Message)
	if err != nil {
		return nil, fmt.Errorf("creditcontrol: %w", err)
	}
	r, err := parseRequest(body)
	if err != nil {
		return dia.AppendErrorAnswer(nil, h, r.sessionID, dia.ResultInvalidAVPLength, s.opts.Identity,
			"invalid AVP length", nil), nil
	}
	if missing := r.missingAVP(); missing != 0 {
		failed := dia.AppendAVP(nil, missing, dia.AVPFlagMandatory, 0, nil)
		return dia.AppendErrorAnswer(nil, h, r.sessionID, dia.ResultMissingAVP, s.opts.Identity,
			"missing mandatory AVP", failed), nil
	}

	result, granted := s.account(&r)
	return s.appendCCA(h, &r, result, granted), nil
}

// missingAVP returns the code of the first mandatory CCR AVP that is absent.
func (r *request) missingAVP() uint32 {
	switch {
	case r.sessionID == nil:
		return dia.AVPSessionID
	case !r.hasType:
		return dia.AVPCCRequestType
	case !r.hasNumber:
		return dia.AVPCCRequestNumber
	}
	return 0
}

// account applies the request to the session store and returns the
// Result-Code and the units granted (nil for none).
func (s *Server) account(r *request) (uint32, *Units) {
	key := string(r.sessionID)
	grant := s.grantFor(r)
	switch r.reqType {
	case RequestInitial:
		err := s.opts.Store.Update(key, func(v *Session, existed bool) bool {
			*v = Session{Worker: s.opts.WorkerName, Requests: 1, Number: r.number,
				Granted: grant, Used: r.used, TimeQuota: r.wantTime}
			return true
		})
		if err != nil {
			s.log.Warn().Err(err).Str("session_id", key).Msg("credit-control session not opened")
			return dia.ResultUnableToComply, nil
		}
		s.log.Debug().Str("session_id", key).Msg("credit-control session opened")
		return dia.ResultSuccess, &grant
	case RequestUpdate, RequestTerminate:
		found := false
		terminate := r.reqType == RequestTerminate
		_ = s.opts.Store.Update(key, func(v *Session, existed bool) bool {
			if !existed {
				return false
			}
			found = true
			v.Requests++
			v.Number = r.number
			v.Used.Octets += r.used.Octets
			v.Used.Seconds += r.used.Seconds
			if !terminate {
				v.Granted.Octets += grant.Octets
				v.Granted.Seconds += grant.Seconds
			}
			return !terminate
		})
		if !found {
			return dia.ResultUnknownSessionID, nil
		}
		if terminate {
			s.log.Debug().Str("session_id", key).Msg("credit-control session closed")
			return dia.ResultSuccess, nil
		}
		return dia.ResultSuccess, &grant
	case RequestEvent:
		return dia.ResultSuccess, &grant
	}
	return dia.ResultInvalidAVPValue, nil
}

// grantFor returns the quota for one request, in the unit it asked for.
func (s *Server) grantFor(r *request) Units {
	if r.wantTime {
		return Units{Seconds: s.opts.Quota.Seconds}
	}
	return Units{Octets: s.opts.Quota.Octets}
}

// appendCCA builds the answer in the order of the CCA ABNF (RFC 4006 §3.2).
func (s *Server) appendCCA(h dia.Header, r *request, result uint32, granted *Units) []byte {
	out := dia.AppendAnswerStart(make([]byte, 0, 256), h, r.sessionID, result, s.opts.Identity)
	out = dia.AppendUint32(out, dia.AVPAuthApplicationID, dia.AVPFlagMandatory, 0, dia.AppCreditControl)
	out = dia.AppendUint32(out, dia.AVPCCRequestType, dia.AVPFlagMandatory, 0, r.reqType)
	out = dia.AppendUint32(out, dia.AVPCCRequestNumber, dia.AVPFlagMandatory, 0, r.number)
	if result == dia.ResultInvalidAVPValue {
		var g int
		out, g = dia.BeginGroup(out, dia.AVPFailedAVP, dia.AVPFlagMandatory, 0)
		out = dia.AppendUint32(out, dia.AVPCCRequestType, dia.AVPFlagMandatory, 0, r.reqType)
		out = dia.EndGroup(out, g)
	}
	if granted != nil {
		var g int
		out, g = dia.BeginGroup(out, dia.AVPGrantedServiceUnit, dia.AVPFlagMandatory, 0)
		if granted.Seconds > 0 {
			out = dia.AppendUint32(out, dia.AVPCCTime, dia.AVPFlagMandatory, 0, granted.Seconds)
		} else {
			out = dia.AppendUint64(out, dia.AVPCCTotalOctets, dia.AVPFlagMandatory, 0, granted.Octets)
		}
		out = dia.EndGroup(out, g)
	}
	return dia.SetLength(out)
}

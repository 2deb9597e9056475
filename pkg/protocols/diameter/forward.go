package diameter

import (
	"errors"
	"time"
)

// handleRequest routes one application request: it inspects it, answers
// errors itself, and otherwise forwards it to the owner of its key. The
// answer is written whenever the worker returns, so reads go on meanwhile.
func (p *peer) handleRequest(h Header, msg []byte) {
	p.requests.Add(1)
	p.s.metrics.requested(p.peerLabel(), h.AppID)

	if ok, result := served(h.AppID, h.CommandCode); !ok {
		p.answerError(h, sessionIDOf(msg), result, "command or application not supported", nil)
		return
	}
	var v verdict
	p.s.router.inspect(msg, &v)
	if v.result != 0 {
		p.answerError(h, v.sessionID, v.result, v.errMsg, v.failed())
		return
	}
	if p.inFlight.Add(1) > int64(p.s.opts.MaxInFlightPerPeer) {
		p.inFlight.Add(-1)
		p.answerError(h, v.sessionID, ResultTooBusy, "too many requests in flight from this peer", nil)
		return
	}
	start := time.Now()
	sessionID := v.sessionID
	done := func(answer []byte, err error) {
		p.complete(h, sessionID, start, answer, err)
	}
	var err error
	if q := p.s.queue; q != nil {
		err = q.QueueForward(v.key, msg, done)
		p.queued = true
	} else {
		err = p.s.opts.Forwarder.Forward(v.key, msg, done)
	}
	if err != nil {
		p.inFlight.Add(-1)
		p.forwardFailed(h, sessionID, err)
	}
}

// complete runs in the forwarder's callback: it rewrites the worker's answer
// for the peer and queues it. It must not block.
func (p *peer) complete(h Header, sessionID []byte, start time.Time, answer []byte, err error) {
	p.inFlight.Add(-1)
	p.s.metrics.forwarded(h.AppID, start)
	if err != nil {
		p.forwardFailed(h, sessionID, err)
		return
	}
	out, result, err := RewriteAnswer(make([]byte, 0, len(answer)+64), answer, h, p.s.id)
	if err != nil {
		p.log.Warn().Err(err).Uint32("hop_by_hop", h.HopByHop).Msg("diameter worker answer rejected")
		p.answerError(h, sessionID, ResultUnableToComply, "invalid answer from the worker", nil)
		return
	}
	p.w.send(out)
	p.s.metrics.answered(p.peerLabel(), h.AppID, result)
}

func (p *peer) forwardFailed(h Header, sessionID []byte, err error) {
	if errors.Is(err, ErrOverloaded) {
		p.answerError(h, sessionID, ResultTooBusy, "gateway overloaded", nil)
		return
	}
	p.log.Debug().Err(err).Uint32("hop_by_hop", h.HopByHop).Msg("diameter forward failed")
	p.answerError(h, sessionID, ResultUnableToDeliver, "session owner unreachable", nil)
}

// watchdog sends a DWR after Tw without any message from the peer and closes
// the connection when a further Tw passes without the DWA (RFC 3539 §3.4).
// NOTE: Tw carries no jitter, unlike RFC 3539's ±2 s.
func (p *peer) watchdog() {
	tw := p.s.opts.Watchdog
	t := time.NewTimer(tw)
	defer t.Stop()
	for {
		select {
		case <-p.closed:
			return
		case <-t.C:
		}
		idle := time.Since(time.Unix(0, p.lastRecv.Load()))
		if idle < tw {
			t.Reset(tw - idle)
			continue
		}
		p.mu.Lock()
		pending := p.dwrPending
		p.dwrPending = true
		p.mu.Unlock()
		if pending {
			p.log.Warn().Dur("watchdog", tw).Msg("diameter peer did not answer DWR, closing")
			p.close("watchdog expired")
			return
		}
		if p.getState() == stateOpen {
			p.w.send(p.appendDWR())
		}
		t.Reset(tw)
	}
}

func (p *peer) appendDWR() []byte {
	id := p.s.nextID()
	dwr := AppendHeader(nil, Header{Flags: FlagRequest, CommandCode: CmdDeviceWatchdog, HopByHop: id, EndToEnd: id})
	dwr = AppendString(dwr, AVPOriginHost, AVPFlagMandatory, 0, p.s.id.Host)
	dwr = AppendString(dwr, AVPOriginRealm, AVPFlagMandatory, 0, p.s.id.Realm)
	dwr = AppendUint32(dwr, AVPOriginStateID, AVPFlagMandatory, 0, p.s.stateID)
	return SetLength(dwr)
}

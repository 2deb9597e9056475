package coap

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardgate/shardgate/pkg/metrics"
)

// counters holds the endpoint's metric children, resolved once so that the
// packet path does not look labels up.
type counters struct {
	forwarded, duplicate, malformed, ping, dropped, ack, rst  prometheus.Counter
	badOption, noOwner, overloaded, timeout, lost, badGateway prometheus.Counter
	blockGap, blockCached, observe, observeEnd, observeMoved  prometheus.Counter
	notify, notifyStale, emptyAck, retransmit, sendErrors     prometheus.Counter
	evicted, outboundFull, badKey, tooLarge, tooManyOptions   prometheus.Counter
	observeFull, uploadsFull, observeLost, blockRepeat        prometheus.Counter
	codes                                                     [256]prometheus.Counter
	forward                                                   prometheus.Observer
}

func newCounters(m *metrics.Metrics) counters {
	p := func(outcome string) prometheus.Counter {
		return m.Packets.WithLabelValues("coap", outcome)
	}
	c := counters{
		forwarded: p("forwarded"), duplicate: p("duplicate"), malformed: p("malformed"),
		ping: p("ping"), dropped: p("dropped"), ack: p("ack"), rst: p("rst"),
		badOption: p("bad_option"), noOwner: p("no_owner"), overloaded: p("overloaded"),
		timeout: p("timeout"), lost: p("worker_lost"), badGateway: p("bad_gateway"),
		blockGap: p("block_incomplete"), blockCached: p("block_cached"),
		observe: p("observe_register"), observeEnd: p("observe_end"), observeMoved: p("observe_moved"),
		notify: p("notify"), notifyStale: p("notify_stale"), emptyAck: p("empty_ack"),
		retransmit: p("retransmit"), sendErrors: p("send_error"),
		evicted: p("exchange_evicted"), outboundFull: p("outbound_full"),
		badKey: p("bad_key"), tooLarge: p("too_large"), tooManyOptions: p("too_many_options"),
		observeFull: p("observe_full"), uploadsFull: p("block_uploads_full"),
		observeLost: p("observe_move_failed"), blockRepeat: p("block_last_repeated"),
	}
	c.forward = m.Forward.WithLabelValues("coap")
	for i := range c.codes {
		if i>>5 >= 2 {
			c.codes[i] = m.Requests.WithLabelValues("coap", codeNames[i])
		}
	}
	return c
}

// code counts a response sent to a device.
func (c *counters) code(b byte) {
	if ctr := c.codes[b]; ctr != nil {
		ctr.Inc()
	}
}

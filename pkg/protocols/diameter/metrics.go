package diameter

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Diameter series. Label "peer" is the peer's
// Origin-Host, so its cardinality follows the number of peers.
// NOTE: with an empty allow-list any Origin-Host adds series; set
// AllowedPeers where peers are not trusted.
type metrics struct {
	requests *prometheus.CounterVec
	answers  *prometheus.CounterVec
	forward  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardgate", Subsystem: "diameter", Name: "requests_total",
			Help: "Diameter requests received from peers, by peer Origin-Host and application.",
		}, []string{"peer", "app"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shardgate", Subsystem: "diameter", Name: "answers_total",
			Help: "Diameter answers sent to peers, by peer Origin-Host, application and Result-Code.",
		}, []string{"peer", "app", "result_code"}),
		forward: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "shardgate", Subsystem: "diameter", Name: "forward_duration_seconds",
			Help:    "Time from forwarding a Diameter request to a worker until its answer or error, in seconds.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}, []string{"app"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.requests, err = register(reg, m.requests)
	if err != nil {
		return nil, err
	}
	m.answers, err = register(reg, m.answers)
	if err != nil {
		return nil, err
	}
	m.forward, err = register(reg, m.forward)
	return m, err
}

// register registers c, or returns the collector already registered under
// the same description so that two servers can share one registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

func (m *metrics) answered(peer string, app uint32, result uint32) {
	m.answers.WithLabelValues(peer, appLabel(app), strconv.FormatUint(uint64(result), 10)).Inc()
}

func (m *metrics) forwarded(app uint32, start time.Time) {
	m.forward.WithLabelValues(appLabel(app)).Observe(time.Since(start).Seconds())
}

package diameter

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Diameter series. Label "peer" is the peer's
// Origin-Host as peerLabels bounds it. The methods never pass invalid UTF-8 to
// prometheus, which panics on it.
type metrics struct {
	requests     *prometheus.CounterVec
	answers      *prometheus.CounterVec
	forward      *prometheus.HistogramVec
	connRejected prometheus.Counter
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
		connRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shardgate", Subsystem: "diameter", Name: "connections_rejected_total",
			Help: "Diameter TCP connections closed on accept because MaxPeers connections were open.",
		}),
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
	if err != nil {
		return nil, err
	}
	m.connRejected, err = register(reg, m.connRejected)
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

func (m *metrics) requested(peer string, app uint32) {
	m.requests.WithLabelValues(labelValue(peer), appLabel(app)).Inc()
}

func (m *metrics) answered(peer string, app uint32, result uint32) {
	m.answers.WithLabelValues(labelValue(peer), appLabel(app), strconv.FormatUint(uint64(result), 10)).Inc()
}

func (m *metrics) forwarded(app uint32, start time.Time) {
	m.forward.WithLabelValues(appLabel(app)).Observe(time.Since(start).Seconds())
}

// labelValue returns s with each invalid UTF-8 sequence replaced by U+FFFD,
// because prometheus panics on a label value that is not valid UTF-8. It
// returns s itself, without allocating, when s is valid.
func labelValue(s string) string {
	return strings.ToValidUTF8(s, "\uFFFD")
}

// The "peer" label is bounded because each value costs a series per
// application and Result-Code, and prometheus keeps a series until the
// process exits: a label per Origin-Host would let anyone who can connect
// grow /metrics without limit. With AllowedPeers set, each listed host has its
// own label, so the operator's list bounds them. Without an allow-list, the first maxPeerLabels Origin-Hosts to complete a capabilities
// exchange keep their own label for the life of the process, and later ones
// share otherPeerLabel.
const (
	maxPeerLabels  = 64
	otherPeerLabel = "other"
)

// peerLabels assigns the "peer" label value of each Origin-Host. It is safe
// for concurrent use.
type peerLabels struct {
	fixed bool // an allow-list was given: no label is added after construction

	mu     sync.Mutex
	byHost map[string]string // lower-cased Origin-Host to its label value
}

func newPeerLabels(allowed []string) *peerLabels {
	l := &peerLabels{fixed: len(allowed) > 0, byHost: make(map[string]string, len(allowed))}
	for _, h := range allowed {
		l.byHost[strings.ToLower(h)] = labelValue(h)
	}
	return l
}

// label returns the label value for host, admitting host as a new value
// while there is room. Hosts that differ only in ASCII case share one value.
func (l *peerLabels) label(host string) string {
	key := strings.ToLower(host)
	l.mu.Lock()
	defer l.mu.Unlock()
	if v, ok := l.byHost[key]; ok {
		return v
	}
	if l.fixed || len(l.byHost) >= maxPeerLabels {
		return otherPeerLabel
	}
	v := labelValue(host)
	l.byHost[key] = v
	return v
}

// Package metrics defines the Prometheus collectors shared by the gateway and
// the worker. Every name is in the shardgate namespace; operators' dashboards
// and the HorizontalPodAutoscaler read them, so names and labels are a
// contract.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Namespace prefixes every metric name.
const Namespace = "shardgate"

// Metrics holds the collectors. It is safe for concurrent use.
type Metrics struct {
	// Packets counts datagrams and messages by protocol and outcome
	// (forwarded, duplicate, malformed, ...).
	Packets *prometheus.CounterVec
	// Requests counts responses sent to clients by protocol and response
	// code (CoAP "2.05", Diameter Result-Code).
	Requests *prometheus.CounterVec
	// Forward observes the time from a request's arrival at the gateway to
	// the worker's response.
	Forward *prometheus.HistogramVec
	// RingMembers is the number of active workers on the ring.
	RingMembers prometheus.Gauge
	// RingShards is the number of shards each worker owns.
	RingShards *prometheus.GaugeVec
	// Sessions is the number of sessions a worker holds; the HPA scales on it.
	Sessions *prometheus.GaugeVec
}

// New creates the collectors and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "packets_total",
			Help: "Messages received, by protocol and outcome.",
		}, []string{"proto", "outcome"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "requests_total",
			Help: "Responses sent to clients, by protocol and response code.",
		}, []string{"proto", "code"}),
		Forward: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "forward_duration_seconds",
			Help:    "Time from a request's arrival at the gateway to the owning worker's response.",
			Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1},
		}, []string{"proto"}),
		RingMembers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "ring_members",
			Help: "Active workers on this node's ring.",
		}),
		RingShards: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "ring_shards",
			Help: "Shards owned by each worker on this node's ring.",
		}, []string{"worker"}),
		Sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "sessions",
			Help: "Sessions held by a worker.",
		}, []string{"worker"}),
	}
	reg.MustRegister(m.Packets, m.Requests, m.Forward, m.RingMembers, m.RingShards, m.Sessions)
	return m
}

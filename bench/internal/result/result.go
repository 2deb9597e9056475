// Package result defines the JSON record that loadgen writes for each run and
// that the report reads. Durations are in microseconds and rates in requests
// per second, so the files read well without a Go decoder.
package result

import (
	"encoding/json"
	"fmt"
	"os"
)

// Run is the outcome of one loadgen run against one system under test.
type Run struct {
	Scenario string `json:"scenario"`
	Rep      int    `json:"rep"`
	Mode     string `json:"mode"` // coap, echo or diameter
	Target   string `json:"target"`
	// Offered is the open-loop rate in requests per second, 0 for closed loop.
	Offered  float64 `json:"offered_rps"`
	InFlight int     `json:"in_flight"`
	Sockets  int     `json:"sockets"`
	Seconds  float64 `json:"seconds"`
	// Sent counts first transmissions, Completed the matched responses.
	Sent        uint64            `json:"sent"`
	Completed   uint64            `json:"completed"`
	Lost        uint64            `json:"lost"`
	Retransmits uint64            `json:"retransmits"`
	Outcomes    map[string]uint64 `json:"outcomes"`
	Throughput  float64           `json:"throughput_rps"`
	// Latency runs from the intended send time to the response's receipt,
	// as stamped by the clock that RxClock names.
	Latency Latency `json:"latency_us"`
	// Service is latency from the first actual transmission rather than
	// the intended send time. It equals Latency in closed loop.
	Service Latency `json:"service_latency_us"`
	// ReadLatency runs from the intended send time to the moment the
	// generator's reader goroutine got the response. Its excess over
	// Latency is the generator's own wakeup delay. Files written before
	// loadgen recorded it hold zeros.
	ReadLatency Latency `json:"read_latency_us"`
	// RxClock names the clock that stamped receipt for Latency and
	// Service. It is "kernel" for SO_TIMESTAMPNS on the generator's UDP
	// sockets and "user" for the reader goroutine's read (Diameter over
	// TCP, or a system without the option). It is "mixed" when
	// NoRxTimestamp datagrams on kernel-stamped sockets came without a
	// timestamp. Files written before loadgen recorded it hold "".
	RxClock string `json:"rx_clock"`
	// NoRxTimestamp counts datagrams that should have carried a kernel
	// receive timestamp but did not, and were stamped at the read.
	NoRxTimestamp uint64 `json:"no_rx_timestamp"`
	// SendLag is how late the generator sent open-loop requests against
	// their schedule. A large SendLag means that the generator, not the
	// system under test, limited the run.
	SendLag Latency `json:"send_lag_us"`
	// CPU maps each process under test (and "loadgen") to CPU seconds
	// (user+system) used during the measured interval.
	CPU map[string]float64 `json:"cpu_seconds"`
	// Command is the loadgen command line, for the report.
	Command string `json:"command"`
}

// Latency summarises a histogram in microseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Write stores r as indented JSON in path.
func Write(path string, r *Run) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result %s: %w", r.Scenario, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// Read loads one result file.
func Read(path string) (*Run, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read result: %w", err)
	}
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode result %s: %w", path, err)
	}
	return &r, nil
}

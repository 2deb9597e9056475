package main

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shardgate/shardgate/bench/internal/result"
)

func TestReportWritesTargetsAndChart(t *testing.T) {
	dir := t.TempDir()
	runs := []result.Run{
		{Scenario: "nginx-udp", Rep: 1, Throughput: 100000, Seconds: 1, Latency: result.Latency{P50: 900, P99: 2000}},
		{Scenario: "shardgate-coap", Rep: 1, Throughput: 120000, Seconds: 1, Latency: result.Latency{P50: 800, P99: 1500}},
		{Scenario: "shardgate-coap", Rep: 2, Throughput: 110000, Seconds: 1, Latency: result.Latency{P50: 850, P99: 1600}},
		{Scenario: "shardgate-coap", Rep: 3, Throughput: 130000, Seconds: 1, Latency: result.Latency{P50: 820, P99: 1700}},
		{Scenario: "shardgate-coap-open-0.5", Rep: 1, Offered: 60000, Throughput: 60000, Seconds: 1,
			Latency: result.Latency{P50: 300, P99: 900}},
		{Scenario: "libcoap-open-0.5", Rep: 1, Offered: 20000, Throughput: 20000, Seconds: 1,
			Latency: result.Latency{P50: 200, P99: 700}, Service: result.Latency{P99: 650},
			ReadLatency: result.Latency{P50: 260, P99: 1100}, SendLag: result.Latency{P99: 120},
			RxClock: "kernel"},
	}
	for i := range runs {
		r := &runs[i]
		r.Command = "/tmp/w/bin/loadgen -scenario " + r.Scenario
		if err := result.Write(filepath.Join(dir, r.Scenario+string(rune('0'+r.Rep))+".json"), r); err != nil {
			t.Fatal(err)
		}
	}
	// A result written before loadgen recorded read latency and rx_clock.
	old := `{"scenario": "echo-floor-open-0.5", "rep": 1, "mode": "echo", "offered_rps": 5000,
		"throughput_rps": 5000, "seconds": 1, "latency_us": {"p50": 600, "p99": 1300},
		"send_lag_us": {"p99": 1100}, "command": "loadgen -rate 5000"}`
	if err := os.WriteFile(filepath.Join(dir, "old.json"), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(dir, dir, "bash bench/run.sh", "/tmp/w", false); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "RESULTS.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| CoAP through shardgate >= 1.0x nginx UDP proxy | 1.20x | yes |",
		"| shardgate-coap | 3 | 120000 (110000-130000) |",
		"| 900 us | yes |",
		"$WORK/bin/loadgen",
		"not measured",
		"| p99 from actual send us | p99 at user-space read us | send lag p99 us | lost |",
		"| libcoap | 20000 | 20000 (20000-20000) | 200 (200-200) | 700 (700-700) | 0 (0-0) | " +
			"650 (650-650) | 1100 (1100-1100) | 120 (120-120) | 0 |",
		"| echo-floor | 5000 | 5000 (5000-5000) | 600 (600-600) | 1300 (1300-1300) | 0 (0-0) | " +
			"n/a | n/a | 1100 (1100-1100) | 0 |",
		"In echo-floor, shardgate-coap, some or all runs stamped receipt at the user-space read",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("RESULTS.md lacks %q", want)
		}
	}
	f, err := os.Open(filepath.Join(dir, "latency.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("latency.png does not decode: %v", err)
	}
	if b := img.Bounds(); b.Dx() != chartW || b.Dy() != chartH {
		t.Errorf("chart is %v, want %dx%d", b, chartW, chartH)
	}
}

func TestReportNeedsResults(t *testing.T) {
	if err := run(t.TempDir(), t.TempDir(), "", "", false); err == nil {
		t.Error("run succeeded with no results")
	}
}

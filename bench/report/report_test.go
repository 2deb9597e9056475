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
	}
	for i := range runs {
		r := &runs[i]
		r.Command = "/tmp/w/bin/loadgen -scenario " + r.Scenario
		if err := result.Write(filepath.Join(dir, r.Scenario+string(rune('0'+r.Rep))+".json"), r); err != nil {
			t.Fatal(err)
		}
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

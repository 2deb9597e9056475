package load

import (
	"testing"
	"time"
)

// runPaced makes an open-loop echo run at 2000 req/s with the given pace
// quantum. It returns the requests sent in the measured window, the pacer's
// wakeups, and the run time from start to the end of sending.
func runPaced(t *testing.T, quantum, duration time.Duration) (sent, wakes uint64, runTime time.Duration) {
	t.Helper()
	addr := serveUDP(t, echoHandler)
	cfg := baseConfig("echo", addr)
	cfg.Rate, cfg.InFlight, cfg.Duration, cfg.PaceQuantum = 2000, 64, duration, quantum
	r, res := runChecked(t, cfg)
	wakes = r.pacerWakes.Load()
	t.Logf("quantum %v: %d sent, %d pacer wakeups, send lag p50 %.0f us, max %.0f us",
		quantum, res.Sent, wakes, res.SendLag.P50, res.SendLag.Max)
	return res.Sent, wakes, cfg.Warmup + cfg.Duration
}

// With a 1 ms quantum at 2000 req/s the pacer wakes about once per
// millisecond of sending and sends two requests per wakeup, instead of
// waking for each request.
func TestPacerQuantumBatchesWakeups(t *testing.T) {
	sent, wakes, runTime := runPaced(t, time.Millisecond, 2*time.Second)
	if sent < 3800 || sent > 4200 {
		t.Errorf("sent %d in 2 s at 2000 req/s, want 3800 to 4200", sent)
	}
	// Each sleep lasts at least the quantum, so runTime/quantum bounds
	// the wakeups. The 10% covers the first pass and rounding.
	maxWakes := uint64(1.1 * float64(runTime) / float64(time.Millisecond))
	if wakes > maxWakes {
		t.Errorf("%d pacer wakeups in %v, want at most %d with a 1 ms quantum", wakes, runTime, maxWakes)
	}
}

// With quantum 0 the pacer keeps the 20 us minimum poll, so at 2000 req/s
// over two staggered flows it wakes for each request, or for two when a
// busy machine wakes it late.
func TestPacerZeroQuantumWakesPerRequest(t *testing.T) {
	sent, wakes, _ := runPaced(t, 0, 500*time.Millisecond)
	if sent < 900 {
		t.Errorf("sent %d in 0.5 s at 2000 req/s, want at least 900", sent)
	}
	if wakes < sent*3/4 {
		t.Errorf("%d pacer wakeups for %d requests, want about one per request", wakes, sent)
	}
}

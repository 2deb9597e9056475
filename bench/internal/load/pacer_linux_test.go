//go:build linux

package load

import (
	"context"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMonotonicBaseMatchesClock(t *testing.T) {
	base := time.Now()
	mono, err := monotonicBase(base)
	if err != nil {
		t.Fatal(err)
	}
	var ts unix.Timespec
	before := int64(time.Since(base))
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	after := int64(time.Since(base))
	// The bound is loose because a preemption between the reads can
	// widen it. A wrong clock would miss by far more.
	if got := ts.Nano() - mono; got < before-1_000_000 || got > after+1_000_000 {
		t.Errorf("CLOCK_MONOTONIC - base = %d ns, want within 1 ms of [%d, %d]", got, before, after)
	}
}

// The sleeper never wakes before its target. It wakes well under 1 ms late
// at least once, which a Go timer on an idle process cannot: the runtime
// rounds such a sleep up to a 1 ms epoll_wait timeout.
func TestSleeperWakesPrecisely(t *testing.T) {
	stop := make(chan struct{})
	r := &runner{base: time.Now()}
	done := make(chan []int64)
	go func() {
		sl, err := r.newSleeper(stop)
		if err != nil {
			t.Error(err)
			close(done)
			return
		}
		defer sl.close()
		var late []int64
		for range 200 {
			target := r.now() + 300_000
			if !sl.sleepUntil(target) {
				break
			}
			late = append(late, r.now()-target)
		}
		done <- late
	}()
	late := <-done
	if len(late) != 200 {
		t.Fatalf("%d of 200 sleeps returned", len(late))
	}
	slices.Sort(late)
	t.Logf("lateness of 300 us sleeps: min %d us, p50 %d us, p99 %d us, max %d us",
		late[0]/1e3, late[100]/1e3, late[198]/1e3, late[199]/1e3)
	// Allow for the error of monotonicBase.
	if late[0] < -50_000 {
		t.Errorf("a sleep returned %d us before its target", -late[0]/1e3)
	}
	if late[0] > 200_000 {
		t.Errorf("every sleep was at least %d us late, want one under 200 us", late[0]/1e3)
	}
}

func TestSleeperStops(t *testing.T) {
	stop := make(chan struct{})
	r := &runner{base: time.Now()}
	done := make(chan bool)
	go func() {
		sl, err := r.newSleeper(stop)
		if err != nil {
			t.Error(err)
			done <- true
			return
		}
		defer sl.close()
		done <- sl.sleepUntil(r.now() + int64(time.Hour))
	}()
	time.Sleep(20 * time.Millisecond)
	close(stop)
	select {
	case ok := <-done:
		if ok {
			t.Error("sleepUntil returned true after stop closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("sleepUntil ignored stop for 5 s")
	}
}

// 2000 sends at 2000 req/s against a loopback echo. Send lag depends on
// the machine's load, so the test only logs it.
func TestPacerSendLag(t *testing.T) {
	addr := serveUDP(t, echoHandler)
	cfg := baseConfig("echo", addr)
	cfg.Rate, cfg.InFlight, cfg.Duration = 2000, 256, time.Second
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("send lag p50 %.0f us, p99 %.0f us, max %.0f us; latency p99 %.0f us, at the read %.0f us",
		res.SendLag.P50, res.SendLag.P99, res.SendLag.Max, res.Latency.P99, res.ReadLatency.P99)
	if res.Sent < 1900 || res.Sent > 2100 {
		t.Errorf("sent %d in 1 s at 2000 req/s, want 1900 to 2100", res.Sent)
	}
	// A request sent just before the window whose response arrives in it
	// counts as completed but not sent. One sent at the window's end can
	// count as sent but not completed.
	if res.Completed+20 < res.Sent || res.Completed > res.Sent+20 {
		t.Errorf("completed %d, sent %d: want them within 20", res.Completed, res.Sent)
	}
}

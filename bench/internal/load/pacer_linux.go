//go:build linux

package load

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// preciseSpan is the longest wait that the pacer sleeps in clock_nanosleep.
// A longer wait first sleeps on a Go timer, which watches stop, until
// preciseSpan before the target. Go timers can end about 1 ms late, so the
// margin keeps the final wakeup on the precise clock.
const preciseSpan = 2 * time.Millisecond

// sleeper sleeps the pacer until absolute times on the runner's clock. It
// calls clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) on an OS thread of
// its own whose timer slack is 1 ns. A Go timer instead rounds sleeps of less
// than a millisecond up to about 1 ms when the runtime's threads are idle,
// because the runtime then waits in epoll_wait, whose timeout is in ms.
type sleeper struct {
	r     *runner
	stop  <-chan struct{}
	timer *time.Timer
	// monoBase is CLOCK_MONOTONIC at the runner's base, in ns.
	monoBase int64
}

// newSleeper locks the calling goroutine to its thread and sets the
// thread's timer slack. The goroutine never unlocks the thread, so the Go
// runtime ends the thread, with its changed slack, when the goroutine
// returns.
func (r *runner) newSleeper(stop <-chan struct{}) (*sleeper, error) {
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0); err != nil {
		// The default slack of 50 us still beats a Go timer, so the pacer
		// goes on with it.
		r.cfg.Log.Warn().Err(err).Msg("setting the pacer thread's timer slack to 1 ns failed: " +
			"send lag may grow by up to 50 us")
	}
	base, err := monotonicBase(r.base)
	if err != nil {
		return nil, err
	}
	return &sleeper{r: r, stop: stop, timer: time.NewTimer(time.Hour), monoBase: base}, nil
}

// monotonicBase returns CLOCK_MONOTONIC in ns at base. Go's runtime reads
// the same clock through the vDSO on Linux, so time.Since(base) and
// CLOCK_MONOTONIC differ by a constant. The sample whose two time.Since
// reads lie closest together gives that constant.
func monotonicBase(base time.Time) (int64, error) {
	var offset int64
	bestSpan := int64(math.MaxInt64)
	for range 8 {
		var ts unix.Timespec
		before := int64(time.Since(base))
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			return 0, fmt.Errorf("read CLOCK_MONOTONIC: %w", err)
		}
		after := int64(time.Since(base))
		if after-before < bestSpan {
			bestSpan = after - before
			offset = ts.Nano() - (before+after)/2
		}
	}
	return offset, nil
}

// sleepUntil sleeps until runner time t and returns true. It returns false
// at once when stop is closed or the sleep failed. Only the coarse part of
// a long wait notices stop while it sleeps, so stop takes effect within
// preciseSpan.
func (s *sleeper) sleepUntil(t int64) bool {
	for {
		select {
		case <-s.stop:
			return false
		default:
		}
		wait := t - s.r.now()
		if wait <= 0 {
			return true
		}
		if wait <= int64(preciseSpan) {
			break
		}
		s.timer.Reset(time.Duration(wait - int64(preciseSpan)))
		select {
		case <-s.stop:
			return false
		case <-s.timer.C:
		}
	}
	deadline := unix.NsecToTimespec(s.monoBase + t)
	for {
		err := unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &deadline, nil)
		if err == nil {
			return true
		}
		// A signal (the Go runtime sends SIGURG to preempt) ends the
		// sleep early. The deadline is absolute, so sleeping again on it
		// is exact.
		if !errors.Is(err, unix.EINTR) {
			s.r.fail(fmt.Errorf("pacer clock_nanosleep: %w", err))
			return false
		}
	}
}

func (s *sleeper) close() { s.timer.Stop() }

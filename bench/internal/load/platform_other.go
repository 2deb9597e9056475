//go:build !linux

package load

import (
	"errors"
	"net"
	"time"
)

// rxOOBLen is zero because receive timestamps are read on Linux only.
const rxOOBLen = 0

// sleeper sleeps the pacer on a Go timer. Outside Linux the pacer has no
// precise clock, so sends can be up to about 1 ms late and SendLag shows it.
type sleeper struct {
	r     *runner
	stop  <-chan struct{}
	timer *time.Timer
}

func (r *runner) newSleeper(stop <-chan struct{}) (*sleeper, error) {
	return &sleeper{r: r, stop: stop, timer: time.NewTimer(time.Hour)}, nil
}

// sleepUntil sleeps until runner time t and returns true, or returns false
// when stop is closed.
func (s *sleeper) sleepUntil(t int64) bool {
	s.timer.Reset(time.Duration(max(t-s.r.now(), 0)))
	select {
	case <-s.stop:
		return false
	case <-s.timer.C:
		return true
	}
}

func (s *sleeper) close() { s.timer.Stop() }

func enableRxTimestamps(*net.UDPConn) error {
	return errors.ErrUnsupported
}

func parseRxTimestamp([]byte) (int64, bool) { return 0, false }

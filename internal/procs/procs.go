// Package procs sizes GOMAXPROCS for processes that run gnet event loops.
package procs

import (
	"os"
	"runtime"
)

// Raise adds spare Ps to GOMAXPROCS unless the GOMAXPROCS environment
// variable sets it, and returns the value in force.
//
// gnet's event loops wait in epoll_wait as a blocking system call on a
// locked OS thread, and each keeps its P until the runtime's monitor takes
// it back, which happens only after up to 10 ms when the process was idle.
// With GOMAXPROCS equal to 2 cores, other goroutines then queue behind the
// parked loops: measured on a 2-core machine, CoAP p99 at 1,000 requests/s
// through a gateway and two workers was 12.8 ms with the default and 1.1 to
// 1.6 ms with 8 Ps. Spare Ps cost nothing while they are idle.
func Raise() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	n := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(max(4*n, n+4))
	return runtime.GOMAXPROCS(0)
}

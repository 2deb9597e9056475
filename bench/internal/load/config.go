package load

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/shardgate/shardgate/bench/internal/hist"
	"github.com/shardgate/shardgate/bench/internal/result"
)

// Limits that keep every run bounded whatever the flags set.
const (
	maxSockets  = 1024
	maxInFlight = 1 << 16
	maxDuration = 10 * time.Minute
	maxPayload  = 1200 // fits one IPv6 minimum-MTU datagram with headers
	// maxPaceQuantum bounds -pace-quantum. The pacer sends in bursts up to
	// one quantum apart, so a longer quantum no longer offers a steady rate.
	maxPaceQuantum = time.Second
	// maxRatePerSecond bounds the derived MaxRequests when none is given.
	maxRatePerSecond = 2_000_000
)

// Check fills defaults and validates c, naming the flag to fix.
func (c *Config) Check() error {
	switch c.Mode {
	case "coap", "echo", "diameter":
	default:
		return fmt.Errorf("invalid -mode %q: want coap, echo or diameter", c.Mode)
	}
	if err := CheckLoopback(c.Target); err != nil {
		return err
	}
	if c.Sockets < 1 || c.Sockets > maxSockets {
		return fmt.Errorf("invalid -sockets %d: want 1 to %d", c.Sockets, maxSockets)
	}
	if c.InFlight < c.Sockets || c.InFlight > maxInFlight {
		return fmt.Errorf("invalid -inflight %d: want %d (one per socket) to %d",
			c.InFlight, c.Sockets, maxInFlight)
	}
	if c.Mode == "diameter" && c.InFlight/c.Sockets > 1<<16 {
		return fmt.Errorf("invalid -inflight %d: at most 65536 per connection", c.InFlight)
	}
	if c.Duration <= 0 || c.Duration+c.Warmup > maxDuration || c.Warmup < 0 {
		return fmt.Errorf("invalid -duration %v / -warmup %v: want a positive total under %v",
			c.Duration, c.Warmup, maxDuration)
	}
	if c.Rate < 0 || c.Rate > maxRatePerSecond {
		return fmt.Errorf("invalid -rate %v: want 0 (closed loop) to %d", c.Rate, maxRatePerSecond)
	}
	if c.PaceQuantum < 0 || c.PaceQuantum > maxPaceQuantum {
		return fmt.Errorf("invalid -pace-quantum %v: want 0 to %v", c.PaceQuantum, maxPaceQuantum)
	}
	if c.Payload < 16 || c.Payload > maxPayload {
		return fmt.Errorf("invalid -payload %d: want 16 to %d bytes", c.Payload, maxPayload)
	}
	if c.MaxRequests == 0 {
		c.MaxRequests = uint64((c.Duration + c.Warmup).Seconds() * maxRatePerSecond)
	}
	c.fillTimers()
	if c.Mode == "coap" {
		return c.CoAP.check()
	}
	if c.Mode == "diameter" {
		return c.Diameter.check()
	}
	return nil
}

func (c *Config) fillTimers() {
	if c.ACKTimeout <= 0 {
		c.ACKTimeout = 200 * time.Millisecond
	}
	if c.MaxRetransmit < 0 {
		c.MaxRetransmit = 0
	}
	if c.LossTimeout <= 0 {
		c.LossTimeout = time.Second
	}
	if c.TimerTick <= 0 {
		c.TimerTick = 10 * time.Millisecond
	}
}

// CheckLoopback rejects a target whose host is not a loopback address. A
// name must resolve only to loopback addresses.
func CheckLoopback(target string) error {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return fmt.Errorf("invalid target %q: want host:port: %w", target, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("invalid target %q: port %q is not 1-65535", target, port)
	}
	addrs := []string{host}
	if _, err := netip.ParseAddr(host); err != nil {
		if addrs, err = net.LookupHost(host); err != nil {
			return fmt.Errorf("resolve target %q: %w", target, err)
		}
	}
	for _, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil || !ip.Unmap().IsLoopback() {
			return fmt.Errorf("target %q resolves to %s, which is not a loopback address: "+
				"the bench only loads systems on this machine", target, a)
		}
	}
	return nil
}

func summarize(h *hist.Histogram) result.Latency {
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	return result.Latency{
		P50:  us(h.Quantile(0.50)),
		P99:  us(h.Quantile(0.99)),
		P999: us(h.Quantile(0.999)),
		Max:  us(h.Max()),
		Mean: us(h.Mean()),
	}
}

// readCPU returns user+system CPU seconds of each process, from fields 14
// and 15 of /proc/PID/stat (proc(5)), which count clock ticks of 1/100 s on
// Linux (USER_HZ).
func readCPU(pids map[string]int) (map[string]float64, error) {
	out := make(map[string]float64, len(pids))
	for name, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil, fmt.Errorf("read CPU time of %s (pid %d): %w", name, pid, err)
		}
		// The command name in field 2 may hold spaces; fields after it are
		// counted from the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		fields := strings.Fields(string(b[i+1:]))
		if i < 0 || len(fields) < 13 {
			return nil, fmt.Errorf("parse /proc/%d/stat of %s: too few fields", pid, name)
		}
		utime, err1 := strconv.ParseUint(fields[11], 10, 64)
		stime, err2 := strconv.ParseUint(fields[12], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("parse /proc/%d/stat of %s: bad utime %q or stime %q",
				pid, name, fields[11], fields[12])
		}
		out[name] = float64(utime+stime) / 100
	}
	return out, nil
}

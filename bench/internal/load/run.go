// Package load generates CoAP, UDP echo and Diameter request load against one
// loopback target and measures throughput, latency, loss and CPU.
//
// Each socket or TCP connection is a flow with a fixed number of slots. In
// closed loop every slot holds one outstanding request and a response starts
// the next at once. In open loop a pacer sends at a fixed rate into free
// slots. Latency then counts from each request's intended send time, so
// queueing in the system under test (or in the generator) shows up as
// latency instead of lowering the offered load.
package load

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/bench/internal/result"
)

// Config is one run. Validate it with Check before Run.
type Config struct {
	Mode     string // coap, echo or diameter
	Target   string // host:port on a loopback address
	Sockets  int    // UDP sockets or TCP connections
	InFlight int    // closed loop: outstanding requests over all sockets
	// Rate is the open-loop offered rate in requests per second; 0 selects
	// closed loop. In open loop InFlight caps the outstanding requests.
	Rate     float64
	Duration time.Duration // measured interval
	Warmup   time.Duration // load before the measured interval, not recorded
	// MaxRequests bounds first transmissions over the whole run; 0 derives a
	// bound of 2M requests per second of run time.
	MaxRequests uint64
	Payload     int // echo datagram size, CoAP POST payload size

	CoAP     CoAPConfig
	Diameter DiameterConfig

	// LossTimeout is how long an unanswered request waits before it counts
	// lost. For CoAP CON the first retransmission comes after ACKTimeout,
	// randomised up to 1.5 times and doubled for each retransmission
	// (RFC 7252 §4.8, with the 2 s default scaled down for loopback).
	ACKTimeout    time.Duration
	MaxRetransmit int
	LossTimeout   time.Duration
	TimerTick     time.Duration

	// PIDs names the processes whose CPU time is measured.
	PIDs     map[string]int
	Progress bool
	Log      zerolog.Logger
}

// runner holds the state shared by all flows of one run.
type runner struct {
	cfg        Config
	base       time.Time
	startNs    int64 // measured window start, ns since base
	endNs      int64 // measured window end and end of sending
	flows      []*flow
	maxPerFlow uint64

	mu  sync.Mutex
	err error
}

func (r *runner) now() int64 { return int64(time.Since(r.base)) }

func (r *runner) inWindow(t int64) bool { return t >= r.startNs && t < r.endNs }

func (r *runner) sending(t int64) bool { return t < r.endNs }

// interval returns the open-loop gap between two requests of one flow, in ns.
func (r *runner) interval() int64 {
	return max(int64(float64(time.Second)*float64(len(r.flows))/r.cfg.Rate), 1)
}

func (r *runner) lossAfter() int64 { return int64(r.cfg.LossTimeout) }

// firstTimeout draws the initial retransmission timeout between ACKTimeout
// and 1.5 times it (RFC 7252 §4.8 ACK_RANDOM_FACTOR).
func (r *runner) firstTimeout(rng *rand.Rand) int64 {
	if r.cfg.Mode != "coap" || !r.cfg.CoAP.Confirmable {
		return int64(r.cfg.LossTimeout)
	}
	a := int64(r.cfg.ACKTimeout)
	return a + rng.Int64N(a/2+1)
}

func (r *runner) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

func (r *runner) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Run executes one run and returns its result. It stops at the end of the
// measured interval, when ctx ends, or at MaxRequests, whichever comes first.
func Run(ctx context.Context, cfg Config) (*result.Run, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, base: time.Now()}
	r.startNs = int64(cfg.Warmup)
	r.endNs = r.startNs + int64(cfg.Duration)
	flows, closeAll, err := r.dial()
	if err != nil {
		return nil, err
	}
	r.flows = flows
	defer closeAll()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, f := range flows {
		if err := f.start(); err != nil {
			close(stop)
			closeAll()
			wg.Wait()
			return nil, fmt.Errorf("start flow %d to %s: %w", f.id, cfg.Target, err)
		}
	}
	wg.Go(func() { r.timerLoop(stop) })
	if cfg.Rate > 0 {
		wg.Go(func() { r.pacerLoop(stop) })
	}
	cpu, err := r.measure(ctx)
	close(stop)
	closeAll()
	wg.Wait()
	if err == nil {
		err = r.failed()
	}
	if err != nil {
		return nil, err
	}
	return r.result(cpu), nil
}

// measure waits out warmup and the measured interval, reading CPU times at
// both edges and printing a progress line each second.
func (r *runner) measure(ctx context.Context) (map[string]float64, error) {
	pids := map[string]int{"loadgen": os.Getpid()}
	for k, v := range r.cfg.PIDs {
		pids[k] = v
	}
	if err := r.sleepUntil(ctx, r.startNs); err != nil {
		return nil, err
	}
	before, err := readCPU(pids)
	if err != nil {
		return nil, err
	}

	var last uint64
	for t := r.startNs + int64(time.Second); ; t += int64(time.Second) {
		t = min(t, r.endNs)
		if err := r.sleepUntil(ctx, t); err != nil {
			return nil, err
		}
		if t >= r.endNs {
			break
		}
		done := r.completed()
		if r.cfg.Progress {
			r.cfg.Log.Info().Str("target", r.cfg.Target).Float64("elapsed_s", float64(t-r.startNs)/1e9).
				Uint64("rps", done-last).Msg("progress")
		}
		last = done
		if err := r.failed(); err != nil {
			return nil, err
		}
	}

	after, err := readCPU(pids)
	if err != nil {
		return nil, err
	}
	cpu := map[string]float64{}
	for k := range pids {
		cpu[k] = after[k] - before[k]
	}
	return cpu, nil
}

func (r *runner) sleepUntil(ctx context.Context, t int64) error {
	d := time.Duration(t - r.now())
	if d <= 0 {
		return nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("run against %s interrupted: %w", r.cfg.Target, ctx.Err())
	case <-tm.C:
		return nil
	}
}

func (r *runner) completed() uint64 {
	var n uint64
	for _, f := range r.flows {
		n += f.done.Load()
	}
	return n
}

func (r *runner) result(cpu map[string]float64) *result.Run {
	total := stats{outcomes: map[string]uint64{}}
	for _, f := range r.flows {
		f.mu.Lock()
		total.merge(&f.st)
		f.mu.Unlock()
	}
	secs := r.cfg.Duration.Seconds()
	return &result.Run{
		Mode:        r.cfg.Mode,
		Target:      r.cfg.Target,
		Offered:     r.cfg.Rate,
		InFlight:    r.cfg.InFlight,
		Sockets:     r.cfg.Sockets,
		Seconds:     secs,
		Sent:        total.sent,
		Completed:   total.completed,
		Lost:        total.lost,
		Retransmits: total.retransmits,
		Outcomes:    total.outcomes,
		Throughput:  float64(total.completed) / secs,
		Latency:     summarize(&total.latency),
		Service:     summarize(&total.service),
		SendLag:     summarize(&total.lag),
		CPU:         cpu,
		Command:     strings.Join(os.Args, " "),
	}
}

// dial opens the flows of the configured mode.
func (r *runner) dial() ([]*flow, func(), error) {
	r.maxPerFlow = r.cfg.MaxRequests/uint64(r.cfg.Sockets) + 1
	switch r.cfg.Mode {
	case "diameter":
		return r.dialDiameter()
	case "echo":
		return r.dialUDP(func() proto { return &echoProto{size: r.cfg.Payload} })
	}
	t, err := newCoAPTemplates(r.cfg)
	if err != nil {
		return nil, nil, err
	}
	return r.dialUDP(func() proto { return t.newProto() })
}

// timerLoop runs every flow's retransmission and loss timers until stop
// closes. One goroutine serves all flows to keep wakeups few.
func (r *runner) timerLoop(stop <-chan struct{}) {
	t := time.NewTicker(r.cfg.TimerTick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := r.now()
		for _, f := range r.flows {
			if err := f.tick(now); err != nil {
				r.fail(err)
			}
		}
	}
}

// pacerLoop sends every flow's open-loop requests until the sending phase
// ends. One goroutine serves all flows and sleeps until the earliest
// intended send time, so each wakeup sends what is due on every flow.
func (r *runner) pacerLoop(stop <-chan struct{}) {
	interval := r.interval()
	tm := time.NewTimer(time.Hour)
	defer tm.Stop()
	for {
		now := r.now()
		if !r.sending(now) {
			return
		}
		next := int64(math.MaxInt64)
		for _, f := range r.flows {
			if err := f.pace(now, interval); err != nil {
				r.fail(err)
				return
			}
			next = min(next, f.nextSend())
		}
		// A flow with no free slot keeps a past next time; poll it again
		// after a short wait instead of spinning.
		// NOTE: Go timers can fire hundreds of microseconds late on a busy
		// machine. That lateness counts as latency, and SendLag reports it.
		tm.Reset(time.Duration(max(next-r.now(), 20_000)))
		select {
		case <-stop:
			return
		case <-tm.C:
		}
	}
}

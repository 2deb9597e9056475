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
	"sync/atomic"
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
	Rate float64
	// PaceQuantum is the open-loop pacer's minimum sleep. After sending
	// what is due, the pacer sleeps until the next intended send time or
	// for PaceQuantum, whichever is later, so at rates above one request
	// per PaceQuantum one wakeup sends several requests. Those requests go
	// out up to PaceQuantum late, which SendLag and Latency show. Values
	// under the pacer's 20 us minimum poll, 0 included, act as 20 us.
	PaceQuantum time.Duration
	Duration    time.Duration // measured interval
	Warmup      time.Duration // load before the measured interval, not recorded
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
	// kernelRx is set when every UDP socket has SO_TIMESTAMPNS on, so that
	// responses are stamped with the kernel's receive time.
	kernelRx bool
	// wallOffset is CLOCK_REALTIME minus the runner's clock, in ns. It
	// converts the kernel's receive timestamps, which are wall-clock
	// times. The timer loop refreshes it so that it follows a slew of the
	// wall clock during a run.
	// NOTE: a step of the wall clock misplaces the datagrams stamped
	// within one timer tick of it.
	wallOffset atomic.Int64
	// pacerWakes counts the open-loop pacer's passes over the flows: its
	// wakeups and its first pass.
	pacerWakes atomic.Uint64

	mu  sync.Mutex
	err error
}

// now returns ns since base on CLOCK_MONOTONIC, which Go's runtime reads
// through the vDSO on Linux.
func (r *runner) now() int64 { return int64(time.Since(r.base)) }

// syncWallClock measures wallOffset from one time.Now reading, which takes
// the wall clock and the monotonic clock together.
func (r *runner) syncWallClock() {
	t := time.Now()
	r.wallOffset.Store(t.UnixNano() - int64(t.Sub(r.base)))
}

// fromWallClock converts a CLOCK_REALTIME time in ns to ns since base.
func (r *runner) fromWallClock(ns int64) int64 { return ns - r.wallOffset.Load() }

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
	return newRunner(cfg).run(ctx)
}

// newRunner returns a runner for cfg, which Check has accepted. The run's
// clock starts now.
func newRunner(cfg Config) *runner {
	r := &runner{cfg: cfg, base: time.Now()}
	r.syncWallClock()
	r.startNs = int64(cfg.Warmup)
	r.endNs = r.startNs + int64(cfg.Duration)
	return r
}

// run executes the run and returns its result.
func (r *runner) run(ctx context.Context) (*result.Run, error) {
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
			return nil, fmt.Errorf("start flow %d to %s: %w", f.id, r.cfg.Target, err)
		}
	}
	wg.Go(func() { r.timerLoop(stop) })
	if r.cfg.Rate > 0 {
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
		Mode:          r.cfg.Mode,
		Target:        r.cfg.Target,
		Offered:       r.cfg.Rate,
		InFlight:      r.cfg.InFlight,
		Sockets:       r.cfg.Sockets,
		Seconds:       secs,
		Sent:          total.sent,
		Completed:     total.completed,
		Lost:          total.lost,
		Retransmits:   total.retransmits,
		Outcomes:      total.outcomes,
		Throughput:    float64(total.completed) / secs,
		Latency:       summarize(&total.latency),
		Service:       summarize(&total.service),
		ReadLatency:   summarize(&total.readLatency),
		RxClock:       r.rxClock(&total),
		NoRxTimestamp: total.noRxStamp,
		SendLag:       summarize(&total.lag),
		CPU:           cpu,
		Command:       strings.Join(os.Args, " "),
	}
}

// rxClock names what stamped the responses that Latency and Service end
// at: "kernel", "user" (the reader goroutine's read time), or "mixed" when
// some datagrams on kernel-stamped sockets came without a timestamp.
func (r *runner) rxClock(total *stats) string {
	switch {
	case !r.kernelRx:
		return "user"
	case total.noRxStamp > 0:
		return "mixed"
	}
	return "kernel"
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
		r.syncWallClock()
		now := r.now()
		for _, f := range r.flows {
			if err := f.tick(now); err != nil {
				r.fail(err)
			}
		}
	}
}

// minPoll is the pacer's shortest sleep. A flow with no free slot keeps a
// past next send time, and the pacer polls it again after minPoll instead of
// spinning.
const minPoll = 20 * time.Microsecond

// pacerLoop sends every flow's open-loop requests until the sending phase
// ends. One goroutine serves all flows and sleeps until the earliest
// intended send time, but at least max(PaceQuantum, minPoll), so each
// wakeup sends what is due on every flow. On Linux the sleep is as late as
// the kernel's wakeup of the thread and no later (see sleeper), so SendLag
// is free of Go timers' rounding to 1 ms.
func (r *runner) pacerLoop(stop <-chan struct{}) {
	sl, err := r.newSleeper(stop)
	if err != nil {
		r.fail(err)
		return
	}
	defer sl.close()
	interval := r.interval()
	poll := int64(max(r.cfg.PaceQuantum, minPoll))
	for {
		r.pacerWakes.Add(1)
		now := r.now()
		if !r.sending(now) {
			return
		}
		next := int64(math.MaxInt64)
		for _, f := range r.flows {
			fnext, err := f.pace(now, interval)
			if err != nil {
				r.fail(err)
				return
			}
			next = min(next, fnext)
		}
		if !sl.sleepUntil(max(next, r.now()+poll)) {
			return
		}
	}
}

// Command loadgen drives CoAP, UDP echo or Diameter load at one loopback
// target, closed loop (N requests in flight) or open loop (a fixed offered
// rate), and writes one JSON result per run for the bench report.
//
//	loadgen -mode coap -target 127.0.0.1:5683 -inflight 256 -sockets 16 -duration 10s
//	loadgen -mode coap -target 127.0.0.1:5683 -rate 50000 -duration 10s
//	loadgen -mode diameter -target 127.0.0.1:3868 -diameter-app cc -inflight 64
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/bench/internal/load"
	"github.com/shardgate/shardgate/bench/internal/result"
)

func main() {
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly, NoColor: true}).
		With().Timestamp().Logger()
	cfg, out, meta, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	cfg.Log = log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	res, err := load.Run(ctx, cfg)
	if err != nil {
		log.Error().Err(err).Str("target", cfg.Target).Msg("run failed")
		os.Exit(1)
	}
	res.Scenario, res.Rep = meta.scenario, meta.rep
	fmt.Printf("%s rep %d: %.0f req/s p50 %.0fus p99 %.0fus p99.9 %.0fus max %.0fus "+
		"(receipt stamped by %s clock; p99 at user-space read %.0fus, send lag p99 %.0fus) "+
		"lost %d retx %d outcomes %v cpu %v\n",
		res.Scenario, res.Rep, res.Throughput, res.Latency.P50, res.Latency.P99, res.Latency.P999,
		res.Latency.Max, res.RxClock, res.ReadLatency.P99, res.SendLag.P99,
		res.Lost, res.Retransmits, res.Outcomes, res.CPU)
	if out != "" {
		if err := result.Write(out, res); err != nil {
			log.Error().Err(err).Str("path", out).Msg("write result")
			os.Exit(1)
		}
	}
}

type runMeta struct {
	scenario string
	rep      int
}

func parseFlags(args []string) (load.Config, string, runMeta, error) {
	var c load.Config
	var meta runMeta
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.StringVar(&c.Mode, "mode", "coap", "load to generate: coap, echo or diameter")
	fs.StringVar(&c.Target, "target", "127.0.0.1:5683", "system under test, host:port on a loopback address")
	fs.IntVar(&c.Sockets, "sockets", 16, "UDP sockets or Diameter TCP connections")
	fs.IntVar(&c.InFlight, "inflight", 256, "requests outstanding over all sockets (open loop: the cap)")
	fs.Float64Var(&c.Rate, "rate", 0, "open-loop offered rate in requests per second; 0 runs closed loop")
	fs.DurationVar(&c.PaceQuantum, "pace-quantum", 100*time.Microsecond,
		"open loop: the pacer's minimum sleep. Requests due within one quantum are sent together, "+
			"up to this much late, which send lag and latency count. A longer quantum wakes loadgen "+
			"less often and leaves more CPU to the system under test. 0 keeps a 20us minimum")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "measured interval")
	fs.DurationVar(&c.Warmup, "warmup", time.Second, "load before the measured interval, not recorded")
	fs.Uint64Var(&c.MaxRequests, "max-requests", 0, "stop after this many requests; 0 allows 2M per second of run")
	fs.IntVar(&c.Payload, "payload", 100, "echo datagram size and CoAP POST payload size, bytes")
	fs.DurationVar(&c.ACKTimeout, "ack-timeout", 200*time.Millisecond,
		"CoAP CON first retransmission timeout (RFC 7252 ACK_TIMEOUT is 2 s; scaled down for loopback)")
	fs.IntVar(&c.MaxRetransmit, "max-retransmit", 4, "CoAP CON retransmissions before a request counts lost")
	fs.DurationVar(&c.LossTimeout, "loss-timeout", time.Second, "time after which an unanswered request counts lost")

	con := fs.Bool("con", true, "CoAP: send CON requests; -con=false sends NON")
	fs.StringVar(&c.CoAP.Method, "coap-method", "mix", "CoAP: get, post or mix (alternating)")
	fs.StringVar(&c.CoAP.GetPath, "get-path", "/d/{id}/state", "CoAP GET Uri-Path; {id} is the device key")
	fs.StringVar(&c.CoAP.PostPath, "post-path", "/d/{id}/telemetry", "CoAP POST Uri-Path; {id} is the device key")
	fs.IntVar(&c.CoAP.Keys, "keys", 1024, "CoAP: number of device keys, picked uniformly at random")

	fs.StringVar(&c.Diameter.App, "diameter-app", "cc", "Diameter: cc (CCR-I/U/T sessions), test (test_app) or mix")
	fs.IntVar(&c.Diameter.Updates, "cc-updates", 3, "Diameter: CCR-U requests per Credit-Control session")
	fs.StringVar(&c.Diameter.OriginHost, "origin-host", "loadgen.bench.local", "Diameter: Origin-Host")
	fs.StringVar(&c.Diameter.OriginRealm, "origin-realm", "bench.local", "Diameter: Origin-Realm")
	fs.StringVar(&c.Diameter.DestRealm, "dest-realm", "shardgate.local", "Diameter: Destination-Realm")

	pids := fs.String("pids", "", "processes to measure CPU of, as name=pid[,name=pid...]")
	progress := fs.Bool("progress", true, "log a progress line each second on runs over 3 s")
	out := fs.String("out", "", "write the JSON result to this file")
	fs.StringVar(&meta.scenario, "scenario", "", "scenario name recorded in the result")
	fs.IntVar(&meta.rep, "rep", 0, "repetition number recorded in the result")
	if err := fs.Parse(args); err != nil {
		return c, "", meta, err
	}
	if fs.NArg() > 0 {
		return c, "", meta, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.CoAP.Confirmable = *con
	c.Progress = *progress && c.Duration > 3*time.Second
	var err error
	if c.PIDs, err = parsePIDs(*pids); err != nil {
		return c, "", meta, err
	}
	if meta.scenario == "" {
		meta.scenario = c.Mode
	}
	return c, *out, meta, c.Check()
}

func parsePIDs(s string) (map[string]int, error) {
	m := map[string]int{}
	if s == "" {
		return m, nil
	}
	for _, kv := range strings.Split(s, ",") {
		name, v, ok := strings.Cut(kv, "=")
		pid, err := strconv.Atoi(v)
		if !ok || name == "" || err != nil || pid < 1 {
			return nil, fmt.Errorf("invalid -pids entry %q: want name=pid, for example gateway=1234", kv)
		}
		m[name] = pid
	}
	return m, nil
}

package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"
)

// scenarioNotes describes what each scenario measures.
var scenarioNotes = map[string]string{
	"echo-floor-open-ref":     "the echo floor in open loop at the offered rate of shardgate-coap-open-0.5, the best any system could do here",
	"echo-floor":              "Go UDP echo with recvmmsg/sendmmsg (bench/cmd/udpecho): the floor of UDP on this machine",
	"nginx-udp":               "nginx stream UDP proxy, `hash $remote_addr:$remote_port consistent`, 2 udpecho backends",
	"libcoap":                 "libcoap coap-server-notls, CON GET /time",
	"shardgate-coap":          "gateway + 2 workers, CON GET /d/{id}/state and POST /d/{id}/telemetry over 1024 keys",
	"shardgate-coap-non":      "as shardgate-coap with NON requests",
	"shardgate-diameter-cc":   "gateway + 2 workers, CCR-I, 3 CCR-U, CCR-T sessions",
	"shardgate-diameter-test": "gateway + 2 workers, test_app Test-Requests",
	"freediameter-loadgen":    "freeDiameter 1.2.1 test_app server, Test-Requests from loadgen over 1 connection",
	"freediameter-bench":      "freeDiameter test_app server driven by a second freeDiameter in test_app benchmark mode",
}

func markdown(sums map[string]*summary, command string, quick bool) string {
	var b strings.Builder
	b.WriteString("# shardgate benchmark results\n\n")
	if note != "" {
		fmt.Fprintf(&b, "**Note:** %s\n\n", note)
	}
	if quick {
		b.WriteString("**Quick run: short runs, one repetition; use it as a smoke test, not a measurement.**\n\n")
	}
	writeMachine(&b, command)
	writeTargets(&b, sums)
	writeTable(&b, sums)
	writeSweep(&b, sums)
	writeMethod(&b, sums)
	return b.String()
}

func writeMachine(b *strings.Builder, command string) {
	fmt.Fprintf(b, "Report written %s from the results of `%s`.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), command)
	fmt.Fprintf(b, "- CPU: %s, %d logical cores (load generator and systems under test share them)\n",
		cpuModel(), runtime.NumCPU())
	fmt.Fprintf(b, "- Kernel: %s\n", firstLine("uname", "-sr"))
	fmt.Fprintf(b, "- Go: %s\n", firstLine("go", "version"))
	if f := strings.Fields(loadBefore); len(f) >= 3 {
		fmt.Fprintf(b, "- Load average (1, 5, 15 min) before the run: %s\n", strings.Join(f[:3], " "))
	}
	fmt.Fprintf(b, "- Load average when the report was written: %s (a load well above the bench's own processes "+
		"means other work shared the cores and the numbers are low)\n\n", loadAvg())
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unknown (" + name + " failed)"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// ratio returns a/b of the median throughputs, or "" when either is missing.
func ratio(sums map[string]*summary, a, b string) (float64, bool) {
	x, y := sums[a], sums[b]
	if x == nil || y == nil || y.rps.med == 0 {
		return 0, false
	}
	return x.rps.med / y.rps.med, true
}

func writeTargets(b *strings.Builder, sums map[string]*summary) {
	b.WriteString("## Targets\n\n| target | measured | met |\n|---|---|---|\n")
	check := func(name, a, c string, want float64) {
		r, ok := ratio(sums, a, c)
		if !ok {
			fmt.Fprintf(b, "| %s | not measured (%s or %s missing) | - |\n", name, a, c)
			return
		}
		fmt.Fprintf(b, "| %s | %.2fx | %s |\n", name, r, yesNo(r >= want))
	}
	check("CoAP through shardgate >= 1.0x nginx UDP proxy", "shardgate-coap", "nginx-udp", 1)
	check("CoAP through shardgate >= 1.0x libcoap", "shardgate-coap", "libcoap", 1)
	check("Diameter CC through shardgate >= 2x freeDiameter-to-freeDiameter",
		"shardgate-diameter-cc", "freediameter-bench", 2)
	check("Diameter test_app through shardgate >= 2x freeDiameter-to-freeDiameter",
		"shardgate-diameter-test", "freediameter-bench", 2)
	if h := sums["shardgate-coap-open-0.5"]; h != nil {
		fmt.Fprintf(b, "| CoAP p99 <= 1 ms at half of shardgate's closed-loop rate (%.0f req/s offered) | %.0f us | %s |\n",
			h.offered, h.p99.med, yesNo(h.p99.med <= 1000))
	} else {
		b.WriteString("| CoAP p99 <= 1 ms at half of shardgate's max rate | not measured | - |\n")
	}
	if e := sums["echo-floor-open-ref"]; e != nil {
		fmt.Fprintf(b, "| (reference, not a target) UDP echo floor p99 at the same offered rate, %.0f req/s | %.0f us | - |\n",
			e.offered, e.p99.med)
	}
	b.WriteString("\nOther ratios of median throughput:\n\n")
	for _, pair := range [][2]string{
		{"shardgate-coap", "echo-floor"},
		{"nginx-udp", "echo-floor"},
		{"shardgate-coap-non", "libcoap"},
		{"shardgate-diameter-test", "freediameter-loadgen"},
		{"freediameter-loadgen", "freediameter-bench"},
	} {
		if r, ok := ratio(sums, pair[0], pair[1]); ok {
			fmt.Fprintf(b, "- %s / %s: %.2fx\n", pair[0], pair[1], r)
		}
	}
	b.WriteString("\n")
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func writeTable(b *strings.Builder, sums map[string]*summary) {
	b.WriteString("## Closed loop\n\nMedian (min-max) over the repetitions. Latency in microseconds, " +
		"from send to the matched response's receipt (the kernel's receive timestamp for UDP, " +
		"the read for Diameter). CPU is the CPU time of the processes under test " +
		"(not the load generator) per 1000 requests.\n\n")
	b.WriteString("| scenario | runs | req/s | p50 us | p99 us | p99.9 us | max us | lost | retransmits | CPU ms/1k req | outcomes |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range sortedNames(sums) {
		s := sums[n]
		if s.offered > 0 {
			continue
		}
		var lost, retx uint64
		for _, r := range s.runs {
			lost += r.Lost
			retx += r.Retransmits
		}
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s | %d | %d | %s | %s |\n", n, len(s.runs),
			fmtRange(s.rps, 1, "%.0f"), fmtRange(s.p50, 1, "%.0f"), fmtRange(s.p99, 1, "%.0f"),
			fmtRange(s.p999, 1, "%.0f"), fmtRange(s.maxLat, 1, "%.0f"), lost, retx,
			fmtRange(s.cpuPerK, 1, "%.1f"), outcomes(s.runs))
	}
	b.WriteString("\nfreediameter-bench latencies come from test_app's own report, which gives only " +
		"the mean (in the p50 column's place: see the JSON) and the slowest answer.\n\n")
}

func writeSweep(b *strings.Builder, sums map[string]*summary) {
	b.WriteString("## Open loop\n\nA fixed offered rate at fractions of each scenario's median " +
		"closed-loop rate. Latency runs from each request's intended send time to the kernel's " +
		"receive timestamp on the generator's socket. Queueing therefore shows, but the " +
		"generator's wakeup to read the response is excluded. The p99 at user-space read " +
		"column includes that wakeup, so its excess over p99 is the generator's own delay. " +
		"Send lag is how late the generator itself sent: when it is close to the latency, " +
		"the generator, not shardgate, set the number.\n\n")
	b.WriteString("| scenario | offered req/s | achieved req/s | p50 us | p99 us | p99.9 us | " +
		"p99 from actual send us | p99 at user-space read us | send lag p99 us | lost |\n" +
		"|---|---|---|---|---|---|---|---|---|---|\n")
	any := false
	userClock := map[string]bool{}
	for _, n := range sortedNames(sums) {
		s := sums[n]
		if s.offered == 0 {
			continue
		}
		any = true
		var lag, service, read []float64
		var lost uint64
		for _, r := range s.runs {
			lag = append(lag, r.SendLag.P99)
			service = append(service, r.Service.P99)
			read = append(read, r.ReadLatency.P99)
			lost += r.Lost
			if r.RxClock != "kernel" {
				userClock[baseName(n)] = true
			}
		}
		fmt.Fprintf(b, "| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %d |\n", baseName(n), s.offered,
			fmtRange(s.rps, 1, "%.0f"), fmtRange(s.p50, 1, "%.0f"), fmtRange(s.p99, 1, "%.0f"),
			fmtRange(s.p999, 1, "%.0f"), orNA(newStat(service)), orNA(newStat(read)),
			fmtRange(newStat(lag), 1, "%.0f"), lost)
	}
	if !any {
		b.WriteString("| not measured | | | | | | | | | |\n")
	}
	writeUserClock(b, userClock)
	b.WriteString("\n![latency against offered load](latency.png)\n\n")
}

// writeUserClock names the open-loop scenarios with runs whose receipt was
// not stamped by the kernel, because their latency includes the wakeup.
func writeUserClock(b *strings.Builder, names map[string]bool) {
	if len(names) == 0 {
		return
	}
	var list []string
	for n := range names {
		list = append(list, n)
	}
	sort.Strings(list)
	fmt.Fprintf(b, "\nIn %s, some or all runs stamped receipt at the user-space read "+
		"(Diameter over TCP, a socket without SO_TIMESTAMPNS, or a result written before loadgen "+
		"read kernel timestamps), so their latency includes the generator's wakeup.\n",
		strings.Join(list, ", "))
}

// orNA formats a stat, or "n/a" for results written before loadgen
// recorded it.
func orNA(s stat) string {
	if s.hi == 0 {
		return "n/a"
	}
	return fmtRange(s, 1, "%.0f")
}

func writeMethod(b *strings.Builder, sums map[string]*summary) {
	b.WriteString("## Method\n\n")
	for _, n := range sortedNames(sums) {
		if note, ok := scenarioNotes[n]; ok {
			fmt.Fprintf(b, "- **%s**: %s.\n", n, note)
		}
	}
	b.WriteString("\nOne command line per scenario (the first repetition):\n\n```\n")
	for _, n := range sortedNames(sums) {
		fmt.Fprintf(b, "%s\n", sums[n].runs[0].Command)
	}
	b.WriteString("```\n\n")
	b.WriteString("All systems run on 127.0.0.1 on the same cores as the load generator, " +
		"so every number includes the generator's share of the CPU. The CoAP and UDP " +
		"loads use 16 sockets; each socket is one client endpoint whose Message IDs wrap " +
		"after 65536 requests, much sooner than RFC 7252's 247 s EXCHANGE_LIFETIME, so a " +
		"server that deduplicates by Message ID may answer from its cache: such answers " +
		"carry the wrong token and are counted as `stale`, never as completed.\n")
}

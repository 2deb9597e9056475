// Command report turns the JSON results of bench/run.sh into RESULTS.md and
// latency.png: medians with min-max over repetitions, ratios between
// scenarios, the targets, and an open-loop latency sweep.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/shardgate/shardgate/bench/internal/result"
)

func main() {
	dir := flag.String("results", "", "directory of loadgen JSON results")
	out := flag.String("out", "bench", "directory to write RESULTS.md and latency.png into")
	command := flag.String("command", "bash bench/run.sh", "bench command line, recorded in the report")
	quick := flag.Bool("quick", false, "the results come from a --quick run")
	work := flag.String("work", "", "work directory of the run, shortened to $WORK in command lines")
	flag.StringVar(&loadBefore, "load-before", "", "contents of /proc/loadavg when the run started")
	flag.StringVar(&note, "note", "", "a remark printed under the title, such as where the results came from")
	flag.Parse()
	if err := run(*dir, *out, *command, *work, *quick); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

// Flags that only add text to the report.
var loadBefore, note string

func run(dir, out, command, work string, quick bool) error {
	if dir == "" {
		return fmt.Errorf("missing -results: set it to the directory of JSON results")
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no results in %s: run bench/run.sh first", dir)
	}
	groups := map[string][]*result.Run{}
	for _, f := range files {
		r, err := result.Read(f)
		if err != nil {
			return err
		}
		if work != "" {
			r.Command = strings.ReplaceAll(r.Command, work, "$WORK")
		}
		groups[r.Scenario] = append(groups[r.Scenario], r)
	}
	sums := summarizeAll(groups)
	md := markdown(sums, command, quick)
	if err := os.WriteFile(filepath.Join(out, "RESULTS.md"), []byte(md), 0o644); err != nil {
		return fmt.Errorf("write RESULTS.md: %w", err)
	}
	if err := writeChart(filepath.Join(out, "latency.png"), sums); err != nil {
		return err
	}
	return nil
}

// summary is one scenario over its repetitions.
type summary struct {
	name    string
	runs    []*result.Run
	rps     stat // throughput, requests per second
	p50     stat // latency percentiles in microseconds
	p99     stat
	p999    stat
	maxLat  stat
	cpuPerK stat // CPU milliseconds of the system under test per 1000 requests
	offered float64
}

// stat is the median and range of one measure over repetitions.
type stat struct{ med, lo, hi float64 }

func newStat(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{med: med, lo: s[0], hi: s[len(s)-1]}
}

func summarizeAll(groups map[string][]*result.Run) map[string]*summary {
	out := map[string]*summary{}
	for name, runs := range groups {
		s := &summary{name: name, runs: runs, offered: runs[0].Offered}
		var rps, p50, p99, p999, mx, cpu []float64
		for _, r := range runs {
			rps = append(rps, r.Throughput)
			p50 = append(p50, r.Latency.P50)
			p99 = append(p99, r.Latency.P99)
			p999 = append(p999, r.Latency.P999)
			mx = append(mx, r.Latency.Max)
			if n := r.Throughput * r.Seconds; n > 0 {
				cpu = append(cpu, sutCPU(r)*1e3/(n/1e3))
			}
		}
		s.rps, s.p50, s.p99, s.p999 = newStat(rps), newStat(p50), newStat(p99), newStat(p999)
		s.maxLat, s.cpuPerK = newStat(mx), newStat(cpu)
		out[name] = s
	}
	return out
}

// sutCPU sums the CPU seconds of every measured process except the load
// generators (loadgen and freeDiameter's benchmark client).
func sutCPU(r *result.Run) float64 {
	var t float64
	for k, v := range r.CPU {
		if k != "loadgen" && k != "fd-client" {
			t += v
		}
	}
	return t
}

// sortedNames orders scenarios: closed loop first by name, then the
// open-loop sweeps by scenario and offered rate.
func sortedNames(sums map[string]*summary) []string {
	var names []string
	for n := range sums {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := sums[names[i]], sums[names[j]]
		if (a.offered > 0) != (b.offered > 0) {
			return a.offered == 0
		}
		if ba, bb := baseName(names[i]), baseName(names[j]); ba != bb {
			return ba < bb
		}
		if a.offered != b.offered {
			return a.offered < b.offered
		}
		return names[i] < names[j]
	})
	return names
}

func fmtRange(s stat, scale float64, format string) string {
	f := func(v float64) string { return fmt.Sprintf(format, v/scale) }
	return fmt.Sprintf("%s (%s-%s)", f(s.med), f(s.lo), f(s.hi))
}

func outcomes(runs []*result.Run) string {
	total := map[string]uint64{}
	for _, r := range runs {
		for k, v := range r.Outcomes {
			total[k] += v
		}
	}
	var parts []string
	for k, v := range total {
		parts = append(parts, fmt.Sprintf("%s:%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

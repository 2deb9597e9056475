// Package peers drives independent Diameter implementations against a
// shardgate gateway for interop tests: freeDiameter 1.2.1 with its test_app
// extension, and a Credit-Control client on Erlang/OTP diameter.
//
// Both need a work directory prepared by setup.sh; tests find it in
// SHARDGATE_PEERS_WORK and skip when it or the programs are missing.
package peers

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"golang.org/x/sys/unix"
)

//go:embed fd/*.tmpl
var templates embed.FS

// WorkEnv is the environment variable naming the directory setup.sh prepared.
const WorkEnv = "SHARDGATE_PEERS_WORK"

// Work returns the prepared work directory, or an error saying how to make one.
func Work() (string, error) {
	dir := os.Getenv(WorkEnv)
	if dir == "" {
		return "", fmt.Errorf("%s is not set: run test/peers/diameter/setup.sh DIR and set %s=DIR", WorkEnv, WorkEnv)
	}
	for _, f := range []string{"test_app.fdx", "cc_min.beam", "ccr_client.escript"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return "", fmt.Errorf("%s=%s lacks %s: run test/peers/diameter/setup.sh %s", WorkEnv, dir, f, dir)
		}
	}
	return dir, nil
}

// NetNS is a network namespace created for one test, with lo up and a veth
// pair holding 192.0.2.200/32 (TEST-NET-1, connected to nothing), because
// freeDiameter 1.2.1 refuses to start with only a loopback address.
type NetNS struct {
	Name string
}

// NewNetNS creates the namespace name. It needs root and iproute2.
func NewNetNS(name string) (*NetNS, error) {
	steps := [][]string{
		{"ip", "netns", "add", name},
		{"ip", "-n", name, "link", "set", "lo", "up"},
		{"ip", "-n", name, "link", "add", "fdv0", "type", "veth", "peer", "name", "fdv1"},
		{"ip", "-n", name, "addr", "add", "192.0.2.200/32", "dev", "fdv0"},
		{"ip", "-n", name, "link", "set", "fdv0", "up"},
	}
	ns := &NetNS{Name: name}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			ns.Close()
			return nil, fmt.Errorf("create network namespace %s: %v: %w: %s", name, s, err, out)
		}
	}
	return ns, nil
}

// Close deletes the namespace.
func (ns *NetNS) Close() error {
	out, err := exec.Command("ip", "netns", "delete", ns.Name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("delete network namespace %s: %w: %s", ns.Name, err, out)
	}
	return nil
}

// Do runs fn on an OS thread that has entered the namespace, so sockets fn
// opens (a listener) live in it and can be used from any goroutine after.
// The thread is discarded afterwards rather than returned to the pool.
func (ns *NetNS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f, err := os.Open("/run/netns/" + ns.Name)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", ns.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// FDOptions configure one freeDiameter client run.
type FDOptions struct {
	Work         string // from Work
	NetNS        *NetNS // the gateway listens on 127.0.0.1:Port inside it
	Port         int
	GatewayHost  string // the gateway's Origin-Host
	GatewayRealm string
	Requests     int           // Test-Requests to send, one per SIGUSR1
	BenchSeconds int           // > 0: one benchmark run instead of Requests
	Concurrency  int           // outstanding requests in the benchmark
	WaitDWA      bool          // stay idle until a DWR/DWA pair (about 6 s)
	Timeout      time.Duration // bound of the whole run; default 60 s
}

// FDResult is what freeDiameter's log showed.
type FDResult struct {
	Opened    bool // reached STATE_OPEN after CER/CEA
	Answers   int  // Test-Answers with Test-AVP matching and 2001
	Sent      int  // benchmark: messages sent
	Errors    int  // benchmark: error answers; or test_app PROBLEM lines
	Received  int  // benchmark: answers received
	DWA       bool // a DWA from the gateway was logged
	DPA       bool // the DPA to freeDiameter's DPR was logged
	LogErrors []string
	Log       string
}

var (
	reOpen    = regexp.MustCompile(`'STATE_WAITCEA'.*-> 'STATE_OPEN'`)
	reAnswer  = regexp.MustCompile(`(?m)^RECV .*\(Ok\) Status: 2001`)
	reProblem = regexp.MustCompile(`(?m)^RECV .*PROBLEM|^RECV .*no_`)
	reDWA     = regexp.MustCompile(`RCV from .*0/280 `)
	reDPA     = regexp.MustCompile(`RCV from .*0/282 `)
	reFDError = regexp.MustCompile(`PARSING ERROR|ROUTING ERROR|DROPPED`)
	reSent    = regexp.MustCompile(`(\d+) message(?:s|\(s\)) sent`)
	reErrs    = regexp.MustCompile(`(\d+) error\(s\) received`)
	reRecv    = regexp.MustCompile(`(\d+) answer\(s\) received`)
)

// RunFreeDiameter starts freeDiameterd as a client of the gateway inside
// o.NetNS, drives it as o says, stops it with SIGTERM (DPR) and returns what
// its log showed. Every wait is bounded by o.Timeout.
func RunFreeDiameter(ctx context.Context, o FDOptions) (*FDResult, error) {
	if o.Timeout == 0 {
		o.Timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	dir, err := os.MkdirTemp(o.Work, "fd-")
	if err != nil {
		return nil, err
	}
	conf, err := renderFD(dir, o)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "fd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command("ip", "netns", "exec", o.NetNS.Name, "freeDiameterd", "-c", conf)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start freeDiameterd: %w", err)
	}
	exited := make(chan struct{}) // closed when freeDiameterd has exited
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	defer func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	res := &FDResult{}
	read := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	wait := func(cond func(string) bool) bool {
		for {
			if cond(read()) {
				return true
			}
			select {
			case <-ctx.Done():
				return false
			case <-exited:
				return cond(read())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	res.Opened = wait(func(s string) bool { return reOpen.MatchString(s) })
	if res.Opened {
		drive(o, cmd.Process, wait)
	}
	if o.WaitDWA {
		res.DWA = wait(func(s string) bool { return reDWA.MatchString(s) })
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	res.DPA = wait(func(s string) bool { return reDPA.MatchString(s) })
	select {
	case <-exited:
	case <-ctx.Done():
	}
	parseFD(res, read())
	return res, nil
}

// drive sends the Test-Requests or starts the benchmark and waits for it.
func drive(o FDOptions, p *os.Process, wait func(func(string) bool) bool) {
	if o.BenchSeconds > 0 {
		_ = p.Signal(syscall.SIGUSR1)
		// test_app prints its statistics every BenchSeconds+3 s.
		wait(func(s string) bool { return reRecv.MatchString(s) && strings.Contains(s, "Test Complete") })
		return
	}
	for i := 0; i < o.Requests; i++ {
		_ = p.Signal(syscall.SIGUSR1)
		n := i + 1
		wait(func(s string) bool { return len(reAnswer.FindAllString(s, -1)) >= n || reProblem.MatchString(s) })
	}
}

func parseFD(res *FDResult, log string) {
	res.Log = log
	res.Answers = len(reAnswer.FindAllString(log, -1))
	res.Errors = len(reProblem.FindAllString(log, -1))
	res.LogErrors = reFDError.FindAllString(log, -1)
	res.DWA = res.DWA || reDWA.MatchString(log)
	res.DPA = res.DPA || reDPA.MatchString(log)
	last := func(re *regexp.Regexp) int {
		m := re.FindAllStringSubmatch(log, -1)
		if len(m) == 0 {
			return 0
		}
		n, _ := strconv.Atoi(m[len(m)-1][1])
		return n
	}
	res.Sent, res.Received = last(reSent), last(reRecv)
	if errs := last(reErrs); errs > 0 {
		res.Errors += errs
	}
}

func renderFD(dir string, o FDOptions) (string, error) {
	data := struct {
		FDOptions
		TestAppConf      string
		BenchConcurrency int
	}{o, filepath.Join(dir, "test_app.conf"), max(o.Concurrency, 1)}
	for name, out := range map[string]string{
		"fd/client.conf.tmpl": filepath.Join(dir, "fd.conf"), "fd/test_app.conf.tmpl": data.TestAppConf,
	} {
		tmpl, err := template.ParseFS(templates, name)
		if err != nil {
			return "", err
		}
		var b bytes.Buffer
		if err := tmpl.Execute(&b, data); err != nil {
			return "", fmt.Errorf("render %s: %w", name, err)
		}
		if err := os.WriteFile(out, b.Bytes(), 0o644); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, "fd.conf"), nil
}

// CCA is one answer line of the Erlang client.
type CCA struct {
	Session, Type, Number, Result int
	Origin                        string
}

// ErlangResult is what the Erlang Credit-Control client printed.
type ErlangResult struct {
	Up      bool
	Answers []CCA
	Errors  []string
	Down    bool
	Output  string
}

var reCCA = regexp.MustCompile(`^CCA session=(\d+) type=(\d+) number=(\d+) result=(\d+) origin=(\S+)`)

// RunErlangCCR runs the Erlang/OTP diameter client against host:port: one
// connection, sessions x (CCR-I, CCR-U, CCR-T), then DPR. It is bounded by
// 60 s.
func RunErlangCCR(ctx context.Context, work, host string, port, sessions int) (*ErlangResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "escript", "ccr_client.escript", host, strconv.Itoa(port), strconv.Itoa(sessions))
	cmd.Dir = work
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return nil, fmt.Errorf("run escript: %w", err)
	}
	res := &ErlangResult{Output: string(out)}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "UP":
			res.Up = true
		case line == "DOWN":
			res.Down = true
		case strings.HasPrefix(line, "ERROR"):
			res.Errors = append(res.Errors, line)
		}
		if m := reCCA.FindStringSubmatch(line); m != nil {
			var c CCA
			c.Session, _ = strconv.Atoi(m[1])
			c.Type, _ = strconv.Atoi(m[2])
			c.Number, _ = strconv.Atoi(m[3])
			c.Result, _ = strconv.Atoi(m[4])
			c.Origin = m[5]
			res.Answers = append(res.Answers, c)
		}
	}
	return res, nil
}

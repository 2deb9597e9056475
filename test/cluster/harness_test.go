// Package cluster_test runs real gateway and worker processes on loopback,
// joined over real Serf, and drives them with CoAP clients.
package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shardgate-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, name := range []string{"gateway", "worker"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "../../cmd/"+name)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", name, err)
			os.Exit(1)
		}
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// handedOut remembers the ports freePort returned, because the kernel may
// offer a just-closed port again before its first user binds it.
var (
	portsMu   sync.Mutex
	handedOut = map[int]bool{}
)

// freePort returns a port that was free on 127.0.0.1 for both TCP and UDP
// and that no earlier call in this test process returned.
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		l.Close()
		if err == nil {
			u.Close()
			if handedOut[port] {
				continue
			}
			handedOut[port] = true
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

type proc struct {
	name  string
	cmd   *exec.Cmd
	admin string
	serf  string
	log   string
}

type cluster struct {
	t        *testing.T
	coap     string
	diameter string
	admin    string
	gwSerf   string
	workers  []*proc
	gateway  *proc

	// wrap, when set, prefixes every process command line, such as
	// "ip netns exec NAME" to run the cluster in a network namespace.
	wrap []string
	// client, when set, sends the admin HTTP requests, for admin addresses
	// the test process cannot reach directly.
	client *http.Client
}

func (c *cluster) start(p *proc, bin string, args ...string) {
	c.t.Helper()
	p.log = filepath.Join(c.t.TempDir(), p.name+".log")
	f, err := os.Create(p.log)
	if err != nil {
		c.t.Fatal(err)
	}
	p.cmd = exec.Command(filepath.Join(binDir, bin), args...)
	if len(c.wrap) > 0 {
		argv := append(slices.Clone(c.wrap[1:]), p.cmd.Path)
		p.cmd = exec.Command(c.wrap[0], append(argv, args...)...)
	}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		f.Close()
		if c.t.Failed() {
			b, _ := os.ReadFile(p.log)
			c.t.Logf("--- %s log (last 3000 bytes)\n%s", p.name, tail(b, 3000))
		}
	})
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// startCluster runs one gateway and n workers and waits until the gateway's
// ring has all n workers.
func startCluster(t *testing.T, n int, gatewayArgs ...string) *cluster {
	t.Helper()
	return startClusterWrapped(t, nil, nil, n, gatewayArgs...)
}

// startClusterWrapped is startCluster with every command line prefixed by
// wrap and the admin requests sent through client (nil: a plain client).
func startClusterWrapped(t *testing.T, wrap []string, client *http.Client, n int, gatewayArgs ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, coap: addr(freePort(t)), diameter: addr(freePort(t)), admin: addr(freePort(t)), gwSerf: addr(freePort(t)),
		wrap: wrap, client: client}
	c.gateway = &proc{name: "gateway-1", admin: c.admin, serf: c.gwSerf}
	args := append([]string{"--name", "gateway-1", "--coap-addr", c.coap, "--diameter-addr", c.diameter,
		"--serf-addr", c.gwSerf, "--admin-addr", c.admin, "--serf-profile", "local", "--log-level", "debug"}, gatewayArgs...)
	c.start(c.gateway, "gateway", args...)
	for i := 1; i <= n; i++ {
		c.addWorker(fmt.Sprintf("worker-%d", i))
	}
	c.waitWorkers(n)
	return c
}

func (c *cluster) addWorker(name string) *proc {
	p := &proc{name: name, admin: addr(freePort(c.t)), serf: addr(freePort(c.t))}
	c.start(p, "worker", "--name", name, "--link-addr", addr(freePort(c.t)), "--serf-addr", p.serf,
		"--admin-addr", p.admin, "--join", c.gwSerf, "--serf-profile", "local", "--drain-timeout", "500ms")
	c.workers = append(c.workers, p)
	return p
}

type clusterView struct {
	Members []struct {
		Name   string `json:"name"`
		Role   string `json:"role"`
		State  string `json:"state"`
		Status string `json:"status"`
	} `json:"members"`
	Ring struct {
		Workers map[string]int `json:"workers"`
	} `json:"ring"`
}

// waitWorkers polls /debug/cluster until the ring has exactly n workers.
func (c *cluster) waitWorkers(n int) clusterView {
	c.t.Helper()
	var v clusterView
	ok := poll(15*time.Second, func() bool {
		v = clusterView{}
		if c.getJSON("http://"+c.admin+"/debug/cluster", &v) != nil {
			return false
		}
		return len(v.Ring.Workers) == n
	})
	if !ok {
		c.t.Fatalf("ring did not reach %d workers: %+v", n, v)
	}
	return v
}

type owner struct {
	Key   string `json:"key"`
	Shard uint32 `json:"shard"`
	Owner string `json:"owner"`
}

func (c *cluster) owner(key string) owner {
	c.t.Helper()
	var o owner
	if err := c.getJSON("http://"+c.admin+"/debug/owner?key="+key, &o); err != nil {
		c.t.Fatalf("/debug/owner?key=%s: %v", key, err)
	}
	return o
}

// getJSON fetches url into v through c.client when it is set, and as the
// package getJSON does otherwise.
func (c *cluster) getJSON(url string, v any) error {
	if c.client == nil {
		return getJSON(url, v)
	}
	return getJSONWith(c.client, url, v)
}

func getJSON(url string, v any) error {
	return getJSONWith(&http.Client{Timeout: 2 * time.Second}, url, v)
}

func getJSONWith(client *http.Client, url string, v any) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

// poll calls cond every 50 ms until it returns true or d passes.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
}

func withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

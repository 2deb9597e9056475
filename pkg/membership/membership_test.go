package membership

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger writes to stderr with -v and discards otherwise.
func testLogger() zerolog.Logger {
	if !testing.Verbose() {
		return zerolog.Nop()
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Timestamp().Logger()
}

// recorder keeps the latest list passed to OnChange.
type recorder struct {
	mu      sync.Mutex
	members []Member
	calls   int
}

func (r *recorder) onChange(members []Member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members = members
	r.calls++
}

func (r *recorder) latest() []Member {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.members
}

func testConfig(name string, role Role, join ...string) Config {
	cfg := Config{
		Name:     name,
		Role:     role,
		BindAddr: "127.0.0.1:0",
		Join:     join,
		Profile:  ProfileLocal,
		Logger:   testLogger(),
	}
	if role == RoleWorker {
		cfg.LinkAddr = "127.0.0.1:9000"
	}
	return cfg
}

// startMember starts a member and shuts it down when the test ends.
func startMember(t *testing.T, cfg Config) *Membership {
	t.Helper()
	m, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		if err := m.Shutdown(); err != nil {
			t.Errorf("Shutdown(%s): %v", cfg.Name, err)
		}
	})
	return m
}

// serfAddr returns the gossip address m advertises.
func serfAddr(t *testing.T, m *Membership) string {
	t.Helper()
	for _, member := range m.Members() {
		if member.Name == m.LocalName() {
			return member.SerfAddr
		}
	}
	t.Fatalf("member %s is missing from its own member list", m.LocalName())
	return ""
}

// eventually polls cond every 20 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func names(members []Member) []string {
	out := make([]string, 0, len(members))
	for _, m := range members {
		out = append(out, m.Name)
	}
	return out
}

func findMember(members []Member, name string) (Member, bool) {
	for _, m := range members {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// cluster is a gateway "gw" and workers "w1" and "w2" that joined it.
type cluster struct {
	gw, w1, w2 *Membership
	changes    *recorder
}

// startCluster starts a cluster and waits until the gateway lists both
// workers as active.
func startCluster(t *testing.T) cluster {
	t.Helper()
	changes := &recorder{}
	gwCfg := testConfig("gw", RoleGateway)
	gwCfg.OnChange = changes.onChange
	gw := startMember(t, gwCfg)
	addr := serfAddr(t, gw)
	w1 := startMember(t, testConfig("w1", RoleWorker, addr))
	w2 := startMember(t, testConfig("w2", RoleWorker, addr))

	eventually(t, 10*time.Second, "gateway to see w1 and w2 active", func() bool {
		return slices.Equal(names(gw.ActiveWorkers()), []string{"w1", "w2"})
	})
	return cluster{gw: gw, w1: w1, w2: w2, changes: changes}
}

func TestClusterConverges(t *testing.T) {
	c := startCluster(t)

	eventually(t, 10*time.Second, "OnChange list with 2 active workers", func() bool {
		return len(FilterActiveWorkers(c.changes.latest())) == 2
	})
	eventually(t, 10*time.Second, "every member to see 3 alive members", func() bool {
		return c.gw.NumMembers() == 3 && c.w1.NumMembers() == 3 && c.w2.NumMembers() == 3
	})

	for _, m := range []*Membership{c.gw, c.w1, c.w2} {
		if !m.Joined() {
			t.Errorf("%s: Joined() = false, want true", m.LocalName())
		}
	}
	w1, ok := findMember(c.gw.Members(), "w1")
	if !ok {
		t.Fatal("gateway member list lacks w1")
	}
	want := Member{Name: "w1", Role: RoleWorker, State: StateActive, LinkAddr: "127.0.0.1:9000",
		SerfAddr: serfAddr(t, c.w1), Status: "alive"}
	if w1 != want {
		t.Errorf("gateway sees w1 as %+v, want %+v", w1, want)
	}
	gw, _ := findMember(c.w1.Members(), "gw")
	if gw.Role != RoleGateway || gw.LinkAddr != "" {
		t.Errorf("w1 sees gw as %+v, want role gateway and no link address", gw)
	}
}

func TestSetStateDraining(t *testing.T) {
	c := startCluster(t)

	if err := c.w1.SetState(StateDraining); err != nil {
		t.Fatalf("SetState(draining): %v", err)
	}
	eventually(t, 10*time.Second, "gateway to see w1 draining", func() bool {
		w1, ok := findMember(c.gw.Members(), "w1")
		return ok && w1.State == StateDraining
	})
	if got := names(c.gw.ActiveWorkers()); !slices.Equal(got, []string{"w2"}) {
		t.Errorf("ActiveWorkers = %v, want [w2]", got)
	}
	eventually(t, 10*time.Second, "OnChange list without w1 among active workers", func() bool {
		return slices.Equal(names(FilterActiveWorkers(c.changes.latest())), []string{"w2"})
	})

	if err := c.w1.SetState(StateActive); err != nil {
		t.Fatalf("SetState(active): %v", err)
	}
	eventually(t, 10*time.Second, "gateway to see w1 active again", func() bool {
		return slices.Equal(names(c.gw.ActiveWorkers()), []string{"w1", "w2"})
	})

	if err := c.w1.SetState("paused"); err == nil {
		t.Error(`SetState("paused") succeeded, want an error`)
	}
}

func TestLeaveRemovesWorker(t *testing.T) {
	c := startCluster(t)

	if err := c.w2.Leave(5 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	select {
	case <-c.w2.Done():
	default:
		t.Error("Done() is open after Leave returned")
	}
	if err := c.w2.Err(); err != nil {
		t.Errorf("Err() after Leave = %v, want nil", err)
	}
	// A busy test machine can delay gossip, so this waits longer than
	// failure detection takes. A member that failed instead stays failed.
	var last Member
	deadline := time.Now().Add(10 * time.Second)
	for last.Status != "left" {
		if time.Now().After(deadline) {
			t.Fatalf("gateway lists w2 as %q 10s after Leave, want left", last.Status)
		}
		time.Sleep(20 * time.Millisecond)
		last, _ = findMember(c.gw.Members(), "w2")
	}
	if got := names(c.gw.ActiveWorkers()); !slices.Equal(got, []string{"w1"}) {
		t.Errorf("ActiveWorkers = %v, want [w1]", got)
	}
}

func TestFailedWorkerDetected(t *testing.T) {
	c := startCluster(t)

	killed := time.Now()
	if err := c.w2.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	eventually(t, 5*time.Second, "gateway to see w2 as failed", func() bool {
		w2, ok := findMember(c.gw.Members(), "w2")
		return ok && w2.Status == "failed"
	})
	t.Logf("failure detected after %s", time.Since(killed).Round(time.Millisecond))

	if got := names(c.gw.ActiveWorkers()); !slices.Equal(got, []string{"w1"}) {
		t.Errorf("ActiveWorkers = %v, want [w1]", got)
	}
	eventually(t, 10*time.Second, "OnChange list without w2 among active workers", func() bool {
		return slices.Equal(names(FilterActiveWorkers(c.changes.latest())), []string{"w1"})
	})
}

// freePort returns a port that was free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestJoinRetry(t *testing.T) {
	port := freePort(t)
	workerAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	gw := startMember(t, testConfig("gw", RoleGateway, workerAddr))

	// The worker starts a second after the gateway's first join attempt.
	time.Sleep(time.Second)
	if gw.Joined() {
		t.Fatal("gateway reports Joined before any peer exists")
	}
	workerCfg := testConfig("w1", RoleWorker)
	workerCfg.BindAddr = workerAddr
	startMember(t, workerCfg)

	eventually(t, 10*time.Second, "gateway to join the late worker", gw.Joined)
	eventually(t, 10*time.Second, "gateway to see w1 active", func() bool {
		return slices.Equal(names(gw.ActiveWorkers()), []string{"w1"})
	})
}

func TestJoinEveryResolvedAddress(t *testing.T) {
	// Two workers on different loopback IPs and one port, as the pods
	// behind a headless Service. Neither joins the other, so the gateway
	// can only learn of both by joining both.
	cfgA := testConfig("wa", RoleWorker)
	cfgA.BindAddr = "127.0.0.2:0"
	wa := startMember(t, cfgA)
	_, port, err := net.SplitHostPort(serfAddr(t, wa))
	if err != nil {
		t.Fatal(err)
	}
	cfgB := testConfig("wb", RoleWorker)
	cfgB.BindAddr = net.JoinHostPort("127.0.0.3", port)
	wb := startMember(t, cfgB)

	var mu sync.Mutex
	var lookups []string
	gwCfg := testConfig("gw", RoleGateway, net.JoinHostPort("workers.test", port))
	gwCfg.Resolver = func(ctx context.Context, host string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		lookups = append(lookups, host)
		if host != "workers.test" {
			return nil, errors.New("unknown host")
		}
		return []string{"127.0.0.2", "127.0.0.3"}, nil
	}
	gw := startMember(t, gwCfg)

	eventually(t, 10*time.Second, "gateway to see wa and wb", func() bool {
		return slices.Equal(names(gw.ActiveWorkers()), []string{"wa", "wb"})
	})
	eventually(t, 10*time.Second, "wa to learn of wb through the gateway", func() bool {
		_, ok := findMember(wa.Members(), "wb")
		return ok
	})
	if _, ok := findMember(wb.Members(), "gw"); !ok {
		t.Error("wb does not know the gateway")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lookups) == 0 || lookups[0] != "workers.test" {
		t.Errorf("resolver calls = %v, want workers.test first", lookups)
	}
}

func TestNameConflictShutsDownNewcomer(t *testing.T) {
	c := startCluster(t)
	w1Addr := serfAddr(t, c.w1)

	dup := startMember(t, testConfig("w1", RoleWorker, serfAddr(t, c.gw)))
	select {
	case <-dup.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("member with a duplicate name is still running after 10s")
	}
	if err := dup.Err(); !errors.Is(err, ErrNameConflict) {
		t.Errorf("duplicate Err() = %v, want ErrNameConflict", err)
	}
	if err := c.w1.Err(); err != nil {
		t.Errorf("original w1 Err() = %v, want nil", err)
	}
	w1, _ := findMember(c.gw.Members(), "w1")
	if w1.SerfAddr != w1Addr || w1.Status != "alive" {
		t.Errorf("gateway sees w1 as %+v, want alive at %s", w1, w1Addr)
	}
}

func TestShutdownLeaksNoGoroutines(t *testing.T) {
	before := goleak.IgnoreCurrent()
	gw, err := Start(context.Background(), testConfig("gw", RoleGateway))
	if err != nil {
		t.Fatal(err)
	}
	w1, err := Start(context.Background(), testConfig("w1", RoleWorker, serfAddr(t, gw)))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "w1 to join", w1.Joined)

	if err := w1.Leave(5 * time.Second); err != nil {
		t.Errorf("Leave: %v", err)
	}
	if err := gw.Shutdown(); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := gw.Shutdown(); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	goleak.VerifyNone(t, before)
}

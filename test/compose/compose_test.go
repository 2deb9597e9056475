// Package compose runs deploy/compose/compose.yaml under Docker: two gateways
// and three, then four, workers on a private network, driven through the
// gateways' published loopback ports.
//
// The test needs Docker, docker-compose (or the `docker compose` plugin) and the
// shardgate:dev image, so it runs only when SHARDGATE_COMPOSE_TEST=1 is set;
// `make compose-test` builds the image and sets it.
package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp"
)

const image = "shardgate:dev"

// stack is one running compose project with the host ports it published.
type stack struct {
	t       *testing.T
	compose []string // command and leading arguments: docker-compose or docker compose
	file    string
	project string
	env     []string
	coap    [2]int // gateway-1 and gateway-2 CoAP (UDP)
	admin   [2]int // gateway-1 and gateway-2 admin HTTP
}

func TestComposeCluster(t *testing.T) {
	s := newStack(t)
	s.run("up", "-d", "--scale", "worker=3")

	for _, port := range s.admin {
		waitForWorkers(t, port, 3)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const device, reading = "compose-1", "21.5"

	// The POST goes through gateway-1 and the GET through gateway-2: both must
	// route the device to the same worker.
	postTelemetry(ctx, t, s.coap[0], device, reading)
	state := getState(ctx, t, s.coap[1], device)
	if state.Device != device {
		t.Errorf("state device = %q, want %q", state.Device, device)
	}
	if state.Count != 1 {
		t.Errorf("state count = %d, want 1", state.Count)
	}
	if state.Last != reading {
		t.Errorf("state last = %q, want %q", state.Last, reading)
	}
	var owner struct {
		Owner string `json:"owner"`
	}
	getJSON(t, fmt.Sprintf("http://127.0.0.1:%d/debug/owner?key=%s", s.admin[0], device), &owner)
	if state.Worker == "" || state.Worker != owner.Owner {
		t.Errorf("state served by worker %q, but gateway-1 reports owner %q", state.Worker, owner.Owner)
	}

	libcoapRoundTrip(t, s.coap[1], "compose-2")

	s.run("up", "-d", "--no-recreate", "--scale", "worker=4")
	for _, port := range s.admin {
		waitForWorkers(t, port, 4)
	}
}

func newStack(t *testing.T) *stack {
	t.Helper()
	if os.Getenv("SHARDGATE_COMPOSE_TEST") != "1" {
		t.Skip("set SHARDGATE_COMPOSE_TEST=1 to run (needs Docker, docker-compose and the " +
			image + " image; `make compose-test` does all three)")
	}
	compose := composeCommand(t)
	if out, err := exec.Command("docker", "image", "inspect", image).CombinedOutput(); err != nil {
		t.Fatalf("image %s not found (run make image first): %v\n%s", image, err, out)
	}

	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{
		t:       t,
		compose: compose,
		file:    filepath.Join(root, "deploy", "compose", "compose.yaml"),
		project: fmt.Sprintf("sgtest%d", os.Getpid()),
	}
	for i := range 2 {
		s.coap[i] = freePort(t, "udp")
		s.admin[i] = freePort(t, "tcp")
		n := strconv.Itoa(i + 1)
		s.env = append(s.env,
			"GATEWAY"+n+"_COAP_PORT="+strconv.Itoa(s.coap[i]),
			"GATEWAY"+n+"_ADMIN_PORT="+strconv.Itoa(s.admin[i]),
			"GATEWAY"+n+"_DIAMETER_PORT="+strconv.Itoa(freePort(t, "tcp")))
	}

	// Registered before `up`, so the project is removed even when `up` fails
	// half-way. Logs are printed first when the test failed.
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := s.output("logs", "--no-color", "--tail", "40")
			t.Logf("container logs:\n%s", out)
		}
		if out, err := s.output("down", "-v", "--remove-orphans", "--timeout", "15"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	return s
}

// composeCommand returns `docker compose` when the plugin exists, otherwise
// docker-compose, and skips the test when Docker cannot be reached.
func composeCommand(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker not found in PATH")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("Docker daemon not reachable: %v\n%s", err, out)
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if path, err := exec.LookPath("docker-compose"); err == nil {
		return []string{path}
	}
	t.Skip("neither `docker compose` nor docker-compose is installed")
	return nil
}

func (s *stack) output(args ...string) ([]byte, error) {
	full := append(append([]string{}, s.compose[1:]...), "-f", s.file, "-p", s.project)
	full = append(full, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.compose[0], full...)
	cmd.Env = append(os.Environ(), s.env...)
	return cmd.CombinedOutput()
}

func (s *stack) run(args ...string) {
	s.t.Helper()
	if out, err := s.output(args...); err != nil {
		s.t.Fatalf("compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// freePort returns a loopback port that was free a moment ago. Another
// process may take it before compose binds it; the test then fails at `up`.
func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// cluster is the part of /debug/cluster that the test reads.
type cluster struct {
	Members []struct {
		Name   string `json:"name"`
		Role   string `json:"role"`
		State  string `json:"state"`
		Status string `json:"status"`
	} `json:"members"`
	Ring struct {
		Shards  int            `json:"shards"`
		Workers map[string]int `json:"workers"`
	} `json:"ring"`
}

func (c *cluster) activeWorkers() int {
	n := 0
	for _, m := range c.Members {
		if m.Role == "worker" && m.State == "active" && m.Status == "alive" {
			n++
		}
	}
	return n
}

// waitForWorkers polls a gateway's /debug/cluster until it lists want active
// workers, all of them owning shards of the ring, for at most 90 seconds.
func waitForWorkers(t *testing.T, adminPort, want int) {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/cluster", adminPort)
	deadline := time.Now().Add(90 * time.Second)
	var last cluster
	var lastErr error
	for time.Now().Before(deadline) {
		last = cluster{}
		lastErr = fetchJSON(url, &last)
		if lastErr == nil && last.activeWorkers() == want && len(last.Ring.Workers) == want {
			return
		}
		time.Sleep(250 * time.Millisecond) // poll interval, not a guess at readiness
	}
	t.Fatalf("%s: want %d active workers owning shards within 90s; last error %v, last view %+v",
		url, want, lastErr, last)
}

func fetchJSON(url string, v any) error {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	if err := fetchJSON(url, v); err != nil {
		t.Fatal(err)
	}
}

// deviceState is the JSON body of GET /d/{id}/state.
type deviceState struct {
	Device string `json:"device"`
	Count  uint64 `json:"count"`
	Last   string `json:"last"`
	Worker string `json:"worker"`
}

func postTelemetry(ctx context.Context, t *testing.T, port int, device, reading string) {
	t.Helper()
	conn, err := udp.Dial(fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("dial gateway CoAP port %d: %v", port, err)
	}
	defer conn.Close()
	resp, err := conn.Post(ctx, "/d/"+device+"/telemetry", message.TextPlain, bytes.NewReader([]byte(reading)))
	if err != nil {
		t.Fatalf("POST /d/%s/telemetry via port %d: %v", device, port, err)
	}
	if resp.Code() != codes.Changed {
		body, _ := resp.ReadBody()
		t.Fatalf("POST /d/%s/telemetry: code %v, want %v; body %q", device, resp.Code(), codes.Changed, body)
	}
}

func getState(ctx context.Context, t *testing.T, port int, device string) deviceState {
	t.Helper()
	conn, err := udp.Dial(fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("dial gateway CoAP port %d: %v", port, err)
	}
	defer conn.Close()
	accept := message.Option{ID: message.Accept, Value: []byte{byte(message.AppJSON)}}
	resp, err := conn.Get(ctx, "/d/"+device+"/state", accept)
	if err != nil {
		t.Fatalf("GET /d/%s/state via port %d: %v", device, port, err)
	}
	body, err := resp.ReadBody()
	if err != nil {
		t.Fatalf("read GET /d/%s/state body: %v", device, err)
	}
	if resp.Code() != codes.Content {
		t.Fatalf("GET /d/%s/state: code %v, want %v; body %q", device, resp.Code(), codes.Content, body)
	}
	var state deviceState
	if err := json.Unmarshal(body, &state); err != nil {
		t.Fatalf("GET /d/%s/state: body %q is not the JSON state: %v", device, body, err)
	}
	return state
}

// libcoapRoundTrip posts telemetry and reads the state with libcoap's
// coap-client through a published gateway port, as an operator would try
// the cluster. It is skipped where libcoap3-bin is not installed. The
// client exits 0 even on errors, so the state body is the check.
func libcoapRoundTrip(t *testing.T, port int, device string) {
	t.Helper()
	client, err := exec.LookPath("coap-client-notls")
	if err != nil {
		t.Log("coap-client-notls not installed (Debian libcoap3-bin): skipping the libcoap round trip")
		return
	}
	base := fmt.Sprintf("coap://127.0.0.1:%d/d/%s", port, device)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, client, "-B", "5", "-m", "post", "-e", "7", base+"/telemetry").CombinedOutput(); err != nil {
		t.Fatalf("coap-client POST: %v\n%s", err, out)
	}
	bodyFile := filepath.Join(t.TempDir(), "state")
	if out, err := exec.CommandContext(ctx, client, "-B", "5", "-o", bodyFile, base+"/state").CombinedOutput(); err != nil {
		t.Fatalf("coap-client GET: %v\n%s", err, out)
	}
	body, err := os.ReadFile(bodyFile)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Device string `json:"device"`
		Count  int    `json:"count"`
		Last   string `json:"last"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("coap-client GET state body %q: %v", body, err)
	}
	if st.Device != device || st.Count != 1 || st.Last != "7" {
		t.Errorf("state via coap-client = %+v, want device %s, count 1, last 7", st, device)
	}
}

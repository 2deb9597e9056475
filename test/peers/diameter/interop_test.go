package peers

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/pkg/app"
	"github.com/shardgate/shardgate/pkg/app/diameterapp"
	dia "github.com/shardgate/shardgate/pkg/protocols/diameter"
)

// localForwarder serves requests with the worker's Diameter handler in
// process, standing in for the link to a worker.
type localForwarder struct{ h app.Handler }

func (f localForwarder) Forward(key, msg []byte, done func([]byte, error)) error {
	go func() {
		ans, err := f.h.Serve(context.Background(), &app.Request{Proto: app.Diameter, Key: string(key), Message: msg})
		done(ans, err)
	}()
	return nil
}

// startGateway serves on 127.0.0.1:0, inside ns when it is not nil.
func startGateway(t *testing.T, ns *NetNS) (*dia.Server, int) {
	t.Helper()
	srv, err := dia.NewServer(dia.ServerOptions{
		Addr: "127.0.0.1:0", OriginHost: "gw.gateway.test", OriginRealm: "gateway.test",
		Forwarder: localForwarder{diameterapp.New(diameterapp.Options{WorkerName: "w1"})},
		Logger:    zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	if ns != nil {
		err = ns.Do(srv.Listen)
	} else {
		err = srv.Listen()
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	_, port, _ := net.SplitHostPort(srv.Addr())
	p, _ := strconv.Atoi(port)
	return srv, p
}

func needTools(t *testing.T, tools ...string) string {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: apt-get install freediameter erlang-diameter iproute2", tool)
		}
	}
	work, err := Work()
	if err != nil {
		t.Skip(err)
	}
	return work
}

func newNetNS(t *testing.T) *NetNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("freeDiameter interop needs root to create a network namespace")
	}
	ns, err := NewNetNS(fmt.Sprintf("sg-diam-%d-%d", os.Getpid(), time.Now().UnixNano()%100000))
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Error(err)
		}
	})
	return ns
}

func TestFreeDiameterTestApp(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test takes about 10 s")
	}
	work := needTools(t, "freeDiameterd", "ip")
	ns := newNetNS(t)
	_, port := startGateway(t, ns)

	res, err := RunFreeDiameter(context.Background(), FDOptions{
		Work: work, NetNS: ns, Port: port, GatewayHost: "gw.gateway.test", GatewayRealm: "gateway.test",
		Requests: 3, WaitDWA: true, Timeout: 40 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Opened {
		t.Fatalf("freeDiameter never reached STATE_OPEN; log:\n%s", res.Log)
	}
	if res.Answers != 3 || res.Errors != 0 {
		t.Errorf("Test-Answers: %d ok, %d problems, want 3 and 0", res.Answers, res.Errors)
	}
	if !res.DWA {
		t.Error("no DWA from the gateway in the freeDiameter log")
	}
	if !res.DPA {
		t.Error("no DPA to freeDiameter's DPR")
	}
	if len(res.LogErrors) > 0 {
		t.Errorf("freeDiameter logged %v", res.LogErrors)
	}
	if t.Failed() {
		t.Logf("freeDiameter log:\n%s", res.Log)
	}
}

func TestFreeDiameterBenchmark(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark interop takes about 10 s")
	}
	work := needTools(t, "freeDiameterd", "ip")
	ns := newNetNS(t)
	_, port := startGateway(t, ns)

	res, err := RunFreeDiameter(context.Background(), FDOptions{
		Work: work, NetNS: ns, Port: port, GatewayHost: "gw.gateway.test", GatewayRealm: "gateway.test",
		BenchSeconds: 3, Concurrency: 50, Timeout: 40 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Opened {
		t.Fatalf("freeDiameter never reached STATE_OPEN; log:\n%s", res.Log)
	}
	t.Logf("benchmark: %d sent, %d answers, %d errors in 3 s", res.Sent, res.Received, res.Errors)
	if res.Received == 0 || res.Received != res.Sent || res.Errors != 0 || len(res.LogErrors) > 0 {
		t.Errorf("benchmark: %d answers, %d errors, log errors %v", res.Received, res.Errors, res.LogErrors)
		t.Logf("freeDiameter log tail:\n%s", tail(res.Log, 3000))
	}
}

func TestErlangCreditControl(t *testing.T) {
	work := needTools(t, "escript", "erl")
	_, port := startGateway(t, nil)
	const sessions = 4
	res, err := RunErlangCCR(context.Background(), work, "127.0.0.1", port, sessions)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Up {
		t.Fatalf("Erlang client never opened the connection:\n%s", res.Output)
	}
	if len(res.Answers) != sessions*3 || len(res.Errors) > 0 {
		t.Fatalf("%d CCAs and errors %v, want %d CCAs:\n%s", len(res.Answers), res.Errors, sessions*3, res.Output)
	}
	for _, a := range res.Answers {
		if a.Result != dia.ResultSuccess || a.Origin != "gw.gateway.test" {
			t.Errorf("session %d type %d: result %d from %s, want 2001 from gw.gateway.test", a.Session, a.Type, a.Result, a.Origin)
		}
	}
	if !res.Down {
		t.Errorf("no clean DPR/DPA at the end:\n%s", res.Output)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

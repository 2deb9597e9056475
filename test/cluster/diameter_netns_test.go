package cluster_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	peers "github.com/shardgate/shardgate/test/peers/diameter"
)

// nsHTTPClient returns an HTTP client whose connections are opened inside ns,
// for the admin endpoints of processes running there.
func nsHTTPClient(ns *peers.NetNS) *http.Client {
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		var conn net.Conn
		err := ns.Do(func() error {
			var err error
			conn, err = (&net.Dialer{}).DialContext(ctx, network, address)
			return err
		})
		return conn, err
	}
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: dial}}
}

// startNetNSCluster creates a network namespace and runs a gateway and n
// workers inside it, because freeDiameter 1.2.1 refuses to start with only a
// loopback address. It skips the test without root or iproute2.
func startNetNSCluster(t *testing.T, n int) (*cluster, *peers.NetNS) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("freeDiameter needs a network namespace, which needs root")
	}
	ns, err := peers.NewNetNS(fmt.Sprintf("sg-cl-%d", os.Getpid()))
	if err != nil {
		t.Skip(err)
	}
	// Registered before the processes start, so it runs after they are killed.
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Error(err)
		}
	})
	c := startClusterWrapped(t, []string{"ip", "netns", "exec", ns.Name}, nsHTTPClient(ns), n)
	return c, ns
}

func TestDiameterFreeDiameterCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("freeDiameter against the cluster takes about 25 s")
	}
	work := needPeers(t, "freeDiameterd", "ip")
	c, ns := startNetNSCluster(t, 2)
	_, portText, _ := net.SplitHostPort(c.diameter)
	port, _ := strconv.Atoi(portText)
	opts := peers.FDOptions{
		Work: work, NetNS: ns, Port: port, GatewayHost: gatewayHost, GatewayRealm: gatewayRealm,
		Timeout: 30 * time.Second,
	}

	// Test-Requests, then idle until freeDiameter's Tw of 6 s brings a DWR.
	requests := opts
	requests.Requests, requests.WaitDWA = 3, true
	start := time.Now()
	res, err := peers.RunFreeDiameter(context.Background(), requests)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("freeDiameter Test-Request run took %v", time.Since(start).Round(time.Millisecond))
	if !res.Opened {
		t.Fatalf("freeDiameter never reached STATE_OPEN with %s; log:\n%s", gatewayHost, tail([]byte(res.Log), 3000))
	}
	if res.Answers != 3 || res.Errors != 0 {
		t.Errorf("Test-Answers: %d with 2001, %d problems; want 3 and 0", res.Answers, res.Errors)
	}
	if !res.DWA {
		t.Error("no DWA from the gateway in freeDiameter's log")
	}
	if !res.DPA {
		t.Error("no DPA to freeDiameter's DPR")
	}
	if len(res.LogErrors) > 0 {
		t.Errorf("freeDiameter logged %v", res.LogErrors)
	}
	if t.Failed() {
		t.Logf("freeDiameter log:\n%s", tail([]byte(res.Log), 3000))
	}

	// test_app's benchmark: 5 s with 50 requests outstanding, each with its
	// own Session-Id, so the requests spread over both workers.
	const seconds = 5
	bench := opts
	bench.BenchSeconds, bench.Concurrency = seconds, 50
	res, err = peers.RunFreeDiameter(context.Background(), bench)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Opened {
		t.Fatalf("benchmark: freeDiameter never reached STATE_OPEN; log:\n%s", tail([]byte(res.Log), 3000))
	}
	t.Logf("freeDiameter benchmark: %d sent, %d answers, %d errors in %d s (%d answers/s)",
		res.Sent, res.Received, res.Errors, seconds, res.Received/seconds)
	if res.Received == 0 || res.Received != res.Sent || res.Errors != 0 || len(res.LogErrors) > 0 {
		t.Errorf("benchmark: %d sent, %d answers, %d errors, log errors %v; want all answered without errors",
			res.Sent, res.Received, res.Errors, res.LogErrors)
		t.Logf("freeDiameter log tail:\n%s", tail([]byte(res.Log), 3000))
	}
	if !res.DPA {
		t.Error("benchmark: no DPA to freeDiameter's DPR")
	}
	// The cluster is whole after both runs, seen from inside the namespace.
	c.waitWorkers(2)
}

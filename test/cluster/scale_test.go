package cluster_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/shardgate/shardgate/pkg/ring"
)

// keyOwnedBy returns a device id that the ring gives to want once the
// workers are names. The gateways use the same ring, so the test knows in
// advance which device moves when a worker joins.
func keyOwnedBy(t *testing.T, names []string, want string) string {
	t.Helper()
	r, err := ring.New(ring.DefaultShards)
	if err != nil {
		t.Fatal(err)
	}
	members := make([]ring.Member, len(names))
	for i, n := range names {
		members[i] = ring.Member{Name: n, Addr: n}
	}
	r.Set(members)
	for i := range 10000 {
		id := fmt.Sprintf("mover%d", i)
		if _, o, _ := r.LookupString(id); o.Name == want {
			return id
		}
	}
	t.Fatalf("no key maps to %s", want)
	return ""
}

func TestObservationFollowsKeyToNewWorker(t *testing.T) {
	c := startCluster(t, 2)
	id := keyOwnedBy(t, []string{"worker-1", "worker-2", "worker-3"}, "worker-3")
	co := dial(t, c.coap)
	if code, err := post(co, "/d/"+id+"/telemetry", "before"); err != nil || code != codes.Changed {
		t.Fatalf("POST: %v %v", code, err)
	}

	var mu sync.Mutex
	var notes []state
	ctx, cancel := withTimeout(5 * time.Second)
	defer cancel()
	obs, err := co.Observe(ctx, "/d/"+id+"/state", func(m *pool.Message) {
		body, err := m.ReadBody()
		if err != nil || m.Code() != codes.Content {
			return
		}
		var s state
		if json.Unmarshal(body, &s) == nil {
			mu.Lock()
			notes = append(notes, s)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("observe: %v", err)
	}
	defer obs.Cancel(ctx)

	c.addWorker("worker-3")
	c.waitWorkers(3)
	if o := c.owner(id); o.Owner != "worker-3" {
		t.Fatalf("%s owned by %s after the join, want worker-3", id, o.Owner)
	}
	// The gateway registers the observation with worker-3 when the ring
	// changes; telemetry now lands there and must be notified.
	ok := poll(5*time.Second, func() bool {
		if code, err := post(co, "/d/"+id+"/telemetry", "after"); err != nil || code != codes.Changed {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		for _, s := range notes {
			if s.Worker == "worker-3" && s.Last == "after" {
				return true
			}
		}
		return false
	})
	if !ok {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("no notification from worker-3 after the key moved; got %+v", notes)
	}
}

func TestDrainingWorkerHandsOverWithoutLoss(t *testing.T) {
	c := startCluster(t, 2)
	co := dial(t, c.coap)
	ids := make([]string, 40)
	for i := range ids {
		ids[i] = fmt.Sprintf("drain%d", i)
	}
	victim := c.workers[1]
	if err := victim.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// During the drain every request is answered: the draining worker
	// still serves until gateways have moved its shards.
	deadline := time.Now().Add(3 * time.Second)
	failures := 0
	for time.Now().Before(deadline) {
		for _, id := range ids {
			if code, err := post(co, "/d/"+id+"/telemetry", "x"); err != nil || code != codes.Changed {
				failures++
				t.Logf("POST %s during drain: code %v, err %v", id, code, err)
			}
		}
	}
	if failures > 0 {
		t.Fatalf("%d requests failed while %s drained", failures, victim.name)
	}
	c.waitWorkers(1)
	if err := victim.cmd.Wait(); err != nil {
		t.Errorf("%s exited with %v after SIGTERM, want status 0", victim.name, err)
	}
}

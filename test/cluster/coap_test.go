package cluster_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp"
	"github.com/plgd-dev/go-coap/v3/udp/client"
)

type state struct {
	Device string `json:"device"`
	Count  int    `json:"count"`
	Last   string `json:"last"`
	Worker string `json:"worker"`
}

func dial(t *testing.T, target string) *client.Conn {
	t.Helper()
	co, err := udp.Dial(target)
	if err != nil {
		t.Fatalf("dial %s: %v", target, err)
	}
	t.Cleanup(func() { co.Close() })
	return co
}

func post(co *client.Conn, path, body string) (codes.Code, error) {
	ctx, cancel := withTimeout(3 * time.Second)
	defer cancel()
	resp, err := co.Post(ctx, path, message.TextPlain, bytes.NewReader([]byte(body)))
	if err != nil {
		return 0, err
	}
	return resp.Code(), nil
}

func getState(co *client.Conn, id string) (codes.Code, state, error) {
	ctx, cancel := withTimeout(3 * time.Second)
	defer cancel()
	resp, err := co.Get(ctx, "/d/"+id+"/state")
	if err != nil {
		return 0, state{}, err
	}
	var s state
	if resp.Code() == codes.Content {
		body, err := resp.ReadBody()
		if err != nil {
			return 0, s, err
		}
		if err := json.Unmarshal(body, &s); err != nil {
			return 0, s, fmt.Errorf("state body %q: %w", body, err)
		}
	}
	return resp.Code(), s, nil
}

func TestDevicesLandOnTheirOwner(t *testing.T) {
	c := startCluster(t, 2)
	co := dial(t, c.coap)
	perWorker := map[string]int{}
	for i := range 50 {
		id := fmt.Sprintf("dev%d", i)
		for range 2 {
			code, err := post(co, "/d/"+id+"/telemetry", "21")
			if err != nil || code != codes.Changed {
				t.Fatalf("POST %s telemetry: code %v, err %v", id, code, err)
			}
		}
		code, s, err := getState(co, id)
		if err != nil || code != codes.Content {
			t.Fatalf("GET %s state: code %v, err %v", id, code, err)
		}
		if s.Count != 2 || s.Last != "21" || s.Device != id {
			t.Errorf("state of %s = %+v, want count 2, last 21", id, s)
		}
		if o := c.owner(id); o.Owner != s.Worker {
			t.Errorf("%s served by %s, /debug/owner says %s", id, s.Worker, o.Owner)
		}
		perWorker[s.Worker]++
	}
	if len(perWorker) != 2 {
		t.Errorf("50 devices landed on %v, want both workers", perWorker)
	}
}

func TestKilledWorkerDevicesServedAgain(t *testing.T) {
	c := startCluster(t, 2)
	co := dial(t, c.coap)
	ids := make([]string, 50)
	for i := range ids {
		ids[i] = fmt.Sprintf("k%d", i)
		if code, err := post(co, "/d/"+ids[i]+"/telemetry", "1"); err != nil || code != codes.Changed {
			t.Fatalf("POST %s: code %v, err %v", ids[i], code, err)
		}
	}
	victim := c.workers[0]
	victim.kill(t)
	killed := time.Now()

	// Each pass posts to every device not yet answered, in parallel: a
	// request to the dead worker goes unanswered until Serf notices the
	// failure and the device's retransmission reaches the new owner.
	answered := map[string]bool{}
	var mu sync.Mutex
	ok := poll(10*time.Second, func() bool {
		var wg sync.WaitGroup
		for _, id := range ids {
			mu.Lock()
			done := answered[id]
			mu.Unlock()
			if done {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if code, err := post(co, "/d/"+id+"/telemetry", "2"); err == nil && code == codes.Changed {
					mu.Lock()
					answered[id] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return len(answered) == len(ids)
	})
	if !ok {
		t.Fatalf("%d of %d devices answered within 10 s of SIGKILL", len(answered), len(ids))
	}
	t.Logf("all %d devices answered %v after SIGKILL of %s", len(ids), time.Since(killed).Round(time.Millisecond), victim.name)
	c.waitWorkers(1)
	for _, id := range ids {
		if o := c.owner(id); o.Owner == victim.name {
			t.Errorf("%s still owned by killed %s", id, victim.name)
		}
	}
}

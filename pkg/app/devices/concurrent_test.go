package devices

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/shardgate/shardgate/pkg/app"
)

// TestConcurrentRequests runs telemetry, config, state and observe requests
// for a few shared devices from several goroutines; run it with -race.
func TestConcurrentRequests(t *testing.T) {
	const (
		workers = 8
		rounds  = 200
		devices = 4
	)
	a := newTestApp(t, Options{})
	observers := make([]*fakeObserver, devices)
	for i := range observers {
		key := fmt.Sprintf("dev%d", i)
		postTelemetry(t, a, key, "r0")
		observers[i] = newFakeObserver()
		registerState(t, a, key, observers[i])
	}

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			if err := hammer(a, w, rounds, devices); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	for i, obs := range observers {
		key := fmt.Sprintf("dev%d", i)
		resp := do(t, a, key, reqSpec{code: codes.GET, path: "/d/" + key + "/state"})
		var st stateJSON
		if err := json.Unmarshal(resp.Payload, &st); err != nil {
			t.Fatalf("state of %s: %v", key, err)
		}
		// Each worker posts to every device in turn, plus the setup post.
		if want := uint64(workers*rounds/devices + 1); st.Count != want {
			t.Errorf("%s count = %d, want %d", key, st.Count, want)
		}
		if len(obs.messages()) == 0 {
			t.Errorf("%s observer got no notifications", key)
		}
	}
}

// call is one request of hammer, with the observer it registers, if any.
type call struct {
	spec reqSpec
	obs  app.Observer
}

// hammer sends rounds batches of requests as worker w and returns the first
// failure or error response.
func hammer(a *App, w, rounds, devices int) error {
	for i := range rounds {
		key := fmt.Sprintf("dev%d", (w+i)%devices)
		calls := []call{
			{spec: reqSpec{code: codes.POST, path: "/d/" + key + "/telemetry", payload: []byte(fmt.Sprint(i))}},
			{spec: reqSpec{code: codes.GET, path: "/d/" + key + "/state"}},
		}
		if i%10 == 0 {
			calls = append(calls, call{spec: reqSpec{code: codes.PUT, path: "/d/" + key + "/config", payload: []byte("c")}})
		}
		if i%50 == 0 {
			obs := newFakeObserver()
			defer obs.Close()
			spec := reqSpec{code: codes.GET, path: "/d/" + key + "/state", opts: []message.Option{observeReg}}
			calls = append(calls, call{spec: spec, obs: obs})
		}
		for _, c := range calls {
			if err := serveOK(a, key, c); err != nil {
				return err
			}
		}
	}
	return nil
}

func serveOK(a *App, key string, c call) error {
	data, err := buildRequest(c.spec)
	if err != nil {
		return err
	}
	req := &app.Request{Proto: app.CoAP, Key: key, Message: data, Observer: c.obs}
	out, err := a.Serve(context.Background(), req)
	if err != nil {
		return fmt.Errorf("serve %v %s: %w", c.spec.code, c.spec.path, err)
	}
	m := message.Message{Options: make(message.Options, 0, 8)}
	if _, err := coder.DefaultCoder.Decode(out, &m); err != nil {
		return fmt.Errorf("decode response %s: %w", hex.EncodeToString(out), err)
	}
	if m.Code >= codes.BadRequest {
		return fmt.Errorf("%v %s: code %v: %s", c.spec.code, c.spec.path, m.Code, m.Payload)
	}
	return nil
}

package devices

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

var (
	observeReg = uintOpt(message.Observe, 0)
	regToken   = []byte{0x0b, 0x5e}
)

func registerState(t *testing.T, a *App, key string, obs *fakeObserver) message.Message {
	t.Helper()
	return doObserve(t, a, key, reqSpec{
		code:  codes.GET,
		path:  "/d/" + key + "/state",
		token: regToken,
		opts:  []message.Option{observeReg},
	}, obs)
}

func postTelemetry(t *testing.T, a *App, key, payload string) {
	t.Helper()
	resp := do(t, a, key, reqSpec{code: codes.POST, path: "/d/" + key + "/telemetry", payload: []byte(payload)})
	if resp.Code != codes.Changed {
		t.Fatalf("telemetry code = %v, want %v", resp.Code, codes.Changed)
	}
}

func TestObserveNotifications(t *testing.T) {
	a := newTestApp(t, Options{})
	postTelemetry(t, a, "a", "r0")
	obs := newFakeObserver()

	reg := registerState(t, a, "a", obs)
	if reg.Code != codes.Content {
		t.Fatalf("registration code = %v, want %v", reg.Code, codes.Content)
	}
	prev, err := reg.Options.Observe()
	if err != nil {
		t.Fatalf("registration response has no Observe option: %v", err)
	}

	for i := 1; i <= 3; i++ {
		postTelemetry(t, a, "a", fmt.Sprintf("r%d", i))
	}
	msgs := obs.messages()
	if len(msgs) != 3 {
		t.Fatalf("got %d notifications, want 3", len(msgs))
	}
	for i, raw := range msgs {
		n := decodeResponse(t, raw)
		if n.Code != codes.Content {
			t.Errorf("notification %d code = %v, want %v", i, n.Code, codes.Content)
		}
		if !bytes.Equal(n.Token, regToken) {
			t.Errorf("notification %d token = %x, want %x", i, n.Token, regToken)
		}
		seq, err := n.Options.Observe()
		if err != nil {
			t.Fatalf("notification %d has no Observe option: %v", i, err)
		}
		if seq <= prev {
			t.Errorf("notification %d Observe = %d, want more than %d", i, seq, prev)
		}
		prev = seq
		var st stateJSON
		if err := json.Unmarshal(n.Payload, &st); err != nil {
			t.Fatalf("notification %d payload %q: %v", i, n.Payload, err)
		}
		if want := fmt.Sprintf("r%d", i+1); st.Last != want {
			t.Errorf("notification %d last = %q, want %q", i, st.Last, want)
		}
	}

	obs.Close()
	postTelemetry(t, a, "a", "after close")
	if n := len(obs.messages()); n != 3 {
		t.Errorf("got %d notifications after Done closed, want 3", n)
	}
	if n := a.observers.count("a"); n != 0 {
		t.Errorf("%d observers kept after Done closed, want 0", n)
	}
}

func TestObserveUnknownDevice(t *testing.T) {
	a := newTestApp(t, Options{})
	obs := newFakeObserver()
	resp := registerState(t, a, "a", obs)
	if resp.Code != codes.Content {
		t.Errorf("code = %v, want %v with the empty state", resp.Code, codes.Content)
	}
	if !resp.Options.HasOption(message.Observe) {
		t.Errorf("registration response lacks Observe")
	}
	if n := a.observers.count("a"); n != 1 {
		t.Errorf("%d observers kept for a device with no state yet, want 1", n)
	}
	postTelemetry(t, a, "a", "first")
	if n := len(obs.messages()); n != 1 {
		t.Errorf("got %d notifications after the first telemetry, want 1", n)
	}
}

func TestObserveConfigChangeNotifies(t *testing.T) {
	a := newTestApp(t, Options{})
	postTelemetry(t, a, "a", "r0")
	obs := newFakeObserver()
	registerState(t, a, "a", obs)

	do(t, a, "a", reqSpec{code: codes.PUT, path: "/d/a/config", payload: []byte("rate=9")})
	msgs := obs.messages()
	if len(msgs) != 1 {
		t.Fatalf("got %d notifications, want 1", len(msgs))
	}
	var st stateJSON
	if err := json.Unmarshal(decodeResponse(t, msgs[0]).Payload, &st); err != nil {
		t.Fatal(err)
	}
	if st.Config != "rate=9" {
		t.Errorf("notified config = %q, want %q", st.Config, "rate=9")
	}
}

func TestObserveLimitPerDevice(t *testing.T) {
	a := newTestApp(t, Options{})
	postTelemetry(t, a, "a", "r0")
	for i := range maxObserversPerDevice {
		resp := registerState(t, a, "a", newFakeObserver())
		if !resp.Options.HasOption(message.Observe) {
			t.Fatalf("registration %d has no Observe option", i)
		}
	}
	extra := newFakeObserver()
	resp := registerState(t, a, "a", extra)
	if resp.Code != codes.Content {
		t.Errorf("code = %v, want %v", resp.Code, codes.Content)
	}
	if resp.Options.HasOption(message.Observe) {
		t.Errorf("registration beyond the limit carries Observe")
	}
	postTelemetry(t, a, "a", "r1")
	if n := len(extra.messages()); n != 0 {
		t.Errorf("observer beyond the limit got %d notifications, want 0", n)
	}
}

func TestObserverDroppedWhenNotifyFails(t *testing.T) {
	a := newTestApp(t, Options{})
	postTelemetry(t, a, "a", "r0")
	failing, healthy := newFakeObserver(), newFakeObserver()
	registerState(t, a, "a", failing)
	registerState(t, a, "a", healthy)
	failing.failing.Store(true)

	postTelemetry(t, a, "a", "r1")
	if n := a.observers.count("a"); n != 1 {
		t.Errorf("%d observers kept, want 1", n)
	}
	failing.failing.Store(false)
	postTelemetry(t, a, "a", "r2")
	if n := len(failing.messages()); n != 0 {
		t.Errorf("dropped observer got %d notifications, want 0", n)
	}
	if n := len(healthy.messages()); n != 2 {
		t.Errorf("healthy observer got %d notifications, want 2", n)
	}
}

func TestRunPrunesEndedObservers(t *testing.T) {
	a := newTestApp(t, Options{})
	postTelemetry(t, a, "a", "r0")
	obs := newFakeObserver()
	registerState(t, a, "a", obs)

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		a.Run(ctx)
	}()
	defer func() {
		cancel()
		<-stopped
	}()

	obs.Close()
	waitFor(t, 10*time.Second, "ended observer to be pruned", func() bool {
		return a.observers.count("a") == 0
	})
}

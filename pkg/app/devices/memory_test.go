package devices

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/shardgate/shardgate/pkg/app"
)

// TestMemoryPerIdleDevice checks that a million idle devices with a short
// last payload fit in 1 GiB, measured on 100,000 of them.
func TestMemoryPerIdleDevice(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 100,000 devices; skipped in -short mode")
	}
	const devices = 100_000
	const budget = (1 << 30) / 1_000_000 // bytes per device

	a := newTestApp(t, Options{})
	before := heapInUse()
	ctx := context.Background()
	for i := range devices {
		id := fmt.Sprintf("dev-%07d", i)
		data := encodeRequest(t, reqSpec{code: codes.POST, path: "/d/" + id + "/telemetry", payload: []byte("t=21.5")})
		if _, err := a.Serve(ctx, &app.Request{Proto: app.CoAP, Key: id, Message: data}); err != nil {
			t.Fatal(err)
		}
	}
	after := heapInUse()
	if n := a.Sessions(); n != devices {
		t.Fatalf("Sessions() = %d, want %d", n, devices)
	}

	perDevice := int64(after-before) / devices
	t.Logf("%d bytes per idle device", perDevice)
	if perDevice > budget {
		t.Errorf("%d bytes per idle device, want at most %d", perDevice, budget)
	}
	runtime.KeepAlive(a)
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

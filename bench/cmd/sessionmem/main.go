// Command sessionmem measures the heap a worker's reference application
// needs per idle device session: it stores N devices, each after one
// telemetry POST of a short payload, and prints heap bytes per session.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/shardgate/shardgate/pkg/app"
	"github.com/shardgate/shardgate/pkg/app/devices"
)

type result struct {
	Sessions        int     `json:"sessions"`
	HeapBytes       uint64  `json:"heap_bytes"`
	BytesPerSession float64 `json:"bytes_per_session"`
	Seconds         float64 `json:"seconds"`
}

func main() {
	n := flag.Int("sessions", 1_000_000, "device sessions to store")
	payload := flag.String("payload", "t=21.5", "telemetry payload of each device")
	flag.Parse()
	if *n < 1 || *n > 10_000_000 {
		fmt.Fprintf(os.Stderr, "sessionmem: invalid -sessions %d: want 1 to 10000000\n", *n)
		os.Exit(2)
	}
	res, err := measure(*n, []byte(*payload))
	if err != nil {
		fmt.Fprintln(os.Stderr, "sessionmem:", err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
}

func measure(n int, payload []byte) (result, error) {
	a := devices.New(devices.Options{WorkerName: "bench", IdleTimeout: time.Hour})
	start := time.Now()
	before := heap()
	buf := make([]byte, 256)
	ctx := context.Background()
	for i := range n {
		id := fmt.Sprintf("dev-%08d", i)
		msg, err := post(buf, id, payload)
		if err != nil {
			return result{}, err
		}
		if _, err := a.Serve(ctx, &app.Request{Proto: app.CoAP, Key: id, Message: msg}); err != nil {
			return result{}, fmt.Errorf("store device %s: %w", id, err)
		}
	}
	after := heap()
	if got := a.Sessions(); got != n {
		return result{}, fmt.Errorf("stored %d sessions, want %d", got, n)
	}
	runtime.KeepAlive(a)
	used := after - before
	return result{Sessions: n, HeapBytes: used, BytesPerSession: float64(used) / float64(n),
		Seconds: time.Since(start).Seconds()}, nil
}

// post encodes POST /d/{id}/telemetry into buf.
func post(buf []byte, id string, payload []byte) ([]byte, error) {
	m := message.Message{Code: codes.POST, Type: message.Confirmable, MessageID: 1, Payload: payload,
		Options: message.Options{
			{ID: message.URIPath, Value: []byte("d")},
			{ID: message.URIPath, Value: []byte(id)},
			{ID: message.URIPath, Value: []byte("telemetry")},
		}}
	n, err := coder.DefaultCoder.Encode(m, buf)
	if err != nil {
		return nil, fmt.Errorf("encode POST for %s: %w", id, err)
	}
	return buf[:n], nil
}

func heap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

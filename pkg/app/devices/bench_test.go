package devices

import (
	"context"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/shardgate/shardgate/pkg/app"
)

func benchmarkServe(b *testing.B, spec reqSpec) {
	a := newTestApp(b, Options{})
	setup := reqSpec{code: codes.POST, path: "/d/bench/telemetry", payload: []byte(`{"t":21.5}`)}
	do(b, a, "bench", setup)
	req := &app.Request{Proto: app.CoAP, Key: "bench", Message: encodeRequest(b, spec)}
	ctx := context.Background()

	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Serve(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPostTelemetry(b *testing.B) {
	benchmarkServe(b, reqSpec{
		code:    codes.POST,
		path:    "/d/bench/telemetry",
		token:   token,
		payload: []byte(`{"t":21.5}`),
	})
}

func BenchmarkGetState(b *testing.B) {
	benchmarkServe(b, reqSpec{code: codes.GET, path: "/d/bench/state", token: token})
}

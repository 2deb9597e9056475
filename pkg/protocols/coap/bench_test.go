package coap

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardgate/shardgate/pkg/metrics"
)

// echoForwarder replies synchronously with a fixed 2.04 for the request's
// token, so the benchmark measures the endpoint alone.
type echoForwarder struct{ resp []byte }

func (f *echoForwarder) Forward(key, msg []byte, observe uint64, r Responder) (string, error) {
	tkl := int(msg[0] & 0xF)
	f.resp = append(f.resp[:0], msg[0], uint8(codes.Changed), 0, 0)
	f.resp = append(f.resp, msg[4:4+tkl]...)
	r.Respond(f.resp, nil)
	return "w", nil
}

func (f *echoForwarder) CancelObserve(string, []byte, uint64) {}

// BenchmarkForwardPath runs CON POSTs from many source ports through the
// endpoint: decode, duplicate check, key, forward, piggybacked reply. Each
// (port, Message ID) pair is new, and the reply is a real sendto on
// loopback, which dominates the time. The exchange cache is small so the
// benchmark reaches the steady state, where exchange records are recycled.
func BenchmarkForwardPath(b *testing.B) {
	e, err := New(Options{Addr: "127.0.0.1:0", Forwarder: &echoForwarder{}, Metrics: metrics.New(prometheus.NewRegistry()),
		MaxExchanges: 16384, PiggybackWait: 10 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Listen(); err != nil {
		b.Fatal(err)
	}
	// Serve runs the timers that take exchanges off the Empty-ACK list,
	// which is what lets them be recycled.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Serve(ctx)
	sc := &scratch{msg: message.Message{Options: make(message.Options, 0, maxOptions)}, key: make([]byte, 0, 64)}
	req := request(typeCON, codes.POST, 0, []byte{1, 2, 3, 4}, "d/device-0042/telemetry", nil, make([]byte, 100))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req[2], req[3] = byte(i>>8), byte(i)
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(20000+i%64+64*(i>>16)))
		e.handle(req, from, sc)
	}
}

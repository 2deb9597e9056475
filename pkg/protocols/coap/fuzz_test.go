package coap

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardgate/shardgate/pkg/metrics"
)

// fuzzSeeds are hand-built requests of the kinds devices send (GET, POST,
// an Observe registration, a Block1 upload), the RFC 7252 ping, and the
// malformed cases of the endpoint tests.
func fuzzSeeds(f *testing.F) {
	for _, s := range []string{
		"40017b2fb164036b657906737461746573",                                     // CON GET /d/key/state
		"5002a1b2b164036465763109746500656c656d65747279ff3231",                   // NON POST /d/dev1/telemetry "21"
		"4101c1c1aa60b164046f627307737461746573",                                 // CON GET Observe=0 token aa
		"40034c4db164036f627306636f6e666967d10a0affffffffffffffffffffffffffffff", // PUT Block1
		"40001234", // ping
		"60001234", // Empty ACK
	} {
		f.Add(mustHex(s))
	}
	for _, tc := range malformed {
		f.Add(mustHex(tc.hex))
	}
}

// FuzzDecode checks that decode never panics and that what it accepts
// encodes back to a message that decodes to the same fields.
func FuzzDecode(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m := message.Message{Options: make(message.Options, 0, maxOptions)}
		if err := decode(b, &m); err != nil {
			return
		}
		out := appendMessage(nil, uint8(m.Type), m.Code, uint16(m.MessageID), m.Token, m.Options, m.Payload)
		back := message.Message{Options: make(message.Options, 0, maxOptions)}
		if err := decode(out, &back); err != nil {
			t.Fatalf("re-encoded %x as %x, which does not decode: %v", b, out, err)
		}
		if back.Code != m.Code || !bytes.Equal(back.Token, m.Token) || !bytes.Equal(back.Payload, m.Payload) || len(back.Options) != len(m.Options) {
			t.Fatalf("round trip of %x changed the message: %v -> %v", b, &m, &back)
		}
	})
}

// FuzzHandle feeds datagrams through the whole endpoint path with a
// forwarder that replies at once. Replies go to a loopback port nobody
// reads.
func FuzzHandle(f *testing.F) {
	fuzzSeeds(f)
	e, err := New(Options{Addr: "127.0.0.1:0", Forwarder: &fakeForwarder{}, Metrics: metrics.New(prometheus.NewRegistry()), MaxExchanges: 1024})
	if err != nil {
		f.Fatal(err)
	}
	if err := e.Listen(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(e.Close)
	from := netip.MustParseAddrPort("127.0.0.1:9")
	sc := &scratch{msg: message.Message{Options: make(message.Options, 0, maxOptions)}}
	f.Fuzz(func(t *testing.T, b []byte) {
		e.handle(b, from, sc)
		// Notify for any id must be harmless too.
		e.Notify(1, b)
	})
}

// Golden encodings of the messages the gateway builds itself, named after
// the RFC 7252 and RFC 7959 rules they follow.
func TestGatewayEncodingsGolden(t *testing.T) {
	cases := []struct {
		name string
		got  []byte
		want string
	}{
		{"Empty ACK, §4.2", empty(nil, typeACK, 0xBEEF), "6000beef"},
		{"RST, §4.3", empty(nil, typeRST, 0x0001), "70000001"},
		{"4.02 with diagnostic payload, §5.4.1", appendMessage(nil, typeACK, codes.BadOption, 0x0102, []byte{0xAA}, nil, []byte("x")), "6182" + "0102aaff78"},
		{"2.31 Continue echoing Block1 NUM 1 M SZX 2, RFC 7959 §2.3", appendMessage(nil, typeACK, codes.Continue, 7, nil,
			message.Options{{ID: optBlock1, Value: uintValue(block{num: 1, more: true, szx: 2}.value())}}, nil), "605f0007" + "d10e1a"},
		{"5.03 with Max-Age 1, §5.9.3.4", appendMessage(nil, typeACK, codes.ServiceUnavailable, 9, nil,
			message.Options{{ID: optMaxAge, Value: []byte{1}}}, nil), "60a30009" + "d10101"},
		{"option delta 269 needs two extension bytes, §3.1", appendMessage(nil, typeCON, codes.GET, 1, nil,
			message.Options{{ID: 300, Value: nil}}, nil), "40010001" + "e0001f"},
	}
	for _, tc := range cases {
		if g := hexString(tc.got); g != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, g, tc.want)
		}
		m := message.Message{Options: make(message.Options, 0, maxOptions)}
		if err := decode(tc.got, &m); err != nil {
			t.Errorf("%s: %s does not decode: %v", tc.name, tc.want, err)
		}
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

package coap

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardgate/shardgate/pkg/config"
	"github.com/shardgate/shardgate/pkg/metrics"
)

// fakeForwarder answers every request in-process: it echoes the request's
// token with 2.05 and a payload naming the key, after delay.
type fakeForwarder struct {
	mu       sync.Mutex
	delay    time.Duration
	err      error
	payload  []byte
	keys     []string
	bodies   [][]byte
	observes []uint64
	cancels  []uint64
	// forwardErr makes Forward itself return err instead of Respond.
	forwardErr bool
}

func (f *fakeForwarder) Forward(key, msg []byte, observe uint64, r Responder) (string, error) {
	f.mu.Lock()
	f.keys = append(f.keys, string(key))
	f.observes = append(f.observes, observe)
	delay, ferr, payload := f.delay, f.err, f.payload
	immediate := f.forwardErr
	f.mu.Unlock()
	if immediate && ferr != nil {
		return "", ferr
	}
	var m message.Message
	m.Options = make(message.Options, 0, maxOptions)
	if err := decode(msg, &m); err != nil {
		return "", err
	}
	f.mu.Lock()
	f.bodies = append(f.bodies, append([]byte(nil), m.Payload...))
	f.mu.Unlock()
	if payload == nil {
		payload = append([]byte("key="), key...)
	}
	var opts message.Options
	if observe != 0 {
		opts = message.Options{{ID: optObserve, Value: []byte{1}}}
	}
	resp := appendMessage(nil, typeACK, codes.Content, 0, m.Token, opts, payload)
	go func() {
		time.Sleep(delay)
		if ferr != nil {
			r.Respond(nil, ferr)
			return
		}
		r.Respond(resp, nil)
	}()
	return "worker-a", nil
}

func (f *fakeForwarder) CancelObserve(_ string, _ []byte, id uint64) {
	f.mu.Lock()
	f.cancels = append(f.cancels, id)
	f.mu.Unlock()
}

func (f *fakeForwarder) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.keys)
}

func startEndpoint(t *testing.T, fw Forwarder, tweak func(*Options)) (*Endpoint, *net.UDPConn) {
	t.Helper()
	opts := Options{Addr: "127.0.0.1:0", Forwarder: fw, Metrics: metrics.New(prometheus.NewRegistry()),
		Key: config.CoAPKey{Kind: config.KeyPath, Prefix: []string{"d"}}, PiggybackWait: 200 * time.Millisecond,
		AckTimeout: 200 * time.Millisecond}
	if tweak != nil {
		tweak(&opts)
	}
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after shutdown, want nil", err)
		}
	})
	c, err := net.DialUDP("udp", nil, e.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return e, c
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// exchange sends b and returns the next datagram, or nil after wait.
func roundTrip(t *testing.T, c *net.UDPConn, b []byte, wait time.Duration) []byte {
	t.Helper()
	if b != nil {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	return receive(t, c, wait)
}

func receive(t *testing.T, c *net.UDPConn, wait time.Duration) []byte {
	t.Helper()
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func parse(t *testing.T, b []byte) *message.Message {
	t.Helper()
	m := &message.Message{Options: make(message.Options, 0, maxOptions)}
	if err := decode(b, m); err != nil {
		t.Fatalf("gateway sent an invalid message %x: %v", b, err)
	}
	return m
}

func request(typ uint8, code codes.Code, mid uint16, token []byte, path string, extra message.Options, payload []byte) []byte {
	var opts message.Options
	for _, seg := range bytes.Split([]byte(path), []byte("/")) {
		if len(seg) > 0 {
			opts = append(opts, message.Option{ID: optUriPath, Value: seg})
		}
	}
	opts = replaceOptions(opts, nil, extra...)
	return appendMessage(nil, typ, code, mid, token, opts, payload)
}

func TestPingGetsReset(t *testing.T) {
	_, c := startEndpoint(t, &fakeForwarder{}, nil)
	// RFC 7252 §4.3: an Empty CON with Message ID 0x1234.
	got := roundTrip(t, c, mustHex("40001234"), time.Second)
	if want := mustHex("70001234"); !bytes.Equal(got, want) {
		t.Fatalf("ping answer = %x, want RST %x", got, want)
	}
}

func TestPiggybackedResponse(t *testing.T) {
	fw := &fakeForwarder{}
	_, c := startEndpoint(t, fw, nil)
	got := roundTrip(t, c, request(typeCON, codes.GET, 0x0101, []byte{0xAA}, "d/dev7/state", nil, nil), time.Second)
	m := parse(t, got)
	if m.Type != message.Acknowledgement || m.MessageID != 0x0101 || m.Code != codes.Content {
		t.Fatalf("response = %v, want ACK 2.05 with MID 0x0101", m)
	}
	if !bytes.Equal(m.Token, []byte{0xAA}) || string(m.Payload) != "key=dev7" {
		t.Fatalf("token %x payload %q, want aa and key=dev7", m.Token, m.Payload)
	}
}

func TestDuplicateNotForwardedAgain(t *testing.T) {
	fw := &fakeForwarder{}
	_, c := startEndpoint(t, fw, nil)
	req := request(typeCON, codes.POST, 0x0202, []byte{1, 2}, "d/dup/telemetry", nil, []byte("x"))
	first := roundTrip(t, c, req, time.Second)
	second := roundTrip(t, c, req, time.Second)
	if !bytes.Equal(first, second) {
		t.Fatalf("duplicate got %x, first reply was %x", second, first)
	}
	if n := fw.count(); n != 1 {
		t.Fatalf("forwarded %d times, want 1", n)
	}
}

func TestDuplicateInProgressGetsEmptyAck(t *testing.T) {
	fw := &fakeForwarder{delay: 600 * time.Millisecond}
	_, c := startEndpoint(t, fw, func(o *Options) { o.PiggybackWait = 5 * time.Second })
	req := request(typeCON, codes.GET, 0x0303, []byte{9}, "d/slow/state", nil, nil)
	c.Write(req)
	ack := roundTrip(t, c, req, time.Second)
	if want := mustHex("60000303"); !bytes.Equal(ack, want) {
		t.Fatalf("duplicate in progress got %x, want Empty ACK %x", ack, want)
	}
	sep := parse(t, receive(t, c, 2*time.Second))
	if sep.Type != message.Confirmable || sep.Code != codes.Content || !bytes.Equal(sep.Token, []byte{9}) {
		t.Fatalf("separate response = %v, want CON 2.05 token 09", sep)
	}
	if n := fw.count(); n != 1 {
		t.Fatalf("forwarded %d times, want 1", n)
	}
}

func TestSlowWorkerSeparateResponseRetransmitted(t *testing.T) {
	fw := &fakeForwarder{delay: 400 * time.Millisecond}
	_, c := startEndpoint(t, fw, nil)
	ack := roundTrip(t, c, request(typeCON, codes.GET, 0x0404, []byte{7}, "d/s/state", nil, nil), time.Second)
	if want := mustHex("60000404"); !bytes.Equal(ack, want) {
		t.Fatalf("got %x, want Empty ACK %x after PiggybackWait", ack, want)
	}
	first := parse(t, receive(t, c, 2*time.Second))
	if first.Type != message.Confirmable || first.Code != codes.Content {
		t.Fatalf("separate response = %v, want CON 2.05", first)
	}
	// Not acknowledged: the same CON comes again after ACK_TIMEOUT.
	again := parse(t, receive(t, c, 2*time.Second))
	if again.MessageID != first.MessageID {
		t.Fatalf("retransmission MID %d, want %d", again.MessageID, first.MessageID)
	}
	c.Write(empty(nil, typeACK, uint16(first.MessageID)))
	if extra := receive(t, c, 800*time.Millisecond); extra != nil {
		t.Fatalf("got %x after ACK, want no more retransmissions", extra)
	}
}

func TestNonRequestGetsNonResponse(t *testing.T) {
	_, c := startEndpoint(t, &fakeForwarder{}, nil)
	m := parse(t, roundTrip(t, c, request(typeNON, codes.GET, 0x0505, []byte{5}, "d/n/state", nil, nil), time.Second))
	if m.Type != message.NonConfirmable || m.Code != codes.Content {
		t.Fatalf("response = %v, want NON 2.05", m)
	}
}

func TestUnknownCriticalOption(t *testing.T) {
	fw := &fakeForwarder{}
	_, c := startEndpoint(t, fw, nil)
	extra := message.Options{{ID: 65001, Value: []byte("x")}}
	m := parse(t, roundTrip(t, c, request(typeCON, codes.GET, 0x0606, []byte{6}, "d/o/state", extra, nil), time.Second))
	if m.Type != message.Acknowledgement || m.Code != codes.BadOption {
		t.Fatalf("response = %v, want ACK 4.02", m)
	}
	if got := roundTrip(t, c, request(typeNON, codes.GET, 0x0607, []byte{6}, "d/o/state", extra, nil), 300*time.Millisecond); got != nil {
		t.Fatalf("NON with unknown critical option got %x, want silence", got)
	}
	elective := message.Options{{ID: 65000, Value: []byte("x")}}
	m = parse(t, roundTrip(t, c, request(typeCON, codes.GET, 0x0608, []byte{6}, "d/o/state", elective, nil), time.Second))
	if m.Code != codes.Content {
		t.Fatalf("unknown elective option: %v, want 2.05", m)
	}
	if n := fw.count(); n != 1 {
		t.Fatalf("forwarded %d requests, want only the elective one", n)
	}
}

// Malformed datagrams, each named after the format error it carries
// (RFC 7252 §3). A CON gets RST; anything else is dropped.
var malformed = []struct {
	name string
	hex  string
	rst  bool
}{
	{"token length 9", "49011001" + "010203040506070809", true},
	{"token length 15", "4F011002", true},
	{"option delta nibble 15", "40011003F0", true},
	{"option length nibble 15", "400110030F", true},
	{"truncated option header", "40011004D0", true},
	{"option value past end", "4001100504616263", true},
	{"payload marker without payload", "40021006FF", true},
	{"version 2", "80011007", true},
	{"version 0", "00011008", true},
	{"empty message with token", "4100100901", true},
	{"reserved code class 1", "40201010", true},
	{"NON token length 9", "59011011" + "010203040506070809", false},
	{"NON payload marker without payload", "50021012FF", false},
	{"ACK option delta 15", "6001101EF0", false},
	{"RST with payload marker", "70001013FF", false},
	{"three bytes", "400110", false},
}

func TestMalformedDatagrams(t *testing.T) {
	fw := &fakeForwarder{}
	_, c := startEndpoint(t, fw, nil)
	for _, tc := range malformed {
		t.Run(tc.name, func(t *testing.T) {
			b := mustHex(tc.hex)
			got := roundTrip(t, c, b, 300*time.Millisecond)
			if !tc.rst {
				if got != nil {
					t.Fatalf("got %x, want silence", got)
				}
				return
			}
			want := []byte{0x70, 0, b[2], b[3]}
			if !bytes.Equal(got, want) {
				t.Fatalf("got %x, want RST %x", got, want)
			}
		})
	}
	if n := fw.count(); n != 0 {
		t.Fatalf("forwarded %d malformed requests", n)
	}
	m := parse(t, roundTrip(t, c, request(typeCON, codes.GET, 0x0707, nil, "d/after/state", nil, nil), time.Second))
	if m.Code != codes.Content {
		t.Fatalf("after malformed input: %v, want 2.05", m)
	}
}

func TestSessionKeyPlaces(t *testing.T) {
	cases := []struct {
		flag, path string
		query      string
		want       string
	}{
		{"path:/d/{id}", "d/abc/state", "", "abc"},
		{"path:/d/{id}", "x/abc/state", "", "127.0.0.1:"},
		{"path:/a/b/{id}", "a/b/k9/x", "", "k9"},
		{"query:ep", "rd", "ep=node-7", "node-7"},
		{"query:ep", "rd", "lt=60", "127.0.0.1:"},
		{"source", "d/abc/state", "", "127.0.0.1:"},
	}
	for _, tc := range cases {
		t.Run(tc.flag+" "+tc.path, func(t *testing.T) {
			key, err := config.ParseCoAPKey(tc.flag)
			if err != nil {
				t.Fatal(err)
			}
			fw := &fakeForwarder{}
			_, c := startEndpoint(t, fw, func(o *Options) { o.Key = key })
			var extra message.Options
			if tc.query != "" {
				extra = message.Options{{ID: optUriQuery, Value: []byte(tc.query)}}
			}
			roundTrip(t, c, request(typeCON, codes.GET, 1, nil, tc.path, extra, nil), time.Second)
			fw.mu.Lock()
			defer fw.mu.Unlock()
			if len(fw.keys) != 1 || !bytes.HasPrefix([]byte(fw.keys[0]), []byte(tc.want)) {
				t.Fatalf("keys %q, want one starting %q", fw.keys, tc.want)
			}
		})
	}
}

func block1Option(num uint32, more bool, szx uint8) message.Option {
	return message.Option{ID: optBlock1, Value: uintValue(block{num: num, more: more, szx: szx}.value())}
}

func TestBlock1Upload(t *testing.T) {
	fw := &fakeForwarder{}
	_, c := startEndpoint(t, fw, nil)
	body := bytes.Repeat([]byte("0123456789abcdef"), 10) // 160 bytes in 64-byte blocks
	var last *message.Message
	for i := 0; i*64 < len(body); i++ {
		end := min((i+1)*64, len(body))
		more := end < len(body)
		req := request(typeCON, codes.PUT, uint16(0x1000+i), []byte{byte(i)}, "d/big/config",
			message.Options{block1Option(uint32(i), more, 2)}, body[i*64:end])
		last = parse(t, roundTrip(t, c, req, time.Second))
		if more && last.Code != codes.Continue {
			t.Fatalf("block %d: %v, want 2.31 Continue", i, last)
		}
	}
	if last.Code != codes.Content {
		t.Fatalf("last block: %v, want the worker's 2.05", last)
	}
	if v, ok := uintOption(last.Options, optBlock1); !ok || parseBlock(v).num != 2 || parseBlock(v).more {
		t.Fatalf("final response Block1 = %d %v, want NUM 2 without M", v, ok)
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if len(fw.bodies) != 1 || !bytes.Equal(fw.bodies[0], body) {
		t.Fatalf("worker got %d bodies, want the 160-byte body once", len(fw.bodies))
	}
}

func TestBlock1GapGets408(t *testing.T) {
	fw := &fakeForwarder{}
	_, c := startEndpoint(t, fw, nil)
	first := request(typeCON, codes.PUT, 0x2000, []byte{1}, "d/gap/config", message.Options{block1Option(0, true, 2)}, make([]byte, 64))
	if m := parse(t, roundTrip(t, c, first, time.Second)); m.Code != codes.Continue {
		t.Fatalf("block 0: %v, want 2.31", m)
	}
	skip := request(typeCON, codes.PUT, 0x2001, []byte{1}, "d/gap/config", message.Options{block1Option(2, false, 2)}, make([]byte, 10))
	if m := parse(t, roundTrip(t, c, skip, time.Second)); m.Code != codes.RequestEntityIncomplete {
		t.Fatalf("block 2 after block 0: %v, want 4.08", m)
	}
	if n := fw.count(); n != 0 {
		t.Fatalf("forwarded %d requests, want 0", n)
	}
}

func TestBlock2Download(t *testing.T) {
	body := bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz012345"), 80) // 2560 bytes
	fw := &fakeForwarder{payload: body}
	_, c := startEndpoint(t, fw, nil)
	var got []byte
	for num := uint32(0); ; num++ {
		opt := message.Option{ID: optBlock2, Value: uintValue(block{num: num, szx: 6}.value())}
		m := parse(t, roundTrip(t, c, request(typeCON, codes.GET, uint16(0x3000+num), []byte{3}, "d/b2/state", message.Options{opt}, nil), time.Second))
		v, ok := uintOption(m.Options, optBlock2)
		if !ok {
			t.Fatalf("block %d: no Block2 in %v", num, m)
		}
		got = append(got, m.Payload...)
		if !parseBlock(v).more {
			break
		}
		if num > 10 {
			t.Fatal("too many blocks")
		}
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("assembled %d bytes, want the %d-byte body", len(got), len(body))
	}
	if n := fw.count(); n != 1 {
		t.Fatalf("forwarded %d times, want 1 (later blocks from the cache)", n)
	}
}

func TestObserveNotifyAndReset(t *testing.T) {
	fw := &fakeForwarder{}
	e, c := startEndpoint(t, fw, nil)
	reg := request(typeCON, codes.GET, 0x4000, []byte{0x0B}, "d/obs/state", message.Options{{ID: optObserve}}, nil)
	m := parse(t, roundTrip(t, c, reg, time.Second))
	if !hasOption(m.Options, optObserve) {
		t.Fatalf("registration response %v has no Observe", m)
	}
	fw.mu.Lock()
	id := fw.observes[0]
	fw.mu.Unlock()
	if id == 0 {
		t.Fatal("registration forwarded without an observation id")
	}
	note := appendMessage(nil, typeNON, codes.Content, 0, []byte{0x0B}, message.Options{{ID: optObserve, Value: []byte{2}}}, []byte("n1"))
	e.Notify(id, note)
	n := parse(t, receive(t, c, time.Second))
	if string(n.Payload) != "n1" || !bytes.Equal(n.Token, []byte{0x0B}) {
		t.Fatalf("notification %v, want payload n1 with the registration token", n)
	}
	c.Write(empty(nil, typeRST, uint16(n.MessageID)))
	if !waitFor(func() bool { fw.mu.Lock(); defer fw.mu.Unlock(); return len(fw.cancels) == 1 }) {
		t.Fatal("RST to a notification did not cancel the observation at the worker")
	}
	e.Notify(id, note)
	if got := receive(t, c, 300*time.Millisecond); got != nil {
		t.Fatalf("notification after cancel: %x", got)
	}
}

func TestObserveDeregisterWithGET(t *testing.T) {
	fw := &fakeForwarder{}
	e, c := startEndpoint(t, fw, nil)
	roundTrip(t, c, request(typeCON, codes.GET, 0x5000, []byte{0x0C}, "d/o2/state", message.Options{{ID: optObserve}}, nil), time.Second)
	roundTrip(t, c, request(typeCON, codes.GET, 0x5001, []byte{0x0C}, "d/o2/state", message.Options{{ID: optObserve, Value: []byte{1}}}, nil), time.Second)
	fw.mu.Lock()
	cancels, second := len(fw.cancels), fw.observes[1]
	fw.mu.Unlock()
	if cancels != 1 || second != 0 {
		t.Fatalf("cancels %d, second forward observe id %d; want 1 cancel and a plain GET", cancels, second)
	}
	if e.observes.len() != 0 {
		t.Fatalf("%d registrations left, want 0", e.observes.len())
	}
}

func TestWorkerLostDropsSoDeviceRetransmits(t *testing.T) {
	fw := &fakeForwarder{err: errors.New("link: connection closed")}
	_, c := startEndpoint(t, fw, nil)
	req := request(typeCON, codes.GET, 0x6000, []byte{1}, "d/lost/state", nil, nil)
	if got := roundTrip(t, c, req, 150*time.Millisecond); got != nil {
		t.Fatalf("got %x, want silence while the worker is lost", got)
	}
	fw.mu.Lock()
	fw.err = nil
	fw.mu.Unlock()
	if m := parse(t, roundTrip(t, c, req, time.Second)); m.Code != codes.Content {
		t.Fatalf("retransmission: %v, want 2.05 from the new owner", m)
	}
	if n := fw.count(); n != 2 {
		t.Fatalf("forwarded %d times, want 2", n)
	}
}

func TestNoOwnerGets503(t *testing.T) {
	fw := &fakeForwarder{err: ErrNoOwner}
	_, c := startEndpoint(t, fw, nil)
	m := parse(t, roundTrip(t, c, request(typeCON, codes.GET, 0x6100, nil, "d/x/state", nil, nil), time.Second))
	if m.Code != codes.ServiceUnavailable {
		t.Fatalf("got %v, want 5.03", m)
	}
}

func waitFor(cond func() bool) bool {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

package coap

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Each test here is a fault found by hand-driven testing, kept so it stays
// fixed.

func TestLostAfterEmptyAckGets503(t *testing.T) {
	fw := &fakeForwarder{delay: 400 * time.Millisecond, err: errors.New("link: connection closed")}
	_, c := startEndpoint(t, fw, nil)
	ack := roundTrip(t, c, request(typeCON, codes.POST, 0x7001, []byte{4}, "d/k/telemetry", nil, []byte("1")), time.Second)
	if want := mustHex("60007001"); !bytes.Equal(ack, want) {
		t.Fatalf("got %x, want Empty ACK %x", ack, want)
	}
	m := parse(t, receive(t, c, 2*time.Second))
	if m.Type != message.Confirmable || m.Code != codes.ServiceUnavailable || !bytes.Equal(m.Token, []byte{4}) {
		t.Fatalf("after the worker was lost: %v, want a separate CON 5.03 with the token", m)
	}
}

func TestBadKeyGets400(t *testing.T) {
	fw := &fakeForwarder{err: fmt.Errorf("%w: too long", ErrBadKey)}
	_, c := startEndpoint(t, fw, nil)
	m := parse(t, roundTrip(t, c, request(typeCON, codes.POST, 0x7002, nil, "d/k/telemetry", nil, nil), time.Second))
	if m.Code != codes.BadRequest {
		t.Fatalf("got %v, want 4.00", m)
	}
}

func TestDuplicateAfterSeparateGetsEmptyAck(t *testing.T) {
	fw := &fakeForwarder{delay: 300 * time.Millisecond}
	_, c := startEndpoint(t, fw, nil)
	req := request(typeCON, codes.GET, 0x7003, []byte{5}, "d/k/state", nil, nil)
	roundTrip(t, c, req, time.Second) // Empty ACK
	sep := parse(t, receive(t, c, 2*time.Second))
	c.Write(empty(nil, typeACK, uint16(sep.MessageID)))
	if got := roundTrip(t, c, req, time.Second); !bytes.Equal(got, mustHex("60007003")) {
		t.Fatalf("duplicate after the separate response got %x, want Empty ACK", got)
	}
}

func TestBlock2SixteenByteBlocks(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 100)
	fw := &fakeForwarder{payload: body}
	_, c := startEndpoint(t, fw, nil)
	opt := message.Option{ID: optBlock2, Value: uintValue(block{num: 0, szx: 0}.value())}
	m := parse(t, roundTrip(t, c, request(typeCON, codes.GET, 0x7004, nil, "d/k/state", message.Options{opt}, nil), time.Second))
	v, ok := uintOption(m.Options, optBlock2)
	if !ok || parseBlock(v).size() != 16 || len(m.Payload) != 16 {
		t.Fatalf("Block2 %v (%d), payload %d bytes; want 16-byte blocks as requested", parseBlock(v), v, len(m.Payload))
	}
}

func TestManyOptionsGets400(t *testing.T) {
	fw := &fakeForwarder{}
	_, c := startEndpoint(t, fw, nil)
	path := "d/k"
	for range 70 {
		path += "/s"
	}
	m := parse(t, roundTrip(t, c, request(typeCON, codes.GET, 0x7005, []byte{9}, path, nil, nil), time.Second))
	if m.Code != codes.BadRequest || m.MessageID != 0x7005 || !bytes.Equal(m.Token, []byte{9}) {
		t.Fatalf("got %v, want 4.00 echoing MID and token", m)
	}
}

func TestOversizedDatagramGets413(t *testing.T) {
	fw := &fakeForwarder{}
	_, c := startEndpoint(t, fw, nil)
	req := request(typeCON, codes.POST, 0x7006, []byte{1}, "d/k/telemetry", nil, make([]byte, 8000))
	m := parse(t, roundTrip(t, c, req, time.Second))
	if m.Code != codes.RequestEntityTooLarge {
		t.Fatalf("got %v, want 4.13", m)
	}
	if v, ok := uintOption(m.Options, optSize1); !ok || v != 1024 {
		t.Fatalf("Size1 = %d %v, want the block size 1024", v, ok)
	}
	if n := fw.count(); n != 0 {
		t.Fatalf("forwarded %d requests", n)
	}
}

func TestCriticalOptionBadLengthGets402(t *testing.T) {
	fw := &fakeForwarder{}
	_, c := startEndpoint(t, fw, nil)
	for i, opt := range []message.Option{
		{ID: optUriPort, Value: []byte{1, 2, 3, 4, 5}},
		{ID: optUriHost, Value: nil},
		{ID: optBlock1, Value: []byte{0, 0, 0, 0x0A}},
	} {
		m := parse(t, roundTrip(t, c, request(typeCON, codes.PUT, uint16(0x7100+i), nil, "d/k/config", message.Options{opt}, []byte("x")), time.Second))
		if m.Code != codes.BadOption {
			t.Errorf("option %d with %d bytes: %v, want 4.02", opt.ID, len(opt.Value), m)
		}
	}
	if n := fw.count(); n != 0 {
		t.Fatalf("forwarded %d requests", n)
	}
}

func TestObserveSequenceKeepsRising(t *testing.T) {
	fw := &fakeForwarder{}
	e, c := startEndpoint(t, fw, nil)
	reg := request(typeCON, codes.GET, 0x7200, []byte{0x0D}, "d/seq/state", message.Options{{ID: optObserve}}, nil)
	roundTrip(t, c, reg, time.Second)
	fw.mu.Lock()
	id := fw.observes[0]
	fw.mu.Unlock()
	last := uint32(1) // the fake worker's registration response carries Observe 1
	// A worker restarts its count when the observation moves to it.
	for _, workerSeq := range []byte{2, 3, 1, 2} {
		e.Notify(id, appendMessage(nil, typeNON, codes.Content, 0, []byte{0x0D},
			message.Options{{ID: optObserve, Value: []byte{workerSeq}}}, []byte("n")))
		m := parse(t, receive(t, c, time.Second))
		v, _ := uintOption(m.Options, optObserve)
		if v <= last {
			t.Fatalf("Observe %d after %d, want a rising sequence", v, last)
		}
		last = v
	}
}

func TestObservationLimitPerPeer(t *testing.T) {
	fw := &fakeForwarder{}
	_, c := startEndpoint(t, fw, nil)
	for i := range maxObservationsPerPeer + 1 {
		tok := []byte{byte(i), 0xEE}
		roundTrip(t, c, request(typeCON, codes.GET, uint16(0x7300+i), tok, "d/lim/state", message.Options{{ID: optObserve}}, nil), time.Second)
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if got := fw.observes[maxObservationsPerPeer]; got != 0 {
		t.Fatalf("registration %d from one endpoint forwarded with observation id %d, want a plain GET", maxObservationsPerPeer+1, got)
	}
	if got := fw.observes[maxObservationsPerPeer-1]; got == 0 {
		t.Fatalf("registration %d was refused, want it kept", maxObservationsPerPeer)
	}
}

func TestUploadLimitPerPeer(t *testing.T) {
	fw := &fakeForwarder{}
	_, c := startEndpoint(t, fw, nil)
	for i := range maxUploadsPerPeer + 1 {
		req := request(typeCON, codes.PUT, uint16(0x7400+i), nil, fmt.Sprintf("d/u%d/config", i),
			message.Options{block1Option(0, true, 0)}, make([]byte, 16))
		m := parse(t, roundTrip(t, c, req, time.Second))
		want := codes.Continue
		if i == maxUploadsPerPeer {
			want = codes.ServiceUnavailable
		}
		if m.Code != want {
			t.Fatalf("upload %d: %v, want %v", i+1, m, want)
		}
	}
}

func TestFailedObservationMoveTellsDevice(t *testing.T) {
	fw := &fakeForwarder{}
	e, c := startEndpoint(t, fw, nil)
	reg := request(typeCON, codes.GET, 0x7500, []byte{0x0E}, "d/mv/state", message.Options{{ID: optObserve}}, nil)
	roundTrip(t, c, reg, time.Second)
	fw.mu.Lock()
	fw.err = ErrOverloaded
	fw.forwardErr = true
	fw.mu.Unlock()
	e.Reroute(func([]byte) string { return "worker-b" })
	m := parse(t, receive(t, c, time.Second))
	if m.Code != codes.ServiceUnavailable || !bytes.Equal(m.Token, []byte{0x0E}) {
		t.Fatalf("after a failed move: %v, want a 5.03 notification with the registration token", m)
	}
	if n := e.observes.len(); n != 0 {
		t.Fatalf("%d registrations left, want 0", n)
	}
}

// TestLastBlockRetransmitAfterLostWorker loses the worker while the last
// Block1 block is forwarded. The device's retransmission of that block must
// forward the whole body again, not get 4.08 for a discarded upload.
func TestLastBlockRetransmitAfterLostWorker(t *testing.T) {
	fw := &fakeForwarder{}
	_, c := startEndpoint(t, fw, nil)
	body := bytes.Repeat([]byte("block-wise body "), 8) // 128 bytes in 64-byte blocks
	first := request(typeCON, codes.PUT, 0x7100, []byte{1}, "d/up/config",
		message.Options{block1Option(0, true, 2)}, body[:64])
	if m := parse(t, roundTrip(t, c, first, time.Second)); m.Code != codes.Continue {
		t.Fatalf("first block: %v, want 2.31 Continue", m)
	}

	fw.mu.Lock()
	fw.err = errors.New("link: connection closed")
	fw.mu.Unlock()
	last := request(typeCON, codes.PUT, 0x7101, []byte{2}, "d/up/config",
		message.Options{block1Option(1, false, 2)}, body[64:])
	if got := roundTrip(t, c, last, 150*time.Millisecond); got != nil {
		t.Fatalf("got %x, want silence while the worker is lost", got)
	}

	fw.mu.Lock()
	fw.err = nil
	fw.mu.Unlock()
	m := parse(t, roundTrip(t, c, last, time.Second))
	if m.Code != codes.Content {
		t.Fatalf("retransmitted last block: %v, want the worker's 2.05", m)
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if n := len(fw.bodies); n != 2 {
		t.Fatalf("worker got %d bodies, want 2 (the lost forward and the retry)", n)
	}
	if !bytes.Equal(fw.bodies[1], body) {
		t.Errorf("retry forwarded %d bytes, want the whole %d-byte body", len(fw.bodies[1]), len(body))
	}
}

// orderedForwarder responds to an observe registration and, in the same
// link read, sends the first notification, then flushes the read's batch.
type orderedForwarder struct {
	fakeForwarder
	e atomic.Pointer[Endpoint]
}

func (f *orderedForwarder) Forward(key, msg []byte, observe uint64, r Responder) (string, error) {
	if observe == 0 {
		return f.fakeForwarder.Forward(key, msg, observe, r)
	}
	var m message.Message
	m.Options = make(message.Options, 0, maxOptions)
	if err := decode(msg, &m); err != nil {
		return "", err
	}
	token := append([]byte(nil), m.Token...)
	go func() {
		resp := appendMessage(nil, typeACK, codes.Content, 0, token, message.Options{{ID: optObserve, Value: []byte{1}}}, []byte("registered"))
		r.Respond(resp, nil)
		note := appendMessage(nil, typeNON, codes.Content, 0, token, message.Options{{ID: optObserve, Value: []byte{2}}}, []byte("changed"))
		e := f.e.Load()
		e.Notify(observe, note)
		e.FlushResponses()
	}()
	return "worker-a", nil
}

// TestRegistrationResponseBeforeNotification delivers a registration's
// response and its first notification in one link read: the device must
// get the response first.
func TestRegistrationResponseBeforeNotification(t *testing.T) {
	fw := &orderedForwarder{}
	e, c := startEndpoint(t, fw, func(o *Options) { o.BatchResponses = true })
	fw.e.Store(e)
	reg := request(typeCON, codes.GET, 0x7200, []byte{0x0C}, "d/order/state", message.Options{{ID: optObserve}}, nil)
	first := parse(t, roundTrip(t, c, reg, time.Second))
	if first.Type != message.Acknowledgement || string(first.Payload) != "registered" {
		t.Fatalf("first message %v, want the ACK with the registration response", first)
	}
	second := parse(t, receive(t, c, time.Second))
	if string(second.Payload) != "changed" {
		t.Fatalf("second message %v, want the notification", second)
	}
}

package load

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/avp"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"github.com/fiorix/go-diameter/v4/diam/dict"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// The golden bytes are RFC 7252 §3 by hand: 0x48 = Ver 1, CON, TKL 8; code
// 0.01 GET; Message ID 0; eight zero token bytes; Uri-Path (option 11) "d"
// as 0xb1, then "7" and "state" with delta 0.
func TestCoAPTemplateGolden(t *testing.T) {
	got, err := encodeCoAP(message.Confirmable, codes.GET, "/d/7/state", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "48010000" + "0000000000000000" + "b164" + "0137" + "057374617465"
	if hex.EncodeToString(got) != want {
		t.Errorf("GET /d/7/state encodes as\n%x, want\n%s", got, want)
	}
}

func TestCoAPFillPatchesIDAndToken(t *testing.T) {
	cfg := Config{Payload: 40, CoAP: CoAPConfig{Confirmable: false, Method: "post",
		GetPath: "/d/{id}/state", PostPath: "/d/{id}/telemetry", Keys: 1}}
	tm, err := newCoAPTemplates(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := newFlow(&runner{cfg: cfg}, 3, 4, tm.newProto())
	s := &f.slots[2]
	s.gen = 0x01020304
	f.proto.fill(f, 2, s)

	m := message.Message{Options: make(message.Options, 0, 8)}
	if _, err := coder.DefaultCoder.Decode(s.buf, &m); err != nil {
		t.Fatalf("go-coap cannot decode the request %x: %v", s.buf, err)
	}
	if m.Type != message.NonConfirmable || m.Code != codes.POST {
		t.Errorf("type %v code %v, want NON POST", m.Type, m.Code)
	}
	if uint16(m.MessageID) != s.mid {
		t.Errorf("Message ID %d, want %d", m.MessageID, s.mid)
	}
	if want := "0000000201020304"; hex.EncodeToString(m.Token) != want {
		t.Errorf("token %x, want %s (slot 2, generation 0x01020304)", m.Token, want)
	}
	if p, _ := m.Options.Path(); p != "/d/0/telemetry" {
		t.Errorf("path %q, want /d/0/telemetry", p)
	}
	if cf, err := m.Options.ContentFormat(); err != nil || cf != message.AppJSON {
		t.Errorf("Content-Format %v (%v), want application/json", cf, err)
	}
}

// A CCR built by the hand encoder must read back through go-diameter with
// the same values.
func TestCCRDecodesWithGoDiameter(t *testing.T) {
	p := &diamProto{cfg: DiameterConfig{App: "cc", Updates: 1, OriginHost: "lg.test",
		OriginRealm: "test", DestRealm: "shardgate.local"}, ccState: make([]ccSession, 2)}
	f := newFlow(&runner{}, 0, 2, p)
	s := &f.slots[1]
	s.gen = 7
	var types []uint32
	for range 3 {
		p.fill(f, 1, s)
		m, err := diam.ReadMessage(bytes.NewReader(s.buf), dict.Default)
		if err != nil {
			t.Fatalf("go-diameter rejects %x: %v", s.buf, err)
		}
		if m.Header.CommandCode != diam.CreditControl || m.Header.ApplicationID != 4 {
			t.Fatalf("command %d app %d, want 272 / 4", m.Header.CommandCode, m.Header.ApplicationID)
		}
		if m.Header.HopByHopID != 1<<16|7 {
			t.Errorf("Hop-by-Hop %#x, want slot 1 generation 7", m.Header.HopByHopID)
		}
		sid, err := m.FindAVP(avp.SessionID, 0)
		if err != nil || sid.Data.(datatype.UTF8String) != "lg.test;0;1" {
			t.Errorf("Session-Id %v (%v), want lg.test;0;1", sid, err)
		}
		rt, err := m.FindAVP(avp.CCRequestType, 0)
		if err != nil {
			t.Fatalf("no CC-Request-Type: %v", err)
		}
		types = append(types, uint32(rt.Data.(datatype.Enumerated)))
	}
	if want := []uint32{1, 2, 3}; !equalU32(types, want) {
		t.Errorf("CC-Request-Type sequence %v, want %v (initial, update, termination)", types, want)
	}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// An answer built by go-diameter, with Result-Code after Session-Id as
// freeDiameter sends it, must yield its Result-Code.
func TestResultCodeFromGoDiameter(t *testing.T) {
	m := diam.NewMessage(diam.CreditControl, 0, 4, 1, 2, dict.Default)
	m.NewAVP(avp.SessionID, avp.Mbit, 0, datatype.UTF8String("a;b;c"))
	m.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("srv"))
	m.NewAVP(avp.ResultCode, avp.Mbit, 0, datatype.Unsigned32(5012))
	b, err := m.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	if rc := resultCode(b); rc != 5012 {
		t.Errorf("resultCode = %d, want 5012", rc)
	}
	h, err := parseDiamHeader(b)
	if err != nil || h.cmd != 272 || h.hbh != 1 || h.e2e != 2 || h.length != len(b) {
		t.Errorf("header %+v (%v), want command 272 hbh 1 e2e 2 length %d", h, err, len(b))
	}
}

// Golden DWA: RFC 6733 §3 header (length 56 = 20 + 3 AVPs of 12) then
// Result-Code 2001, Origin-Host "a", Origin-Realm "b", each padded to 4 bytes.
func TestAnswerPeerGolden(t *testing.T) {
	r := &runner{cfg: Config{Diameter: DiameterConfig{OriginHost: "a", OriginRealm: "b"}}}
	f := newFlow(r, 0, 1, &diamProto{})
	w := &captureWire{}
	f.wire = w
	f.answerPeer(diamHeader{cmd: cmdDeviceWatchdog, hbh: 9, e2e: 10})
	want := "0100003800000118" + "00000000" + "00000009" + "0000000a" +
		"0000010c4000000c000007d1" + "0000010840000009" + "61000000" + "0000012840000009" + "62000000"
	if got := hex.EncodeToString(w.last); got != want {
		t.Errorf("DWA\n%s, want\n%s", got, want)
	}
}

type captureWire struct{ last []byte }

func (w *captureWire) queue(b []byte) { w.last = append([]byte(nil), b...) }
func (w *captureWire) flush() error   { return nil }

func FuzzResultCode(f *testing.F) {
	m := diam.NewMessage(diam.CreditControl, 0, 4, 1, 2, dict.Default)
	m.NewAVP(avp.SessionID, avp.Mbit, 0, datatype.UTF8String("s"))
	m.NewAVP(avp.ExperimentalResult, avp.Mbit, 0, &diam.GroupedAVP{AVP: []*diam.AVP{
		diam.NewAVP(avp.VendorID, avp.Mbit, 0, datatype.Unsigned32(10415)),
		diam.NewAVP(avp.ExperimentalResultCode, avp.Mbit, 0, datatype.Unsigned32(5030)),
	}})
	b, _ := m.Serialize()
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := parseDiamHeader(b); err != nil {
			return
		}
		resultCode(b) // must not panic on any AVP layout
	})
}

func FuzzCoAPResponse(f *testing.F) {
	ack := []byte{0x68, 0x45, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 'o', 'k'}
	f.Add(ack)
	f.Add([]byte{0x60, 0x00, 0x00, 0x01}) // empty ACK
	f.Add([]byte{0x70, 0x00, 0x00, 0x01}) // RST
	f.Add([]byte{0x48, 0x45, 0x12, 0x34, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	cfg := Config{Payload: 20, CoAP: CoAPConfig{Confirmable: true, Method: "get",
		GetPath: "/x", PostPath: "/y", Keys: 1}}
	tm, err := newCoAPTemplates(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &runner{cfg: cfg, endNs: 1 << 62, maxPerFlow: 10}
		fl := newFlow(r, 0, 2, tm.newProto())
		fl.wire = &captureWire{}
		if err := fl.start(); err != nil {
			t.Fatal(err)
		}
		fl.onDatagram(b, readNow(1))
		if len(b) >= 12 && binary.BigEndian.Uint32(b[4:]) >= 2 && fl.st.completed > 0 {
			t.Fatalf("completed a response for slot %d of 2", binary.BigEndian.Uint32(b[4:]))
		}
	})
}

package diameter

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/avp"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"github.com/fiorix/go-diameter/v4/diam/dict"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goldenCCR is a CCR-Initial as go-diameter v4.0.4 encodes it: Session-Id
// "s1", Origin-Host "c", Origin-Realm "r", Auth-Application-Id 4,
// CC-Request-Type 1, CC-Request-Number 0, hop-by-hop 0x11, end-to-end 0x22.
const goldenCCR = `
01 00005c c0 000110 00000004 00000011 00000022
00000107 40 00000a 7331 0000
00000108 40 000009 63 000000
00000128 40 000009 72 000000
00000102 40 00000c 00000004
000001a0 40 00000c 00000001
0000019f 40 00000c 00000000`

func goldenCCRMessage(t testing.TB) *diam.Message {
	m := diam.NewMessage(CmdCreditControl, diam.RequestFlag|diam.ProxiableFlag, AppCreditControl, 0x11, 0x22, dict.Default)
	m.NewAVP(avp.SessionID, avp.Mbit, 0, datatype.UTF8String("s1"))
	m.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("c"))
	m.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("r"))
	m.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(4))
	m.NewAVP(avp.CCRequestType, avp.Mbit, 0, datatype.Enumerated(1))
	m.NewAVP(avp.CCRequestNumber, avp.Mbit, 0, datatype.Unsigned32(0))
	return m
}

func TestGoldenCCRMatchesGoDiameter(t *testing.T) {
	want := unhex(t, goldenCCR)
	got, err := goldenCCRMessage(t).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("go-diameter encodes\n%x\ngolden is\n%x", got, want)
	}
}

func TestReadHeaderGoldenCCR(t *testing.T) {
	msg := unhex(t, goldenCCR)
	h, err := ReadHeader(msg)
	if err != nil {
		t.Fatal(err)
	}
	want := Header{Version: 1, Length: 92, Flags: FlagRequest | FlagProxiable, CommandCode: 272,
		AppID: 4, HopByHop: 0x11, EndToEnd: 0x22}
	if h != want {
		t.Fatalf("header = %+v, want %+v", h, want)
	}
	sid, ok, err := FindAVP(msg, AVPSessionID, 0)
	if err != nil || !ok || string(sid) != "s1" {
		t.Fatalf("Session-Id = %q %v %v, want s1", sid, ok, err)
	}
	typ, ok, err := FindAVP(msg, AVPCCRequestType, 0)
	if v, _ := Uint32(typ); err != nil || !ok || v != 1 {
		t.Fatalf("CC-Request-Type = %x %v %v, want 1", typ, ok, err)
	}
	if _, ok, err := FindAVP(msg, AVPUserName, 0); ok || err != nil {
		t.Fatalf("User-Name found=%v err=%v, want absent", ok, err)
	}
}

func TestFindAVPNoAllocs(t *testing.T) {
	msg := unhex(t, goldenCCR)
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = ReadHeader(msg)
		_, _, _ = FindAVP(msg, AVPCCRequestNumber, 0)
	})
	if allocs != 0 {
		t.Fatalf("ReadHeader+FindAVP allocate %.1f times, want 0", allocs)
	}
}

func TestInspectNoAllocs(t *testing.T) {
	msg := unhex(t, goldenCCR)
	r := router{keyCode: AVPSessionID, known: knownAVPs()}
	allocs := testing.AllocsPerRun(100, func() {
		var v verdict
		r.inspect(msg, &v)
	})
	if allocs != 0 {
		t.Fatalf("inspect allocates %.1f times, want 0", allocs)
	}
}

// Malformed headers: each cannot be framed, so the connection must close.
func TestReadHeaderMalformed(t *testing.T) {
	cases := []struct{ name, hex string }{
		{"length below header", "01 000010 80 000118 00000000 00000001 00000001"},
		{"length not multiple of 4", "01 000016 80 000118 00000000 00000001 00000001"},
		{"zero length", "01 000000 80 000118 00000000 00000001 00000001"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadHeader(unhex(t, c.hex))
			if !errors.Is(err, ErrBadLength) {
				t.Fatalf("err = %v, want ErrBadLength", err)
			}
		})
	}
	if _, err := ReadHeader(make([]byte, 19)); !errors.Is(err, ErrShortHeader) {
		t.Fatalf("19 bytes: err = %v, want ErrShortHeader", err)
	}
}

// Malformed AVPs inside a well-framed message: each yields 5014.
func TestInspectInvalidAVPLength(t *testing.T) {
	cases := []struct {
		name, hex  string
		wantFailed string
	}{
		{
			name: "AVP length shorter than its header",
			hex: `01 000024 80 000110 00000004 00000001 00000001
			      00000107 40 000006 0000 0000 00000000`,
			wantFailed: "00000107 40 000008",
		},
		{
			name: "vendor AVP length shorter than its 12-byte header",
			hex: `01 000020 80 000110 00000004 00000001 00000001
			      000003e8 c0 00000a 000028af`,
			wantFailed: "000003e8 c0 00000c 000028af",
		},
		{
			name: "AVP runs past the message",
			hex: `01 000024 80 000110 00000004 00000001 00000001
			      00000107 40 000040 73317373 73737373`,
			wantFailed: "00000107 40 000008",
		},
		{
			name: "trailing bytes shorter than an AVP header",
			hex: `01 000024 80 000110 00000004 00000001 00000001
			      00000107 40 00000a 7331 0000 00000108`,
			wantFailed: "00000108 00 000008",
		},
	}
	r := router{keyCode: AVPSessionID, known: knownAVPs()}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var v verdict
			r.inspect(unhex(t, c.hex), &v)
			if v.result != ResultInvalidAVPLength {
				t.Fatalf("result = %d, want 5014", v.result)
			}
			if want := unhex(t, c.wantFailed); !bytes.Equal(v.failed(), want) {
				t.Fatalf("Failed-AVP = %x, want %x", v.failed(), want)
			}
		})
	}
}

func TestInspectErrors(t *testing.T) {
	cases := []struct {
		name, hex  string
		result     uint32
		wantFailed string
	}{
		{
			name: "missing Session-Id",
			hex: `01 000020 80 000110 00000004 00000001 00000001
			      00000108 40 000009 63 000000`,
			result:     ResultMissingAVP,
			wantFailed: "00000107 40 000008",
		},
		{
			name: "unknown AVP with M bit",
			hex: `01 00002c 80 000110 00000004 00000001 00000001
			      00000107 40 00000a 7331 0000
			      0000fde8 40 00000c 00000001`,
			result:     ResultAVPUnsupported,
			wantFailed: "0000fde8 40 00000c 00000001",
		},
	}
	r := router{keyCode: AVPSessionID, known: knownAVPs()}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var v verdict
			r.inspect(unhex(t, c.hex), &v)
			if v.result != c.result {
				t.Fatalf("result = %d, want %d", v.result, c.result)
			}
			if want := unhex(t, c.wantFailed); !bytes.Equal(v.failed(), want) {
				t.Fatalf("Failed-AVP = %x, want %x", v.failed(), want)
			}
		})
	}
}

func TestInspectUnknownAVPWithoutMBitPasses(t *testing.T) {
	msg := unhex(t, `01 00002c 80 000110 00000004 00000001 00000001
	                 00000107 40 00000a 7331 0000
	                 0000fde8 00 00000c 00000001`)
	r := router{keyCode: AVPSessionID, known: knownAVPs()}
	var v verdict
	r.inspect(msg, &v)
	if v.result != 0 || string(v.key) != "s1" {
		t.Fatalf("result = %d key = %q, want 0 and s1", v.result, v.key)
	}
}

func TestInspectKeyAVPFallsBackToSessionID(t *testing.T) {
	code, vendor, err := resolveKeyAVP("User-Name")
	if err != nil {
		t.Fatal(err)
	}
	r := router{keyCode: code, keyVendor: vendor, known: knownAVPs()}
	var v verdict
	r.inspect(unhex(t, goldenCCR), &v)
	if string(v.key) != "s1" {
		t.Fatalf("key without User-Name = %q, want the Session-Id s1", v.key)
	}
	m := goldenCCRMessage(t)
	m.NewAVP(avp.UserName, avp.Mbit, 0, datatype.UTF8String("alice"))
	b, _ := m.Serialize()
	v = verdict{}
	r.inspect(b, &v)
	if string(v.key) != "alice" {
		t.Fatalf("key = %q, want User-Name alice", v.key)
	}
}

func TestResolveKeyAVPUnknownName(t *testing.T) {
	_, _, err := resolveKeyAVP("No-Such-AVP")
	if err == nil || !strings.Contains(err.Error(), `"No-Such-AVP"`) {
		t.Fatalf("err = %v, want one naming the AVP", err)
	}
}

// goldenDWA is the DWA the gateway sends for the DWR with identifiers 7/8:
// Result-Code 2001, Origin-Host "gw", Origin-Realm "realm", Origin-State-Id 5.
const goldenDWA = `
01 000048 00 000118 00000000 00000007 00000008
0000010c 40 00000c 000007d1
00000108 40 00000a 6777 0000
00000128 40 00000d 7265616c6d 000000
00000116 40 00000c 00000005`

func TestAppendBaseAnswerGoldenDWA(t *testing.T) {
	req := Header{Flags: FlagRequest, CommandCode: CmdDeviceWatchdog, HopByHop: 7, EndToEnd: 8}
	p := &peer{s: &Server{id: Identity{Host: "gw", Realm: "realm"}, stateID: 5}}
	got := p.appendBaseAnswer(nil, req, ResultSuccess, true)
	if want := unhex(t, goldenDWA); !bytes.Equal(got, want) {
		t.Fatalf("DWA =\n%x\nwant\n%x", got, want)
	}
	m, err := diam.ReadMessage(bytes.NewReader(got), dict.Default)
	if err != nil {
		t.Fatalf("go-diameter cannot parse the DWA: %v", err)
	}
	if m.Header.CommandCode != CmdDeviceWatchdog || m.Header.CommandFlags&diam.RequestFlag != 0 {
		t.Fatalf("go-diameter reads %v", m.Header)
	}
}

func TestRewriteAnswerMovesSessionIDFirst(t *testing.T) {
	// A worker answer with Result-Code before Session-Id, as go-diameter's
	// Answer() builds it, and the worker's own Origin-Host/Realm.
	worker := unhex(t, `01 000050 40 000110 00000004 000000aa 000000bb
	                    0000010c 40 00000c 000007d1
	                    00000107 40 00000a 7331 0000
	                    00000108 40 000009 77 000000
	                    00000128 40 000009 77 000000
	                    000001a0 40 00000c 00000001`)
	req := Header{Flags: FlagRequest | FlagProxiable, CommandCode: 272, AppID: 4, HopByHop: 0x11, EndToEnd: 0x22}
	got, result, err := RewriteAnswer(nil, worker, req, Identity{Host: "gw", Realm: "realm"})
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, `01 000054 40 000110 00000004 00000011 00000022
	                  00000107 40 00000a 7331 0000
	                  0000010c 40 00000c 000007d1
	                  00000108 40 00000a 6777 0000
	                  00000128 40 00000d 7265616c6d 000000
	                  000001a0 40 00000c 00000001`)
	if !bytes.Equal(got, want) {
		t.Fatalf("rewritten =\n%x\nwant\n%x", got, want)
	}
	if result != ResultSuccess {
		t.Fatalf("result = %d, want 2001", result)
	}
}

func TestRewriteAnswerRejectsRequest(t *testing.T) {
	req := Header{Flags: FlagRequest, CommandCode: 272, AppID: 4}
	_, _, err := RewriteAnswer(nil, unhex(t, goldenCCR), req, Identity{Host: "gw", Realm: "r"})
	if !errors.Is(err, ErrBadAnswer) {
		t.Fatalf("err = %v, want ErrBadAnswer", err)
	}
}

func TestAnswerHeaderEBitOnlyFor3xxx(t *testing.T) {
	req := Header{Flags: FlagRequest | FlagProxiable | FlagRetransmitted, CommandCode: 257}
	if f := AnswerHeader(req, ResultNoCommonApplication).Flags; f != FlagProxiable {
		t.Fatalf("5010 flags = %#x, want P only", f)
	}
	if f := AnswerHeader(req, ResultUnknownPeer).Flags; f != FlagProxiable|FlagError {
		t.Fatalf("3010 flags = %#x, want P and E", f)
	}
}

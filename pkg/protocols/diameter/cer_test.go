package diameter_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/fiorix/go-diameter/v4/diam/avp"

	dia "github.com/shardgate/shardgate/pkg/protocols/diameter"
)

// rawCER builds a CER with the package's own encoder, so that a test can put
// into it what go-diameter would refuse to encode. extra holds encoded AVPs
// appended after the usual ones.
func rawCER(h dia.Header, host, realm []byte, extra ...[]byte) []byte {
	h.Flags |= dia.FlagRequest
	h.CommandCode = dia.CmdCapabilitiesExchange
	m := dia.AppendHeader(nil, h)
	m = dia.AppendAVP(m, dia.AVPOriginHost, dia.AVPFlagMandatory, 0, host)
	m = dia.AppendAVP(m, dia.AVPOriginRealm, dia.AVPFlagMandatory, 0, realm)
	m = dia.AppendAddress(m, dia.AVPHostIPAddress, dia.AVPFlagMandatory, netip.MustParseAddr("127.0.0.1"))
	m = dia.AppendUint32(m, dia.AVPVendorID, dia.AVPFlagMandatory, 0, 0)
	m = dia.AppendString(m, dia.AVPProductName, 0, 0, "test")
	m = dia.AppendUint32(m, dia.AVPAuthApplicationID, dia.AVPFlagMandatory, 0, dia.AppCreditControl)
	for _, a := range extra {
		m = append(m, a...)
	}
	return dia.SetLength(m)
}

// readCEA reads a CEA and returns its header, Result-Code and Failed-AVP
// content (nil when absent).
func (c *client) readCEA() (dia.Header, uint32, []byte) {
	c.t.Helper()
	h, msg := c.readRaw()
	if h.CommandCode != dia.CmdCapabilitiesExchange || h.IsRequest() {
		c.t.Fatalf("got command %d flags %#x, want a CEA", h.CommandCode, h.Flags)
	}
	rc, ok, err := dia.FindAVP(msg, avp.ResultCode, 0)
	if !ok || err != nil {
		c.t.Fatalf("CEA without Result-Code (%v)", err)
	}
	result, _ := dia.Uint32(rc)
	failed, _, _ := dia.FindAVP(msg, avp.FailedAVP, 0)
	return h, result, failed
}

// The exact bytes a tester sent: a CER whose Origin-Host is ff fe c0, then a
// CCR. The gateway used to accept the CER and panic in prometheus on the CCR.
const (
	cerHostNotUTF8 = `0100006080000101000000000000000100000001000001084000000bfffec000000001284000000c74657374
		000001014000000e00017f00000100000000010a4000000c000000000000010d0000000978000000000001024000000c00000004`
	ccrAfterBadCER = `0100002080000110000000040000000200000002000001074000000b733b3100`
)

func TestServerCERHostNotUTF8ThenRequest(t *testing.T) {
	f := startServer(t, nil)
	c := dial(t, f.srv.Addr())
	c.writeRaw(unhexT(t, cerHostNotUTF8))
	c.writeRaw(unhexT(t, ccrAfterBadCER))
	_, result, failed := c.readCEA()
	if result != dia.ResultInvalidAVPValue {
		t.Fatalf("CEA Result-Code = %d, want 5004", result)
	}
	want := dia.AppendAVP(nil, dia.AVPOriginHost, dia.AVPFlagMandatory, 0, []byte{0xff, 0xfe, 0xc0})
	if !bytes.Equal(failed, want) {
		t.Fatalf("Failed-AVP = %x, want the Origin-Host AVP %x", failed, want)
	}
	c.expectClosed()

	other := dial(t, f.srv.Addr())
	other.open("other.peers.test")
	other.send(other.ccr("after-bad-cer", 4, 0))
	if rc := resultCode(t, other.read()); rc != dia.ResultSuccess {
		t.Fatalf("next peer: Result-Code %d, want 2001", rc)
	}
}

func TestServerCERInvalidIdentity(t *testing.T) {
	realm := []byte("peers.test")
	cases := []struct {
		name        string
		host, realm []byte
		failedCode  uint32
	}{
		{"Origin-Host not UTF-8", []byte{0xff, 0xfe, 0xc0}, realm, dia.AVPOriginHost},
		{"Origin-Host UTF-8 but not ASCII", []byte("h\u00f6st.peers.test"), realm, dia.AVPOriginHost},
		{"Origin-Host empty", []byte{}, realm, dia.AVPOriginHost},
		{"Origin-Host 256 bytes", bytes.Repeat([]byte{'a'}, 256), realm, dia.AVPOriginHost},
		{"Origin-Host with a space", []byte("client peers.test"), realm, dia.AVPOriginHost},
		{"Origin-Host with a NUL", []byte("client\x00.peers.test"), realm, dia.AVPOriginHost},
		{"Origin-Realm not UTF-8", []byte("client.peers.test"), []byte{0xc0, 0xaf}, dia.AVPOriginRealm},
		{"Origin-Realm empty", []byte("client.peers.test"), []byte{}, dia.AVPOriginRealm},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startServer(t, nil)
			c := dial(t, f.srv.Addr())
			c.writeRaw(rawCER(dia.Header{HopByHop: 7, EndToEnd: 8}, tc.host, tc.realm))
			h, result, failed := c.readCEA()
			if result != dia.ResultInvalidAVPValue {
				t.Fatalf("CEA Result-Code = %d, want 5004", result)
			}
			if h.Flags&dia.FlagError != 0 {
				t.Error("CEA 5004 has the E bit")
			}
			value := tc.host
			if tc.failedCode == dia.AVPOriginRealm {
				value = tc.realm
			}
			want := dia.AppendAVP(nil, tc.failedCode, dia.AVPFlagMandatory, 0, value)
			if !bytes.Equal(failed, want) {
				t.Fatalf("Failed-AVP = %x, want %x", failed, want)
			}
			c.expectClosed()
		})
	}
}

func TestServerCERLongestIdentity(t *testing.T) {
	f := startServer(t, nil)
	c := dial(t, f.srv.Addr())
	host := bytes.Repeat([]byte{'h'}, 255)
	c.writeRaw(rawCER(dia.Header{HopByHop: 1, EndToEnd: 1}, host, []byte("peers_1.test")))
	if _, result, _ := c.readCEA(); result != dia.ResultSuccess {
		t.Fatalf("CEA Result-Code = %d, want 2001 for a 255-byte Origin-Host", result)
	}
	c.send(c.ccr("longest-identity", 4, 0))
	if rc := resultCode(t, c.read()); rc != dia.ResultSuccess {
		t.Fatalf("CCR-Event: Result-Code %d, want 2001", rc)
	}
}

func TestServerCERHeaderAndAVPChecks(t *testing.T) {
	host, realm := []byte("client.peers.test"), []byte("peers.test")
	unknownBase := dia.AppendUint32(nil, 65000, dia.AVPFlagMandatory, 0, 1)
	unknownVendor := dia.AppendUint32(nil, 1, dia.AVPFlagMandatory, 999998, 1)
	cases := []struct {
		name   string
		cer    []byte
		result uint32
		wantE  bool
		failed []byte // nil: no Failed-AVP expected
	}{
		{"version 2", rawCER(dia.Header{Version: 2}, host, realm), dia.ResultUnsupportedVersion, false, nil},
		{"E bit set", rawCER(dia.Header{Flags: dia.FlagError}, host, realm), dia.ResultInvalidHeaderBits, true, nil},
		{"unknown AVP with M bit", rawCER(dia.Header{}, host, realm, unknownBase),
			dia.ResultAVPUnsupported, false, unknownBase},
		{"unknown vendor AVP with M bit", rawCER(dia.Header{}, host, realm, unknownVendor),
			dia.ResultAVPUnsupported, false, unknownVendor},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startServer(t, nil)
			c := dial(t, f.srv.Addr())
			c.writeRaw(tc.cer)
			h, result, failed := c.readCEA()
			if result != tc.result {
				t.Fatalf("CEA Result-Code = %d, want %d", result, tc.result)
			}
			if gotE := h.Flags&dia.FlagError != 0; gotE != tc.wantE {
				t.Errorf("CEA E bit = %v, want %v", gotE, tc.wantE)
			}
			if h.Version != dia.Version {
				t.Errorf("CEA version = %d, want 1", h.Version)
			}
			if !bytes.Equal(failed, tc.failed) {
				t.Errorf("Failed-AVP = %x, want %x", failed, tc.failed)
			}
			c.expectClosed()
		})
	}
}

func TestServerCERUnknownAVPWithoutMBit(t *testing.T) {
	f := startServer(t, nil)
	c := dial(t, f.srv.Addr())
	optional := dia.AppendUint32(nil, 65000, 0, 0, 1)
	c.writeRaw(rawCER(dia.Header{}, []byte("client.peers.test"), []byte("peers.test"), optional))
	if _, result, _ := c.readCEA(); result != dia.ResultSuccess {
		t.Fatalf("CEA Result-Code = %d, want 2001: an unknown AVP without the M bit is ignored", result)
	}
}

func TestServerSecondConnectionSameHost(t *testing.T) {
	f := startServer(t, nil)
	first := dial(t, f.srv.Addr())
	first.open("client.peers.test")

	// Identities compare without regard to case (RFC 6733 §5.6.4).
	second := dial(t, f.srv.Addr())
	second.send(second.cer("CLIENT.Peers.Test", 4))
	cea := second.read()
	if rc := resultCode(t, cea); rc != dia.ResultElectionLost {
		t.Fatalf("second CER: Result-Code %d, want 4003", rc)
	}
	second.expectClosed()

	first.send(first.ccr("still-open", 4, 0))
	if rc := resultCode(t, first.read()); rc != dia.ResultSuccess {
		t.Fatalf("first connection after the rejected CER: Result-Code %d, want 2001", rc)
	}

	first.conn.Close()
	waitFor(t, "first connection gone", func() bool { return len(f.srv.Peers().([]dia.PeerInfo)) == 0 })
	third := dial(t, f.srv.Addr())
	third.open("client.peers.test")
}

func TestServerRejectedCERKeepsHostFree(t *testing.T) {
	f := startServer(t, nil)
	// A CER rejected for another reason must not hold the Origin-Host.
	bad := dial(t, f.srv.Addr())
	bad.send(bad.cer("client.peers.test", 5))
	if rc := resultCode(t, bad.read()); rc != dia.ResultNoCommonApplication {
		t.Fatalf("CER without a common application: Result-Code %d, want 5010", rc)
	}
	bad.expectClosed()
	good := dial(t, f.srv.Addr())
	good.open("client.peers.test")
}

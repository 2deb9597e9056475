package diameter_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/avp"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"github.com/fiorix/go-diameter/v4/diam/dict"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/pkg/app"
	"github.com/shardgate/shardgate/pkg/app/diameterapp"
	dia "github.com/shardgate/shardgate/pkg/protocols/diameter"
)

// appForwarder calls the worker handler in its own goroutine, as the link
// would, so answers complete out of order. Keys in slow are delayed.
type appForwarder struct {
	h     app.Handler
	slow  sync.Map // key -> chan struct{}: held until the channel closes
	fail  atomic.Pointer[error]
	calls atomic.Int64 // Forward calls
}

func (f *appForwarder) Forward(key, msg []byte, done func([]byte, error)) error {
	f.calls.Add(1)
	if err := f.fail.Load(); err != nil {
		return *err
	}
	gate, _ := f.slow.Load(string(key))
	go func() {
		if gate != nil {
			<-gate.(chan struct{})
		}
		ans, err := f.h.Serve(context.Background(), &app.Request{Proto: app.Diameter, Key: string(key), Message: msg})
		done(ans, err)
	}()
	return nil
}

type fixture struct {
	srv *dia.Server
	fwd *appForwarder
	reg *prometheus.Registry
}

func startServer(t *testing.T, mod func(*dia.ServerOptions)) *fixture {
	t.Helper()
	fwd := &appForwarder{h: diameterapp.New(diameterapp.Options{WorkerName: "w1"})}
	reg := prometheus.NewRegistry()
	o := dia.ServerOptions{
		Addr: "127.0.0.1:0", OriginHost: "gw.gateway.test", OriginRealm: "gateway.test",
		Forwarder: fwd, Registerer: reg, Logger: zerolog.New(zerolog.NewTestWriter(t)),
	}
	if mod != nil {
		mod(&o)
	}
	srv, err := dia.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve after Shutdown = %v, want nil", err)
		}
	})
	return &fixture{srv: srv, fwd: fwd, reg: reg}
}

// client is a test peer that speaks through go-diameter's codec.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	hbh  uint32
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, r: bufio.NewReader(conn), hbh: 100}
}

func (c *client) request(cmd, app uint32) *diam.Message {
	c.hbh++
	return diam.NewMessage(cmd, diam.RequestFlag, app, c.hbh, c.hbh+1000, dict.Default)
}

func (c *client) send(m *diam.Message) {
	c.t.Helper()
	if _, err := m.WriteTo(c.conn); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) writeRaw(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// readRaw reads one message with the package's own framing, for answers to
// commands go-diameter's dictionary does not know.
func (c *client) readRaw() (dia.Header, []byte) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	hb := make([]byte, dia.HeaderLen)
	if _, err := io.ReadFull(c.r, hb); err != nil {
		c.t.Fatalf("read: %v", err)
	}
	h, err := dia.ReadHeader(hb)
	if err != nil {
		c.t.Fatal(err)
	}
	msg := append(hb, make([]byte, h.Length-dia.HeaderLen)...)
	if _, err := io.ReadFull(c.r, msg[dia.HeaderLen:]); err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return h, msg
}

func (c *client) read() *diam.Message {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := diam.ReadMessage(c.r, dict.Default)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

// expectClosed waits until the server closes the connection.
func (c *client) expectClosed() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		_, err := c.r.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatal("connection still open after 5 s")
		}
		return
	}
}

func (c *client) cer(host string, apps ...uint32) *diam.Message {
	m := c.request(diam.CapabilitiesExchange, 0)
	m.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity(host))
	m.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("peers.test"))
	m.NewAVP(avp.HostIPAddress, avp.Mbit, 0, datatype.Address(net.ParseIP("127.0.0.1")))
	m.NewAVP(avp.VendorID, avp.Mbit, 0, datatype.Unsigned32(0))
	m.NewAVP(avp.ProductName, 0, 0, datatype.UTF8String("test"))
	m.NewAVP(avp.OriginStateID, avp.Mbit, 0, datatype.Unsigned32(42))
	for _, a := range apps {
		m.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(a))
	}
	return m
}

// open performs CER/CEA and returns the CEA.
func (c *client) open(host string) *diam.Message {
	c.t.Helper()
	c.send(c.cer(host, 4))
	cea := c.read()
	if rc := resultCode(c.t, cea); rc != dia.ResultSuccess {
		c.t.Fatalf("CEA Result-Code = %d, want 2001", rc)
	}
	return cea
}

func (c *client) ccr(session string, typ, number uint32) *diam.Message {
	m := c.request(dia.CmdCreditControl, dia.AppCreditControl)
	m.Header.CommandFlags |= diam.ProxiableFlag
	m.NewAVP(avp.SessionID, avp.Mbit, 0, datatype.UTF8String(session))
	m.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("client.peers.test"))
	m.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("peers.test"))
	m.NewAVP(avp.DestinationRealm, avp.Mbit, 0, datatype.DiameterIdentity("gateway.test"))
	m.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(4))
	m.NewAVP(avp.ServiceContextID, avp.Mbit, 0, datatype.UTF8String("32251@3gpp.org"))
	m.NewAVP(avp.CCRequestType, avp.Mbit, 0, datatype.Enumerated(typ))
	m.NewAVP(avp.CCRequestNumber, avp.Mbit, 0, datatype.Unsigned32(number))
	return m
}

func resultCode(t *testing.T, m *diam.Message) uint32 {
	t.Helper()
	a, err := m.FindAVP(avp.ResultCode, 0)
	if err != nil {
		t.Fatalf("no Result-Code in %v", m)
	}
	return uint32(a.Data.(datatype.Unsigned32))
}

func str(t *testing.T, m *diam.Message, code uint32) string {
	t.Helper()
	a, err := m.FindAVP(code, 0)
	if err != nil {
		t.Fatalf("AVP %d missing in %v", code, m)
	}
	switch d := a.Data.(type) {
	case datatype.DiameterIdentity:
		return string(d)
	case datatype.UTF8String:
		return string(d)
	case datatype.OctetString:
		return string(d)
	}
	t.Fatalf("AVP %d has type %T", code, a.Data)
	return ""
}

func TestServerCapabilitiesExchange(t *testing.T) {
	f := startServer(t, nil)
	c := dial(t, f.srv.Addr())
	cea := c.open("client.peers.test")
	if cea.Header.CommandFlags&diam.ErrorFlag != 0 {
		t.Error("CEA 2001 has the E bit")
	}
	if got := str(t, cea, avp.OriginHost); got != "gw.gateway.test" {
		t.Errorf("Origin-Host = %q", got)
	}
	osi, err := cea.FindAVP(avp.OriginStateID, 0)
	if err != nil || uint32(osi.Data.(datatype.Unsigned32)) == 42 {
		t.Errorf("Origin-State-Id = %v, want the gateway's own, not the peer's 42", osi)
	}
	for _, code := range []uint32{avp.HostIPAddress, avp.VendorID, avp.ProductName, avp.FirmwareRevision,
		avp.AuthApplicationID, avp.VendorSpecificApplicationID} {
		if _, err := cea.FindAVP(code, 0); err != nil {
			t.Errorf("CEA lacks AVP %d", code)
		}
	}
}

func TestServerWatchdogAndDisconnect(t *testing.T) {
	f := startServer(t, nil)
	c := dial(t, f.srv.Addr())
	c.open("client.peers.test")

	dwr := c.request(diam.DeviceWatchdog, 0)
	dwr.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("client.peers.test"))
	dwr.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("peers.test"))
	c.send(dwr)
	dwa := c.read()
	if dwa.Header.CommandCode != diam.DeviceWatchdog || resultCode(t, dwa) != dia.ResultSuccess {
		t.Fatalf("DWR answered with %v", dwa)
	}
	if dwa.Header.HopByHopID != dwr.Header.HopByHopID || dwa.Header.EndToEndID != dwr.Header.EndToEndID {
		t.Fatal("DWA identifiers differ from the DWR's")
	}

	dpr := c.request(diam.DisconnectPeer, 0)
	dpr.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("client.peers.test"))
	dpr.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("peers.test"))
	dpr.NewAVP(avp.DisconnectCause, avp.Mbit, 0, datatype.Enumerated(0))
	c.send(dpr)
	dpa := c.read()
	if dpa.Header.CommandCode != diam.DisconnectPeer || resultCode(t, dpa) != dia.ResultSuccess {
		t.Fatalf("DPR answered with %v", dpa)
	}
	c.expectClosed()
}

func TestServerCreditControlSession(t *testing.T) {
	f := startServer(t, nil)
	c := dial(t, f.srv.Addr())
	c.open("client.peers.test")

	for i, typ := range []uint32{1, 2, 2, 3} {
		req := c.ccr("sess-1", typ, uint32(i))
		c.send(req)
		ans := c.read()
		if rc := resultCode(t, ans); rc != dia.ResultSuccess {
			t.Fatalf("CCR type %d: Result-Code %d", typ, rc)
		}
		if ans.Header.HopByHopID != req.Header.HopByHopID || ans.Header.EndToEndID != req.Header.EndToEndID {
			t.Fatalf("CCR type %d: identifiers changed", typ)
		}
		if ans.AVP[0].Code != avp.SessionID {
			t.Fatalf("CCR type %d: first AVP is %d, want Session-Id", typ, ans.AVP[0].Code)
		}
		if got := str(t, ans, avp.OriginHost); got != "gw.gateway.test" {
			t.Fatalf("CCR type %d: Origin-Host %q, want the gateway's", typ, got)
		}
		_, gsuErr := ans.FindAVP(avp.GrantedServiceUnit, 0)
		if (typ != 3) != (gsuErr == nil) {
			t.Fatalf("CCR type %d: Granted-Service-Unit present=%v", typ, gsuErr == nil)
		}
	}
	c.send(c.ccr("sess-1", 2, 4))
	if rc := resultCode(t, c.read()); rc != dia.ResultUnknownSessionID {
		t.Fatalf("CCR-Update after Terminate: Result-Code %d, want 5002", rc)
	}
	if got := counterValue(t, f.reg, "shardgate_diameter_requests_total",
		map[string]string{"app": "credit_control", "peer": "client.peers.test"}); got != 5 {
		t.Errorf("requests_total = %v, want 5", got)
	}
	if got := counterValue(t, f.reg, "shardgate_diameter_answers_total",
		map[string]string{"app": "credit_control", "peer": "client.peers.test", "result_code": "5002"}); got != 1 {
		t.Errorf("answers_total{result_code=5002} = %v, want 1", got)
	}
}

func TestServerTestApp(t *testing.T) {
	f := startServer(t, nil)
	c := dial(t, f.srv.Addr())
	c.open("client.peers.test")
	m := c.request(dia.CmdTest, dia.AppTest)
	m.NewAVP(avp.SessionID, avp.Mbit, 0, datatype.UTF8String("t1"))
	m.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("client.peers.test"))
	m.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("peers.test"))
	m.NewAVP(dia.AVPTest, avp.Vbit, dia.VendorTest, datatype.Integer32(0x1234))
	c.send(m)
	h, ans := c.readRaw()
	if h.CommandCode != dia.CmdTest || h.IsRequest() || h.HopByHop != m.Header.HopByHopID {
		t.Fatalf("answer header %+v", h)
	}
	rc, _, _ := dia.FindAVP(ans, avp.ResultCode, 0)
	if got, _ := dia.Uint32(rc); got != dia.ResultSuccess {
		t.Fatalf("Test-Request: Result-Code %d", got)
	}
	if code := uint32(ans[20])<<24 | uint32(ans[21])<<16 | uint32(ans[22])<<8 | uint32(ans[23]); code != avp.SessionID {
		t.Fatalf("first AVP is %d, want Session-Id", code)
	}
	echo, ok, err := dia.FindAVP(ans, dia.AVPTest, dia.VendorTest)
	if v, _ := dia.Uint32(echo); !ok || err != nil || v != 0x1234 {
		t.Fatalf("Test-AVP = %x (found %v, %v), want 00001234", echo, ok, err)
	}
}

func TestServerErrorAnswers(t *testing.T) {
	f := startServer(t, nil)
	c := dial(t, f.srv.Addr())
	c.open("client.peers.test")
	cases := []struct {
		name   string
		raw    string
		result uint32
		wantE  bool
		failed bool
	}{
		{"unknown command", `01 000020 c0 0003e7 00000004 00000001 00000001
			00000107 40 00000a 7331 0000`, dia.ResultCommandUnsupported, true, false},
		{"unknown application", `01 000020 c0 000110 00000005 00000002 00000002
			00000107 40 00000a 7331 0000`, dia.ResultApplicationUnsupported, true, false},
		{"unknown base command", `01 000014 80 000113 00000000 00000003 00000003`,
			dia.ResultCommandUnsupported, true, false},
		{"missing Session-Id", `01 000020 c0 000110 00000004 00000004 00000004
			00000108 40 000009 63 000000`, dia.ResultMissingAVP, false, true},
		{"unknown AVP with M bit", `01 00002c c0 000110 00000004 00000005 00000005
			00000107 40 00000a 7331 0000 0000fde8 40 00000c 00000001`, dia.ResultAVPUnsupported, false, true},
		{"AVP shorter than its header", `01 000024 c0 000110 00000004 00000006 00000006
			00000107 40 000006 0000 0000 00000000`, dia.ResultInvalidAVPLength, false, true},
		{"AVP past the message", `01 000024 c0 000110 00000004 00000007 00000007
			00000107 40 000040 73317373 73737373`, dia.ResultInvalidAVPLength, false, true},
		{"E bit in a request", `01 000020 e0 000110 00000004 00000008 00000008
			00000107 40 00000a 7331 0000`, dia.ResultInvalidHeaderBits, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			raw := unhexT(t, tc.raw)
			c.writeRaw(raw)
			reqHdr, _ := dia.ReadHeader(raw)
			h, ans := c.readRaw()
			rc, _, err := dia.FindAVP(ans, avp.ResultCode, 0)
			if got, _ := dia.Uint32(rc); err != nil || got != tc.result {
				t.Fatalf("Result-Code = %d (%v), want %d", got, err, tc.result)
			}
			if gotE := h.Flags&dia.FlagError != 0; gotE != tc.wantE {
				t.Fatalf("E bit = %v, want %v", gotE, tc.wantE)
			}
			if h.IsRequest() || h.HopByHop != reqHdr.HopByHop || h.EndToEnd != reqHdr.EndToEnd {
				t.Fatalf("answer header %+v does not match request %+v", h, reqHdr)
			}
			if _, ok, _ := dia.FindAVP(ans, avp.FailedAVP, 0); ok != tc.failed {
				t.Fatalf("Failed-AVP present = %v, want %v", ok, tc.failed)
			}
			c.send(c.ccr("after-"+tc.name, 4, 0))
			if rc := resultCode(t, c.read()); rc != dia.ResultSuccess {
				t.Fatalf("CCR-Event after the error: Result-Code %d, want 2001", rc)
			}
		})
	}
}

func TestServerForwardFailures(t *testing.T) {
	f := startServer(t, nil)
	c := dial(t, f.srv.Addr())
	c.open("client.peers.test")

	unreachable := errors.New("no route to worker")
	f.fwd.fail.Store(&unreachable)
	c.send(c.ccr("s-unreachable", 1, 0))
	if rc := resultCode(t, c.read()); rc != dia.ResultUnableToDeliver {
		t.Fatalf("unreachable owner: Result-Code %d, want 3002", rc)
	}
	busy := fmtErr("link queue full: %w", dia.ErrOverloaded)
	f.fwd.fail.Store(&busy)
	c.send(c.ccr("s-busy", 1, 0))
	if rc := resultCode(t, c.read()); rc != dia.ResultTooBusy {
		t.Fatalf("overloaded forwarder: Result-Code %d, want 3004", rc)
	}
}

func TestServerInFlightLimit(t *testing.T) {
	f := startServer(t, func(o *dia.ServerOptions) { o.MaxInFlightPerPeer = 1 })
	c := dial(t, f.srv.Addr())
	c.open("client.peers.test")
	gate := make(chan struct{})
	f.fwd.slow.Store("slow", gate)

	c.send(c.ccr("slow", 1, 0))
	waitFor(t, "one request in flight", func() bool {
		p := f.srv.Peers().([]dia.PeerInfo)
		return len(p) == 1 && p[0].InFlight == 1
	})
	busy := c.ccr("fast", 1, 0)
	c.send(busy)
	ans := c.read()
	if rc := resultCode(t, ans); rc != dia.ResultTooBusy || ans.Header.HopByHopID != busy.Header.HopByHopID {
		t.Fatalf("second request: Result-Code %d, want 3004 for it", rc)
	}
	close(gate)
	if rc := resultCode(t, c.read()); rc != dia.ResultSuccess {
		t.Fatalf("slow request: Result-Code %d, want 2001", rc)
	}
}

func TestServerAnswersOutOfOrder(t *testing.T) {
	f := startServer(t, nil)
	c := dial(t, f.srv.Addr())
	c.open("client.peers.test")
	gate := make(chan struct{})
	f.fwd.slow.Store("slow", gate)

	slow := c.ccr("slow", 1, 0)
	c.send(slow)
	fast := c.ccr("fast", 1, 0)
	c.send(fast)
	if ans := c.read(); ans.Header.HopByHopID != fast.Header.HopByHopID {
		t.Fatalf("first answer is for %d, want the fast request %d", ans.Header.HopByHopID, fast.Header.HopByHopID)
	}
	close(gate)
	if ans := c.read(); ans.Header.HopByHopID != slow.Header.HopByHopID {
		t.Fatalf("second answer is for %d, want %d", ans.Header.HopByHopID, slow.Header.HopByHopID)
	}
}

func TestServerClosesConnection(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*dia.ServerOptions)
		send func(c *client)
		want uint32 // CEA Result-Code before the close, 0 for none
	}{
		{"request before CER", nil, func(c *client) { c.send(c.ccr("s", 1, 0)) }, 0},
		{"no common application", nil, func(c *client) { c.send(c.cer("client.peers.test", 5)) }, dia.ResultNoCommonApplication},
		{"peer not allowed", func(o *dia.ServerOptions) { o.AllowedPeers = []string{"other.peers.test"} },
			func(c *client) { c.send(c.cer("client.peers.test", 4)) }, dia.ResultUnknownPeer},
		{"length below header", nil, func(c *client) {
			c.open("client.peers.test")
			c.writeRaw(unhexT(c.t, "01 000010 80 000118 00000000 00000001 00000001"))
		}, 0},
		{"length not multiple of 4", nil, func(c *client) {
			c.open("client.peers.test")
			c.writeRaw(unhexT(c.t, "01 000016 80 000118 00000000 00000001 00000001"))
		}, 0},
		{"message over MaxMessage", func(o *dia.ServerOptions) { o.MaxMessage = 1024 }, func(c *client) {
			c.open("client.peers.test")
			c.writeRaw(unhexT(c.t, "01 001000 80 000118 00000000 00000001 00000001"))
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startServer(t, tc.mod)
			other := dial(t, f.srv.Addr())
			other.open("other.peers.test")

			c := dial(t, f.srv.Addr())
			tc.send(c)
			if tc.want != 0 {
				cea := c.read()
				if rc := resultCode(t, cea); rc != tc.want {
					t.Fatalf("CEA Result-Code = %d, want %d", rc, tc.want)
				}
				if gotE := cea.Header.CommandFlags&diam.ErrorFlag != 0; gotE != (tc.want/1000 == 3) {
					t.Fatalf("CEA %d has E bit %v", tc.want, gotE)
				}
			}
			c.expectClosed()

			other.send(other.ccr("other", 4, 0))
			if rc := resultCode(t, other.read()); rc != dia.ResultSuccess {
				t.Fatalf("other peer: Result-Code %d, want 2001", rc)
			}
		})
	}
}

func TestServerWatchdogClosesSilentPeer(t *testing.T) {
	f := startServer(t, func(o *dia.ServerOptions) { o.Watchdog = 200 * time.Millisecond })
	c := dial(t, f.srv.Addr())
	c.open("client.peers.test")
	dwr := c.read()
	if dwr.Header.CommandCode != diam.DeviceWatchdog || dwr.Header.CommandFlags&diam.RequestFlag == 0 {
		t.Fatalf("idle peer got %v, want a DWR", dwr)
	}
	// Answer the first DWR, then stay silent: the next DWR goes unanswered.
	dwa := diam.NewMessage(diam.DeviceWatchdog, 0, 0, dwr.Header.HopByHopID, dwr.Header.EndToEndID, dict.Default)
	dwa.NewAVP(avp.ResultCode, avp.Mbit, 0, datatype.Unsigned32(2001))
	dwa.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("client.peers.test"))
	dwa.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("peers.test"))
	c.send(dwa)
	waitFor(t, "DWA recorded", func() bool {
		p := f.srv.Peers().([]dia.PeerInfo)
		return len(p) == 1 && !p[0].LastDWA.IsZero()
	})
	if again := c.read(); again.Header.CommandCode != diam.DeviceWatchdog {
		t.Fatalf("got %v, want a second DWR", again)
	}
	c.expectClosed()
}

func TestServerShutdownSendsDPR(t *testing.T) {
	f := startServer(t, nil)
	c := dial(t, f.srv.Addr())
	c.open("client.peers.test")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		done <- f.srv.Shutdown(ctx)
	}()
	dpr := c.read()
	if dpr.Header.CommandCode != diam.DisconnectPeer || dpr.Header.CommandFlags&diam.RequestFlag == 0 {
		t.Fatalf("got %v, want DPR", dpr)
	}
	cause, err := dpr.FindAVP(avp.DisconnectCause, 0)
	if err != nil || int32(cause.Data.(datatype.Enumerated)) != 0 {
		t.Fatalf("Disconnect-Cause = %v, want REBOOTING (0)", cause)
	}
	dpa := diam.NewMessage(diam.DisconnectPeer, 0, 0, dpr.Header.HopByHopID, dpr.Header.EndToEndID, dict.Default)
	dpa.NewAVP(avp.ResultCode, avp.Mbit, 0, datatype.Unsigned32(2001))
	dpa.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("client.peers.test"))
	dpa.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("peers.test"))
	c.send(dpa)
	if err := <-done; err != nil {
		t.Fatalf("Shutdown = %v, want nil after the DPA", err)
	}
	c.expectClosed()
}

func TestNewServerRejectsBadOptions(t *testing.T) {
	base := dia.ServerOptions{OriginHost: "gw", OriginRealm: "r", Forwarder: &appForwarder{}}
	cases := []struct {
		name    string
		mod     func(*dia.ServerOptions)
		want    string // the whole error, or a part of it when partial
		partial bool
	}{
		{"unknown KeyAVP", func(o *dia.ServerOptions) { o.KeyAVP = "No-Such-AVP" },
			`invalid --diameter-key "No-Such-AVP": unknown AVP name; use an AVP from the base or ` +
				`credit-control dictionary, for example Session-Id or User-Name`, false},
		{"empty AllowedPeers entry", func(o *dia.ServerOptions) { o.AllowedPeers = []string{"a.test", ""} },
			"invalid --diameter-peers: entry 2 is empty", true},
		{"AllowedPeers entry not ASCII", func(o *dia.ServerOptions) { o.AllowedPeers = []string{"h\u00f6st"} },
			"invalid --diameter-peers entry \"h\u00f6st\"", true},
		{"no OriginHost", func(o *dia.ServerOptions) { o.OriginHost = "" }, "OriginHost", true},
		{"no Forwarder", func(o *dia.ServerOptions) { o.Forwarder = nil }, "Forwarder", true},
		{"tiny MaxMessage", func(o *dia.ServerOptions) { o.MaxMessage = 10 }, "invalid MaxMessage 10", true},
		{"negative MaxPeers", func(o *dia.ServerOptions) { o.MaxPeers = -1 }, "invalid MaxPeers -1", true},
	}
	for _, tc := range cases {
		o := base
		tc.mod(&o)
		_, err := dia.NewServer(o)
		switch {
		case err == nil:
			t.Errorf("%s: NewServer succeeded, want an error", tc.name)
		case tc.partial && !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: error %q does not contain %q", tc.name, err, tc.want)
		case !tc.partial && err.Error() != tc.want:
			t.Errorf("%s: error\n%s\nwant\n%s", tc.name, err, tc.want)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// queueForwarder holds queued requests until Flush, as the gateway's link
// does, then forwards them through appForwarder.
type queueForwarder struct {
	*appForwarder
	mu      sync.Mutex
	pending []func()
}

func (q *queueForwarder) QueueForward(key, msg []byte, done func([]byte, error)) error {
	key, msg = append([]byte(nil), key...), append([]byte(nil), msg...)
	q.mu.Lock()
	q.pending = append(q.pending, func() { _ = q.Forward(key, msg, done) })
	q.mu.Unlock()
	return nil
}

func (q *queueForwarder) Flush() {
	q.mu.Lock()
	pending := q.pending
	q.pending = nil
	q.mu.Unlock()
	for _, send := range pending {
		send()
	}
}

// TestQueuedForwardFlushedBeforePartialRead sends a whole CCR and the start
// of a second one in one write. The first must be forwarded and answered
// while the gateway waits for the rest of the second.
func TestQueuedForwardFlushedBeforePartialRead(t *testing.T) {
	var q *queueForwarder
	f := startServer(t, func(o *dia.ServerOptions) {
		q = &queueForwarder{appForwarder: o.Forwarder.(*appForwarder)}
		o.Forwarder = q
	})
	c := dial(t, f.srv.Addr())
	c.open("client.peers.test")

	first, err := c.ccr("queued;1", 1, 0).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.ccr("queued;2", 1, 0).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	c.writeRaw(append(first, second[:30]...))
	if rc := resultCode(t, c.read()); rc != dia.ResultSuccess {
		t.Fatalf("first CCR Result-Code = %d, want 2001", rc)
	}
	c.writeRaw(second[30:])
	if rc := resultCode(t, c.read()); rc != dia.ResultSuccess {
		t.Fatalf("second CCR Result-Code = %d, want 2001", rc)
	}
}

package cluster_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/avp"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"github.com/fiorix/go-diameter/v4/diam/dict"
	"github.com/fiorix/go-diameter/v4/diam/sm"

	peers "github.com/shardgate/shardgate/test/peers/diameter"
)

// Identities of the Diameter nodes in these tests. The gateway's Origin-Host
// defaults to its node name, which startCluster sets to gateway-1.
const (
	gatewayHost  = "gateway-1"
	gatewayRealm = "shardgate.local"
	ccClientHost = "ccclient.peers.test"
	peersRealm   = "peers.test"
)

// Protocol numbers, written out here rather than taken from the product so
// that the tests check it against the RFCs.
const (
	appCreditControl = 4   // Diameter Credit-Control Application (RFC 4006)
	cmdCreditControl = 272 // Credit-Control-Request/Answer (RFC 4006 §3.1)

	ccrInitial   = 1 // CC-Request-Type values (RFC 4006 §8.3)
	ccrUpdate    = 2
	ccrTerminate = 3

	resultSuccess                = 2001 // Result-Code values (RFC 6733 §7.1, RFC 4006)
	resultUnableToDeliver        = 3002
	resultApplicationUnsupported = 3007
	resultAVPUnsupported         = 5001
	resultUnknownSessionID       = 5002
	resultMissingAVP             = 5005
	resultInvalidAVPLength       = 5014
)

// ccClient is a Credit-Control client built on go-diameter: sm.Client does
// the CER/CEA exchange and each CCA is matched to its CCR by Hop-by-Hop
// Identifier. It is safe for concurrent use.
type ccClient struct {
	conn    diam.Conn
	timeout time.Duration // how long request waits for a CCA
	ids     atomic.Uint32 // source of Hop-by-Hop Identifiers
	stray   atomic.Int64  // CCAs whose Hop-by-Hop Identifier matched no request

	mu      sync.Mutex
	pending map[uint32]chan *diam.Message // by Hop-by-Hop Identifier
}

// dialCC connects to a gateway's Diameter address and performs CER/CEA.
func dialCC(t *testing.T, addr string) *ccClient {
	t.Helper()
	c := &ccClient{timeout: 5 * time.Second, pending: map[uint32]chan *diam.Message{}}
	c.ids.Store(uint32(time.Now().UnixNano()))
	machine := sm.New(&sm.Settings{
		OriginHost:    ccClientHost,
		OriginRealm:   peersRealm,
		ProductName:   "shardgate cluster test",
		OriginStateID: datatype.Unsigned32(time.Now().Unix()),
	})
	machine.HandleIdx(diam.CommandIndex{AppID: appCreditControl, Code: cmdCreditControl}, diam.HandlerFunc(c.deliver))
	client := &sm.Client{
		Dict:               dict.Default,
		Handler:            machine,
		RetransmitInterval: 5 * time.Second, // the wait for the CEA
		AuthApplicationID: []*diam.AVP{
			diam.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(appCreditControl)),
		},
	}
	conn, err := client.DialTimeout(addr, 5*time.Second)
	if err != nil {
		t.Fatalf("CER/CEA with the gateway at %s: %v", addr, err)
	}
	t.Cleanup(conn.Close)
	c.conn = conn
	return c
}

// deliver runs on go-diameter's read goroutine for each CCA.
func (c *ccClient) deliver(_ diam.Conn, m *diam.Message) {
	c.mu.Lock()
	ch := c.pending[m.Header.HopByHopID]
	c.mu.Unlock()
	if ch == nil {
		c.stray.Add(1)
		return
	}
	select {
	case ch <- m:
	default:
		c.stray.Add(1) // a second answer to the same request
	}
}

// request sends one CCR and waits for its CCA.
func (c *ccClient) request(sessionID string, typ, number uint32) (req, ans *diam.Message, err error) {
	hbh := c.ids.Add(1)
	req = newCCR(hbh, sessionID, typ, number)
	ch := make(chan *diam.Message, 1)
	c.mu.Lock()
	c.pending[hbh] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, hbh)
		c.mu.Unlock()
	}()

	if _, err := req.WriteTo(c.conn); err != nil {
		return req, nil, fmt.Errorf("write CCR type %d for %s: %w", typ, sessionID, err)
	}
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case ans = <-ch:
		return req, ans, nil
	case <-t.C:
		return req, nil, fmt.Errorf("no CCA to CCR type %d for %s within %v", typ, sessionID, c.timeout)
	}
}

// expect sends one CCR and checks its CCA against want with checkCCA.
func (c *ccClient) expect(sessionID string, typ, number, want uint32) error {
	req, ans, err := c.request(sessionID, typ, number)
	if err != nil {
		return err
	}
	if err := checkCCA(req, ans, want); err != nil {
		return fmt.Errorf("CCA to CCR type %d for %s: %w", typ, sessionID, err)
	}
	return nil
}

// newCCR builds a CCR (RFC 4006 §3.1) asking for octets on Initial and
// Update and reporting used octets on Update and Terminate.
func newCCR(hbh uint32, sessionID string, typ, number uint32) *diam.Message {
	e2e := hbh ^ 0x5a5a0000 // differs from the Hop-by-Hop, so a swap shows
	m := diam.NewMessage(cmdCreditControl, diam.RequestFlag|diam.ProxiableFlag, appCreditControl, hbh, e2e, dict.Default)
	m.NewAVP(avp.SessionID, avp.Mbit, 0, datatype.UTF8String(sessionID))
	m.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity(ccClientHost))
	m.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity(peersRealm))
	m.NewAVP(avp.DestinationRealm, avp.Mbit, 0, datatype.DiameterIdentity(gatewayRealm))
	m.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(appCreditControl))
	m.NewAVP(avp.ServiceContextID, avp.Mbit, 0, datatype.UTF8String("32251@3gpp.org"))
	m.NewAVP(avp.CCRequestType, avp.Mbit, 0, datatype.Enumerated(typ))
	m.NewAVP(avp.CCRequestNumber, avp.Mbit, 0, datatype.Unsigned32(number))
	if typ != ccrTerminate {
		m.NewAVP(avp.RequestedServiceUnit, avp.Mbit, 0, octets(1<<17))
	}
	if typ != ccrInitial {
		m.NewAVP(avp.UsedServiceUnit, avp.Mbit, 0, octets(4096))
	}
	return m
}

// octets is a service-unit group holding CC-Total-Octets (RFC 4006).
func octets(n uint64) *diam.GroupedAVP {
	return &diam.GroupedAVP{AVP: []*diam.AVP{diam.NewAVP(avp.CCTotalOctets, avp.Mbit, 0, datatype.Unsigned64(n))}}
}

// checkCCA returns what is wrong with ans as the answer to req: the
// identifiers, the R bit, Session-Id as the first AVP (its fixed place in the
// CCA, RFC 4006 §3.2), the gateway's Origin-Host and the Result-Code.
func checkCCA(req, ans *diam.Message, want uint32) error {
	var errs []error
	if h, r := ans.Header, req.Header; h.HopByHopID != r.HopByHopID || h.EndToEndID != r.EndToEndID {
		errs = append(errs, fmt.Errorf("Hop-by-Hop/End-to-End %#x/%#x, want %#x/%#x",
			h.HopByHopID, h.EndToEndID, r.HopByHopID, r.EndToEndID))
	}
	if ans.Header.CommandFlags&diam.RequestFlag != 0 {
		errs = append(errs, errors.New("R bit set in an answer"))
	}
	sid := avpString(req.AVP[0])
	if len(ans.AVP) == 0 || ans.AVP[0].Code != avp.SessionID || avpString(ans.AVP[0]) != sid {
		errs = append(errs, fmt.Errorf("first AVP is not Session-Id %q", sid))
	}
	if origin := findString(ans, avp.OriginHost); origin != gatewayHost {
		errs = append(errs, fmt.Errorf("Origin-Host %q, want %q", origin, gatewayHost))
	}
	if rc := findUint32(ans, avp.ResultCode); rc != want {
		errs = append(errs, fmt.Errorf("Result-Code %d, want %d", rc, want))
	}
	return errors.Join(errs...)
}

func avpString(a *diam.AVP) string { return string(a.Data.Serialize()) }

// findString returns the data of the first top-level AVP with code in m as
// a string, or "" when there is none.
func findString(m *diam.Message, code uint32) string {
	a, err := m.FindAVP(code, 0)
	if err != nil {
		return ""
	}
	return avpString(a)
}

// findUint32 returns the data of the first top-level AVP with code in m as
// an Unsigned32, or 0 when there is none.
func findUint32(m *diam.Message, code uint32) uint32 {
	a, err := m.FindAVP(code, 0)
	if err != nil {
		return 0
	}
	b := a.Data.Serialize()
	if len(b) != 4 {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// forEach calls fn for every id from workers goroutines and returns the
// errors, at most ten of them.
func forEach(ids []string, workers int, fn func(id string) error) []error {
	next := make(chan string)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for id := range next {
				if err := fn(id); err != nil {
					mu.Lock()
					if len(errs) < 10 {
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, id := range ids {
		next <- id
	}
	close(next)
	wg.Wait()
	return errs
}

// sessionIDs returns n Session-Ids in the RFC 6733 §8.8 form
// "<DiameterIdentity>;<high 32 bits>;<low 32 bits>", unique to this run.
func sessionIDs(n int) []string {
	high := uint32(time.Now().Unix())
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s;%d;%d", ccClientHost, high, i)
	}
	return ids
}

// ownerOf returns the worker that /debug/owner names for a Session-Id,
// escaping the semicolons that a query string would otherwise split on.
func ownerOf(c *cluster, sessionID string) string {
	return c.owner(url.QueryEscape(sessionID)).Owner
}

// ccSessions returns the number of credit-control sessions a worker holds,
// from its /debug/sessions.
func ccSessions(t *testing.T, c *cluster, p *proc) int {
	t.Helper()
	var v struct {
		CreditControl int `json:"credit_control"`
	}
	if err := c.getJSON("http://"+p.admin+"/debug/sessions", &v); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	return v.CreditControl
}

func TestDiameterCreditControlSessions(t *testing.T) {
	c := startCluster(t, 2)
	cc := dialCC(t, c.diameter)
	ids := sessionIDs(100)

	// Initial and Update first, so the sessions are all open at once. An
	// Update that reached another worker than the Initial would get 5002.
	errs := forEach(ids, 8, func(id string) error {
		if err := cc.expect(id, ccrInitial, 0, resultSuccess); err != nil {
			return err
		}
		return cc.expect(id, ccrUpdate, 1, resultSuccess)
	})
	for _, err := range errs {
		t.Error(err)
	}

	owned := map[string]int{}
	for _, id := range ids {
		owned[ownerOf(c, id)]++
	}
	for _, w := range c.workers {
		if owned[w.name] < 10 {
			t.Errorf("%s owns %d of %d sessions, want at least 10: %v", w.name, owned[w.name], len(ids), owned)
		}
		if got := ccSessions(t, c, w); got != owned[w.name] {
			t.Errorf("%s holds %d credit-control sessions, /debug/owner gives it %d", w.name, got, owned[w.name])
		}
	}
	t.Logf("sessions per owner: %v", owned)

	errs = forEach(ids, 8, func(id string) error { return cc.expect(id, ccrTerminate, 2, resultSuccess) })
	for _, err := range errs {
		t.Error(err)
	}
	for _, w := range c.workers {
		if got := ccSessions(t, c, w); got != 0 {
			t.Errorf("%s holds %d credit-control sessions after every CCR-Terminate, want 0", w.name, got)
		}
	}

	// Session-Ids that no worker holds: never opened, and terminated above.
	if err := cc.expect(ccClientHost+";0;unknown", ccrUpdate, 1, resultUnknownSessionID); err != nil {
		t.Error(err)
	}
	if err := cc.expect(ids[0], ccrUpdate, 3, resultUnknownSessionID); err != nil {
		t.Error(err)
	}
	if n := cc.stray.Load(); n != 0 {
		t.Errorf("%d CCAs matched no outstanding CCR", n)
	}
}

// needPeers skips the test unless the tools and the work directory that
// test/peers/diameter/setup.sh prepares are present, and returns the latter.
func needPeers(t *testing.T, tools ...string) string {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: apt-get install freediameter erlang-diameter iproute2, then run test/peers/diameter/setup.sh", tool)
		}
	}
	work, err := peers.Work()
	if err != nil {
		t.Skip(err)
	}
	return work
}

// openedSessions returns, for each credit-control session a worker logged as
// opened, the worker's name.
// NOTE: it matches pkg/app/creditcontrol's debug message text exactly, so a
// reworded message makes TestDiameterErlangClient fail on the session count.
func openedSessions(t *testing.T, c *cluster) map[string]string {
	t.Helper()
	opened := map[string]string{}
	for _, w := range c.workers {
		b, err := os.ReadFile(w.log)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(b)) {
			var entry struct {
				Message   string `json:"message"`
				SessionID string `json:"session_id"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Message == "credit-control session opened" {
				opened[entry.SessionID] = w.name
			}
		}
	}
	return opened
}

func TestDiameterErlangClient(t *testing.T) {
	work := needPeers(t, "escript", "erl")
	t.Setenv("SHARDGATE_LOG_LEVEL", "debug") // the workers log each session they open
	c := startCluster(t, 2)
	host, portText, _ := net.SplitHostPort(c.diameter)
	port, _ := strconv.Atoi(portText)

	const sessions = 5
	res, err := peers.RunErlangCCR(context.Background(), work, host, port, sessions)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Up {
		t.Fatalf("Erlang client never completed CER/CEA:\n%s", res.Output)
	}
	if len(res.Answers) != 3*sessions || len(res.Errors) > 0 {
		t.Fatalf("%d CCAs and errors %v, want %d CCAs:\n%s", len(res.Answers), res.Errors, 3*sessions, res.Output)
	}
	for _, a := range res.Answers {
		if a.Result != resultSuccess || a.Origin != gatewayHost {
			t.Errorf("session %d CCR type %d: Result-Code %d from %s, want 2001 from %s",
				a.Session, a.Type, a.Result, a.Origin, gatewayHost)
		}
	}
	if !res.Down {
		t.Errorf("no DPR/DPA at the end:\n%s", res.Output)
	}

	// The Erlang client makes its own Session-Ids, so they are read from the
	// workers' logs.
	opened := openedSessions(t, c)
	if len(opened) != sessions {
		t.Fatalf("workers logged %d opened sessions, want %d: %v", len(opened), sessions, opened)
	}
	for id, worker := range opened {
		owner := ownerOf(c, id)
		t.Logf("session %s: owner %s, opened on %s", id, owner, worker)
		if owner != worker {
			t.Errorf("session %s opened on %s but /debug/owner names %s", id, worker, owner)
		}
	}
}

func TestDiameterWorkerKilled(t *testing.T) {
	c := startCluster(t, 2)
	cc := dialCC(t, c.diameter)
	cc.timeout = 10 * time.Second // to measure a slow answer rather than give up on it
	ids := sessionIDs(40)
	for _, err := range forEach(ids, 8, func(id string) error { return cc.expect(id, ccrInitial, 0, resultSuccess) }) {
		t.Fatal(err)
	}

	victim, survivor := c.workers[0], c.workers[1]
	var lost, kept []string
	for _, id := range ids {
		if ownerOf(c, id) == victim.name {
			lost = append(lost, id)
		} else {
			kept = append(kept, id)
		}
	}
	if len(lost) == 0 || len(kept) == 0 {
		t.Fatalf("%d sessions on %s and %d on %s; the test needs some on each", len(lost), victim.name, len(kept), survivor.name)
	}
	killed := time.Now()
	victim.kill(t)

	// The victim's sessions: answered promptly with 3002, or with 5002 once
	// the shard has moved to a worker that never saw the session.
	results := map[uint32]int{}
	var slowest time.Duration
	for _, id := range lost {
		start := time.Now()
		req, ans, err := cc.request(id, ccrUpdate, 1)
		if err != nil {
			t.Error(err)
			continue
		}
		took := time.Since(start)
		slowest = max(slowest, took)
		rc := findUint32(ans, avp.ResultCode)
		results[rc]++
		if rc != resultUnableToDeliver && rc != resultUnknownSessionID {
			t.Errorf("CCR-Update for %s after its worker died: Result-Code %d, want 3002 or 5002", id, rc)
		}
		if err := checkCCA(req, ans, rc); err != nil {
			t.Errorf("CCA for %s: %v", id, err)
		}
		if took > 6*time.Second {
			t.Errorf("CCR-Update for %s took %v, want an answer within 6 s", id, took)
		}
	}
	t.Logf("%d sessions of the killed %s: Result-Codes %v, slowest answer %v", len(lost), victim.name, results, slowest)

	// The survivor's sessions are untouched.
	for _, err := range forEach(kept, 4, func(id string) error { return cc.expect(id, ccrUpdate, 1, resultSuccess) }) {
		t.Error(err)
	}

	// New sessions succeed within 10 s of the kill.
	var firstOK time.Duration
	var last error
	ok := poll(10*time.Second, func() bool {
		id := fmt.Sprintf("%s;%d;after-kill", ccClientHost, time.Now().UnixNano())
		last = cc.expect(id, ccrInitial, 0, resultSuccess)
		return last == nil
	})
	if !ok {
		t.Fatalf("no new session opened within 10 s of killing %s; last: %v", victim.name, last)
	}
	firstOK = time.Since(killed)
	c.waitWorkers(1)
	ringDropped := time.Since(killed)
	fresh := sessionIDs(20)
	for i := range fresh {
		fresh[i] += ";fresh"
	}
	for _, err := range forEach(fresh, 4, func(id string) error { return cc.expect(id, ccrInitial, 0, resultSuccess) }) {
		t.Error(err)
	}
	// The survivor owns the victim's shards now, and their state died with it.
	for _, err := range forEach(lost, 4, func(id string) error { return cc.expect(id, ccrUpdate, 2, resultUnknownSessionID) }) {
		t.Error(err)
	}
	t.Logf("after the kill: first new session opened at %v, ring had 1 worker by %v",
		firstOK.Round(time.Millisecond), ringDropped.Round(time.Millisecond))
}

// rawPeer is a Diameter peer that writes hand-built bytes and reads answers
// with its own framing, for input go-diameter would not send or parse. It is
// not safe for concurrent use.
type rawPeer struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// rawCER is a CER (RFC 6733 §5.3.1) from rawclient.peers.test offering
// Credit-Control, Hop-by-Hop and End-to-End 1:
//
//	01000078 80000101 00000000 00000001 00000001  header, 120 bytes, R, CER, app 0
//	00000108 4000001c "rawclient.peers.test"      Origin-Host
//	00000128 40000012 "peers.test" 0000           Origin-Realm
//	00000101 4000000e 0001 7f000001 0000          Host-IP-Address 127.0.0.1
//	0000010a 4000000c 00000000                    Vendor-Id 0
//	0000010d 0000000b "raw" 00                    Product-Name
//	00000102 4000000c 00000004                    Auth-Application-Id 4
const rawCER = "01000078800001010000000000000001" + "00000001" +
	"000001084000001c72617763" + "6c69656e742e70656572732e74657374" +
	"0000012840000012" + "70656572732e746573740000" +
	"000001014000000e00017f0000010000" +
	"0000010a4000000c00000000" +
	"0000010d0000000b72617700" +
	"000001024000000c00000004"

const rawClientHost = "rawclient.peers.test"

// dialRaw connects to addr and performs CER/CEA with rawCER.
func dialRaw(t *testing.T, addr string) *rawPeer {
	t.Helper()
	return dialRawCER(t, addr, rawCER)
}

// rawCERAs is rawCER from "rawclienX.peers.test", with X = letter. The
// gateway keeps one connection per Origin-Host (RFC 6733 §5.6), so
// connections open at the same time need hosts of their own.
func rawCERAs(letter byte) string {
	return strings.Replace(rawCER, "6c69656e74", "6c69656e"+hex.EncodeToString([]byte{letter}), 1)
}

// dialRawCER connects to addr and performs CER/CEA with cerHex.
func dialRawCER(t *testing.T, addr, cerHex string) *rawPeer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p := &rawPeer{t: t, conn: conn, r: bufio.NewReader(conn)}
	cer, _ := hex.DecodeString(cerHex)
	cea := p.roundTrip(cer)
	if cea.cmd != 257 || cea.flags&flagR != 0 || cea.resultCode() != resultSuccess {
		t.Fatalf("CER: got command %d flags %#x Result-Code %d, want a CEA with 2001", cea.cmd, cea.flags, cea.resultCode())
	}
	return p
}

// Header and AVP flags (RFC 6733 §3, §4.1).
const (
	flagR = 0x80 // request
	flagP = 0x40 // proxiable
	flagE = 0x20 // error: the answer carries a 3xxx Result-Code
	mbit  = 0x40 // AVP flag M: mandatory
	vbit  = 0x80 // AVP flag V: a Vendor-ID follows the length
)

type rawAVP struct {
	code   uint32
	flags  byte
	vendor uint32
	data   []byte
	raw    []byte // the whole AVP, padding included
}

type rawMessage struct {
	flags              byte
	cmd, app, hbh, e2e uint32
	avps               []rawAVP
}

func (m rawMessage) find(code uint32) (rawAVP, bool) {
	for _, a := range m.avps {
		if a.code == code && a.vendor == 0 {
			return a, true
		}
	}
	return rawAVP{}, false
}

func (m rawMessage) resultCode() uint32 {
	a, ok := m.find(avp.ResultCode)
	if !ok || len(a.data) != 4 {
		return 0
	}
	return binary.BigEndian.Uint32(a.data)
}

// parseAVPs splits b into AVPs, checking each length against what is left.
func parseAVPs(b []byte) ([]rawAVP, error) {
	var avps []rawAVP
	for off := 0; off < len(b); {
		rest := b[off:]
		if len(rest) < 8 {
			return nil, fmt.Errorf("AVP at offset %d: %d bytes left, want at least 8", off, len(rest))
		}
		a := rawAVP{code: binary.BigEndian.Uint32(rest), flags: rest[4]}
		n := int(rest[5])<<16 | int(rest[6])<<8 | int(rest[7])
		hdr := 8
		if a.flags&vbit != 0 {
			hdr = 12
		}
		if n < hdr || n > len(rest) {
			return nil, fmt.Errorf("AVP %d at offset %d: length %d, %d bytes left", a.code, off, n, len(rest))
		}
		if hdr == 12 {
			a.vendor = binary.BigEndian.Uint32(rest[8:])
		}
		padded := min((n+3)&^3, len(rest))
		a.data, a.raw = rest[hdr:n], rest[:padded]
		avps = append(avps, a)
		off += padded
	}
	return avps, nil
}

// read reads one message, waiting at most 5 s.
func (p *rawPeer) read() rawMessage {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 20)
	if _, err := io.ReadFull(p.r, hdr); err != nil {
		p.t.Fatalf("read an answer: %v", err)
	}
	n := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	if n < 20 || n%4 != 0 || n > 1<<16 {
		p.t.Fatalf("answer header %x: invalid Message Length %d", hdr, n)
	}
	body := make([]byte, n-20)
	if _, err := io.ReadFull(p.r, body); err != nil {
		p.t.Fatalf("read a %d-byte answer: %v", n, err)
	}
	avps, err := parseAVPs(body)
	if err != nil {
		p.t.Fatalf("answer %x%x: %v", hdr, body, err)
	}
	return rawMessage{
		flags: hdr[4], cmd: uint32(hdr[5])<<16 | uint32(hdr[6])<<8 | uint32(hdr[7]),
		app: binary.BigEndian.Uint32(hdr[8:]), hbh: binary.BigEndian.Uint32(hdr[12:]),
		e2e: binary.BigEndian.Uint32(hdr[16:]), avps: avps,
	}
}

func (p *rawPeer) write(b []byte) {
	p.t.Helper()
	_ = p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

func (p *rawPeer) roundTrip(b []byte) rawMessage {
	p.t.Helper()
	p.write(b)
	return p.read()
}

// expectClosed waits up to 5 s for the gateway to close the connection,
// discarding anything it sends first.
func (p *rawPeer) expectClosed() error {
	_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, p.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("connection still open after 5 s")
	}
	return nil
}

// rawMsg encodes a Diameter message (RFC 6733 §3) with the AVPs as given and
// both Hop-by-Hop and End-to-End set to hbh.
func rawMsg(flags byte, cmd, app, hbh uint32, avps ...[]byte) []byte {
	b := []byte{1, 0, 0, 0, flags, byte(cmd >> 16), byte(cmd >> 8), byte(cmd)}
	b = binary.BigEndian.AppendUint32(b, app)
	b = binary.BigEndian.AppendUint32(b, hbh)
	b = binary.BigEndian.AppendUint32(b, hbh)
	for _, a := range avps {
		b = append(b, a...)
	}
	n := len(b)
	b[1], b[2], b[3] = byte(n>>16), byte(n>>8), byte(n)
	return b
}

// rawAVPBytes encodes an AVP without Vendor-ID (RFC 6733 §4.1), padded to a
// multiple of 4 bytes.
func rawAVPBytes(code uint32, flags byte, data []byte) []byte {
	n := 8 + len(data)
	b := binary.BigEndian.AppendUint32(nil, code)
	b = append(b, flags, byte(n>>16), byte(n>>8), byte(n))
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// rawCCRInitial returns the AVPs of a CCR-Initial (RFC 4006 §3.1), ending
// with the 12-byte CC-Request-Number.
func rawCCRInitial(sessionID string) [][]byte {
	return [][]byte{
		rawAVPBytes(avp.SessionID, mbit, []byte(sessionID)),
		rawAVPBytes(avp.OriginHost, mbit, []byte(rawClientHost)),
		rawAVPBytes(avp.OriginRealm, mbit, []byte(peersRealm)),
		rawAVPBytes(avp.DestinationRealm, mbit, []byte(gatewayRealm)),
		rawAVPBytes(avp.AuthApplicationID, mbit, u32(appCreditControl)),
		rawAVPBytes(avp.ServiceContextID, mbit, []byte("32251@3gpp.org")),
		rawAVPBytes(avp.CCRequestType, mbit, u32(ccrInitial)),
		rawAVPBytes(avp.CCRequestNumber, mbit, u32(0)),
	}
}

// Requests with one error each, which the gateway answers itself while
// keeping the connection open.
var malformedRequests = []struct {
	name     string
	cmd, app uint32
	avps     func(sessionID string) [][]byte
	patch    func(msg []byte) // applied to the encoded message, or nil
	want     uint32
	failed   uint32 // code of the AVP expected inside Failed-AVP, 0 for none
}{
	{
		name: "unknown AVP with the M bit", cmd: cmdCreditControl, app: appCreditControl,
		avps: func(sid string) [][]byte {
			return append(rawCCRInitial(sid), rawAVPBytes(7777, mbit, []byte("zz")))
		},
		want: resultAVPUnsupported, failed: 7777,
	},
	{
		// The last AVP, CC-Request-Number, claims 64 bytes of the 12 left.
		name: "AVP length past the message", cmd: cmdCreditControl, app: appCreditControl,
		avps:  rawCCRInitial,
		patch: func(msg []byte) { msg[len(msg)-12+7] = 64 },
		want:  resultInvalidAVPLength, failed: avp.CCRequestNumber,
	},
	{
		name: "no Session-Id", cmd: cmdCreditControl, app: appCreditControl,
		avps: func(sid string) [][]byte { return rawCCRInitial(sid)[1:] },
		want: resultMissingAVP, failed: avp.SessionID,
	},
	{
		// An AA-Request (command 265) of NASREQ (application 1), which the
		// gateway does not serve.
		name: "unknown application", cmd: 265, app: 1,
		avps: func(sid string) [][]byte {
			return [][]byte{
				rawAVPBytes(avp.SessionID, mbit, []byte(sid)),
				rawAVPBytes(avp.AuthApplicationID, mbit, u32(1)),
				rawAVPBytes(avp.OriginHost, mbit, []byte(rawClientHost)),
				rawAVPBytes(avp.OriginRealm, mbit, []byte(peersRealm)),
				rawAVPBytes(avp.DestinationRealm, mbit, []byte(gatewayRealm)),
			}
		},
		want: resultApplicationUnsupported,
	},
}

// Headers that break framing: the gateway cannot find the next message, so it
// closes the connection (RFC 6733 §3 requires a Message Length that is a
// multiple of 4 and covers the 20-byte header).
var malformedHeaders = []struct{ name, hex string }{
	{"Message Length 19", "01000013" + "c0000110" + "00000004" + "00000091" + "00000091"},
	{"Message Length 22", "01000016" + "c0000110" + "00000004" + "00000092" + "00000092" + "0000"},
	{"Message Length 16 MiB", "01fffffc" + "c0000110" + "00000004" + "00000093" + "00000093"},
}

// checkRawAnswer returns what is wrong with ans as the gateway's answer to a
// request with cmd, app and hbh: the header, Session-Id first unless
// sessionID is empty, the Result-Code, the gateway's Origin-Host and, unless
// failed is 0, that AVP inside Failed-AVP.
func checkRawAnswer(ans rawMessage, cmd, app, hbh uint32, sessionID string, want, failed uint32) error {
	var errs []error
	if ans.cmd != cmd || ans.app != app || ans.hbh != hbh || ans.e2e != hbh {
		errs = append(errs, fmt.Errorf("command %d app %d ids %#x/%#x, want %d %d %#x/%#x",
			ans.cmd, ans.app, ans.hbh, ans.e2e, cmd, app, hbh, hbh))
	}
	if rc := ans.resultCode(); rc != want {
		errs = append(errs, fmt.Errorf("Result-Code %d, want %d", rc, want))
	}
	wantFlags := byte(0)
	if want/1000 == 3 {
		wantFlags = flagE // only protocol errors carry the E bit (RFC 6733 §7.1.3)
	}
	if ans.flags&(flagR|flagE) != wantFlags {
		errs = append(errs, fmt.Errorf("flags %#x, want R clear and E %v", ans.flags, wantFlags != 0))
	}
	if sessionID != "" && (len(ans.avps) == 0 || ans.avps[0].code != avp.SessionID || string(ans.avps[0].data) != sessionID) {
		errs = append(errs, fmt.Errorf("first AVP is not Session-Id %q", sessionID))
	}
	if origin, _ := ans.find(avp.OriginHost); string(origin.data) != gatewayHost {
		errs = append(errs, fmt.Errorf("Origin-Host %q, want %q", origin.data, gatewayHost))
	}
	if failed != 0 {
		if err := checkFailedAVP(ans, failed); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkFailedAVP checks that ans carries a Failed-AVP holding an AVP code.
func checkFailedAVP(ans rawMessage, code uint32) error {
	group, ok := ans.find(avp.FailedAVP)
	if !ok {
		return errors.New("no Failed-AVP")
	}
	inner, err := parseAVPs(group.data)
	if err != nil {
		return fmt.Errorf("Failed-AVP %x: %w", group.data, err)
	}
	for _, a := range inner {
		if a.code == code {
			return nil
		}
	}
	return fmt.Errorf("Failed-AVP %x does not hold AVP %d", group.data, code)
}

// goodPeer runs CCR-Initial/Terminate pairs on its own connection until stop
// closes or 30 s pass, counting the pairs answered with 2001 twice.
type goodPeer struct {
	ok   atomic.Int64
	mu   sync.Mutex
	errs []error // the first few failures
	done chan struct{}
}

func runGoodPeer(cc *ccClient, stop <-chan struct{}) *goodPeer {
	g := &goodPeer{done: make(chan struct{})}
	go func() {
		defer close(g.done)
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("%s;%d;good-%d", ccClientHost, deadline.Unix(), i)
			err := cc.expect(id, ccrInitial, 0, resultSuccess)
			if err == nil {
				err = cc.expect(id, ccrTerminate, 1, resultSuccess)
			}
			if err == nil {
				g.ok.Add(1)
				continue
			}
			g.mu.Lock()
			if len(g.errs) < 5 {
				g.errs = append(g.errs, err)
			}
			g.mu.Unlock()
		}
	}()
	return g
}

// advanced waits up to 5 s for the good peer to complete one more pair.
func (g *goodPeer) advanced() bool {
	from := g.ok.Load()
	return poll(5*time.Second, func() bool { return g.ok.Load() > from })
}

func TestDiameterMalformedKeepsServing(t *testing.T) {
	c := startCluster(t, 2)
	stop := make(chan struct{})
	good := runGoodPeer(dialCC(t, c.diameter), stop)
	defer func() {
		close(stop)
		<-good.done
		for _, err := range good.errs {
			t.Errorf("well-behaved peer: %v", err)
		}
		t.Logf("well-behaved peer: %d CCR-Initial/Terminate pairs answered 2001", good.ok.Load())
	}()

	p := dialRaw(t, c.diameter)
	for i, tc := range malformedRequests {
		hbh := uint32(0x100 + i)
		sid := fmt.Sprintf("%s;%d;malformed-%d", rawClientHost, time.Now().Unix(), i)
		msg := rawMsg(flagR|flagP, tc.cmd, tc.app, hbh, tc.avps(sid)...)
		if tc.patch != nil {
			tc.patch(msg)
		}
		wantSID := sid
		if tc.want == resultMissingAVP {
			wantSID = ""
		}
		ans := p.roundTrip(msg)
		if err := checkRawAnswer(ans, tc.cmd, tc.app, hbh, wantSID, tc.want, tc.failed); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}

		// The same connection still serves a well-formed CCR.
		hbh += 0x1000
		ok := rawMsg(flagR|flagP, cmdCreditControl, appCreditControl, hbh, rawCCRInitial(sid+";ok")...)
		if err := checkRawAnswer(p.roundTrip(ok), cmdCreditControl, appCreditControl, hbh, sid+";ok", resultSuccess, 0); err != nil {
			t.Errorf("CCR-Initial after %s: %v", tc.name, err)
		}
		if !good.advanced() {
			t.Errorf("the well-behaved peer got no 2001 pair within 5 s of %s", tc.name)
		}
	}

	for i, tc := range malformedHeaders {
		q := dialRawCER(t, c.diameter, rawCERAs(byte('a'+i)))
		b, _ := hex.DecodeString(tc.hex)
		q.write(b)
		if err := q.expectClosed(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !good.advanced() {
			t.Errorf("the well-behaved peer got no 2001 pair within 5 s of %s", tc.name)
		}
	}

	// The first raw connection outlived the others' framing errors.
	hbh := uint32(0x9999)
	sid := fmt.Sprintf("%s;%d;last", rawClientHost, time.Now().Unix())
	last := rawMsg(flagR|flagP, cmdCreditControl, appCreditControl, hbh, rawCCRInitial(sid)...)
	if err := checkRawAnswer(p.roundTrip(last), cmdCreditControl, appCreditControl, hbh, sid, resultSuccess, 0); err != nil {
		t.Errorf("final CCR-Initial: %v", err)
	}
}

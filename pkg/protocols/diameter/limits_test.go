package diameter_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/fiorix/go-diameter/v4/diam/avp"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"github.com/rs/zerolog"

	dia "github.com/shardgate/shardgate/pkg/protocols/diameter"
)

// logLines is a zerolog writer that keeps each line. It is safe for
// concurrent use.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

func (l *logLines) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

func TestServerMaxPeers(t *testing.T) {
	logs := &logLines{}
	f := startServer(t, func(o *dia.ServerOptions) {
		o.MaxPeers = 2
		o.Logger = zerolog.New(logs)
	})
	open := dial(t, f.srv.Addr())
	open.open("open.peers.test")
	waiting := dial(t, f.srv.Addr()) // no CER yet, but it counts
	waitFor(t, "two connections", func() bool { return len(f.srv.Peers().([]dia.PeerInfo)) == 2 })

	for i := range 3 {
		extra := dial(t, f.srv.Addr())
		extra.expectClosed()
		want := float64(i + 1)
		if got := counterValue(t, f.reg, "shardgate_diameter_connections_rejected_total", nil); got != want {
			t.Fatalf("connections_rejected_total = %v, want %v", got, want)
		}
	}
	if n := logs.count("MaxPeers connections are open"); n != 1 {
		t.Errorf("%d log lines for 3 rejected connections in one burst, want 1", n)
	}

	open.send(open.ccr("while-full", 4, 0))
	if rc := resultCode(t, open.read()); rc != dia.ResultSuccess {
		t.Fatalf("open peer while full: Result-Code %d, want 2001", rc)
	}
	waiting.conn.Close()
	waitFor(t, "one connection", func() bool { return len(f.srv.Peers().([]dia.PeerInfo)) == 1 })
	next := dial(t, f.srv.Addr())
	next.open("next.peers.test")
}

func TestServerCERSizeLimit(t *testing.T) {
	f := startServer(t, nil)
	host, realm := []byte("client.peers.test"), []byte("peers.test")
	base := len(rawCER(dia.Header{}, host, realm))
	// padded returns a CER of exactly size bytes, filled with an AVP that has
	// no M bit and so is ignored.
	padded := func(size int) []byte {
		fill := dia.AppendAVP(nil, 65001, 0, 0, make([]byte, size-base-8))
		return rawCER(dia.Header{}, host, realm, fill)
	}

	t.Run("4096 bytes accepted", func(t *testing.T) {
		c := dial(t, f.srv.Addr())
		c.writeRaw(padded(4096))
		if _, result, _ := c.readCEA(); result != dia.ResultSuccess {
			t.Fatalf("CEA Result-Code = %d, want 2001", result)
		}
		// After the CER the limit is MaxMessage: an 8 KiB CCR goes through.
		ccr := c.ccr("large-after-cer", 4, 0)
		ccr.NewAVP(avp.UserName, avp.Mbit, 0, datatype.UTF8String(strings.Repeat("u", 8<<10)))
		c.send(ccr)
		if rc := resultCode(t, c.read()); rc != dia.ResultSuccess {
			t.Fatalf("8 KiB CCR after the CER: Result-Code %d, want 2001", rc)
		}
	})
	t.Run("4100 bytes closed", func(t *testing.T) {
		c := dial(t, f.srv.Addr())
		c.writeRaw(padded(4100))
		c.expectClosed()
	})
	t.Run("header of a 64 KiB CER closed", func(t *testing.T) {
		// Only the header is sent: the server must close without waiting
		// for, or allocating, the body.
		c := dial(t, f.srv.Addr())
		c.writeRaw(unhexT(t, "01 00fffc 80 000101 00000000 00000001 00000001"))
		c.expectClosed()
	})
}

func TestServerPeerLabelsBounded(t *testing.T) {
	f := startServer(t, nil)
	const peers = 70
	for i := range peers {
		c := dial(t, f.srv.Addr())
		c.open(fmt.Sprintf("peer-%02d.peers.test", i))
		c.send(c.ccr(fmt.Sprintf("s-%d", i), 4, 0))
		if rc := resultCode(t, c.read()); rc != dia.ResultSuccess {
			t.Fatalf("peer %d: Result-Code %d, want 2001", i, rc)
		}
		c.conn.Close()
	}
	values := peerLabelValues(t, f, "shardgate_diameter_requests_total")
	if len(values) != 65 {
		t.Errorf("%d distinct peer labels, want 64 Origin-Hosts and other", len(values))
	}
	if got := counterValue(t, f.reg, "shardgate_diameter_requests_total",
		map[string]string{"peer": "other", "app": "credit_control"}); got != peers-64 {
		t.Errorf(`requests_total{peer="other"} = %v, want %d`, got, peers-64)
	}
	if got := counterValue(t, f.reg, "shardgate_diameter_requests_total",
		map[string]string{"peer": "peer-00.peers.test", "app": "credit_control"}); got != 1 {
		t.Errorf(`requests_total{peer="peer-00.peers.test"} = %v, want 1`, got)
	}
}

// peerLabelValues returns the distinct values of label "peer" in family name.
func peerLabelValues(t *testing.T, f *fixture, name string) map[string]bool {
	t.Helper()
	families, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := make(map[string]bool)
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "peer" {
					values[l.GetValue()] = true
				}
			}
		}
	}
	return values
}

func TestServerKeyLongerThanMaxKey(t *testing.T) {
	cases := []struct {
		name      string
		keyAVP    string
		session   string
		userName  string
		result    uint32
		failedAVP uint32 // 0: no Failed-AVP expected
	}{
		{"Session-Id at MaxKey", "", strings.Repeat("s", dia.MaxKey), "", dia.ResultSuccess, 0},
		{"Session-Id over MaxKey", "", strings.Repeat("s", dia.MaxKey+1), "", dia.ResultInvalidAVPValue, avp.SessionID},
		{"User-Name key over MaxKey", "User-Name", "short", strings.Repeat("u", dia.MaxKey+1),
			dia.ResultInvalidAVPValue, avp.UserName},
		{"long Session-Id, short key", "User-Name", strings.Repeat("s", dia.MaxKey+1), "user",
			dia.ResultSuccess, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startServer(t, func(o *dia.ServerOptions) { o.KeyAVP = tc.keyAVP })
			c := dial(t, f.srv.Addr())
			c.open("client.peers.test")
			ccr := c.ccr(tc.session, 4, 0)
			if tc.userName != "" {
				ccr.NewAVP(avp.UserName, avp.Mbit, 0, datatype.UTF8String(tc.userName))
			}
			c.send(ccr)
			_, ans := c.readRaw()
			rc, _, _ := dia.FindAVP(ans, avp.ResultCode, 0)
			if got, _ := dia.Uint32(rc); got != tc.result {
				t.Fatalf("Result-Code = %d, want %d", got, tc.result)
			}
			failed, ok, _ := dia.FindAVP(ans, avp.FailedAVP, 0)
			if ok != (tc.failedAVP != 0) {
				t.Fatalf("Failed-AVP present = %v, want %v", ok, tc.failedAVP != 0)
			}
			if tc.failedAVP != 0 {
				value := tc.session
				if tc.failedAVP == avp.UserName {
					value = tc.userName
				}
				want := dia.AppendString(nil, tc.failedAVP, dia.AVPFlagMandatory, 0, value)
				if !bytes.Equal(failed, want) {
					t.Fatalf("Failed-AVP holds %d bytes, want the %d-byte AVP %d", len(failed), len(want), tc.failedAVP)
				}
			}
			wantForwards := int64(0)
			if tc.result == dia.ResultSuccess {
				wantForwards = 1
			}
			if got := f.fwd.calls.Load(); got != wantForwards {
				t.Fatalf("forwarded %d requests, want %d", got, wantForwards)
			}
		})
	}
}

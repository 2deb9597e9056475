package diameter

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLabelValueInvalidUTF8(t *testing.T) {
	for _, s := range []string{"\xff\xfe\xc0", "ok\xc0", "\xed\xa0\x80"} {
		if got := labelValue(s); !utf8.ValidString(got) {
			t.Errorf("labelValue(%q) = %q, not valid UTF-8", s, got)
		}
	}
	if got := labelValue("client.peers.test"); got != "client.peers.test" {
		t.Errorf("labelValue changed a valid value to %q", got)
	}
}

func TestMetricsInvalidUTF8Peer(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	// Each call panicked in prometheus before the label was made valid.
	m.requested("\xff\xfe\xc0", AppCreditControl)
	m.answered("\xff\xfe\xc0", AppCreditControl, ResultSuccess)
}

func TestPeerLabelsFirstSeen(t *testing.T) {
	l := newPeerLabels(nil)
	for i := range maxPeerLabels {
		host := fmt.Sprintf("peer-%d.test", i)
		if got := l.label(host); got != host {
			t.Fatalf("label(%q) = %q, want the host while there is room", host, got)
		}
	}
	if got := l.label("late.test"); got != otherPeerLabel {
		t.Errorf("label of host %d = %q, want %q", maxPeerLabels+1, got, otherPeerLabel)
	}
	if got := l.label("PEER-3.test"); got != "peer-3.test" {
		t.Errorf(`label("PEER-3.test") = %q, want the first spelling "peer-3.test"`, got)
	}
	if n := len(l.byHost); n != maxPeerLabels {
		t.Errorf("%d labels kept, want %d", n, maxPeerLabels)
	}
}

func TestPeerLabelsAllowList(t *testing.T) {
	l := newPeerLabels([]string{"A.peers.test", "b.peers.test"})
	cases := map[string]string{
		"a.peers.test": "A.peers.test",
		"B.PEERS.TEST": "b.peers.test",
		"c.peers.test": otherPeerLabel,
	}
	for host, want := range cases {
		if got := l.label(host); got != want {
			t.Errorf("label(%q) = %q, want %q", host, got, want)
		}
	}
}

func TestValidIdentity(t *testing.T) {
	cases := map[string]bool{
		"gw.example.net":                   true,
		"under_score.example":              true,
		"":                                 false,
		"with space":                       false,
		"tab\t":                            false,
		"\x7f":                             false,
		"h\u00f6st":                        false,
		"\xff\xfe\xc0":                     false,
		strings.Repeat("a", maxIdentity):   true,
		strings.Repeat("a", maxIdentity+1): false,
	}
	for s, want := range cases {
		if got := validIdentity([]byte(s)); got != want {
			t.Errorf("validIdentity(%q) = %v, want %v", s, got, want)
		}
	}
}

package config

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestGatewayDefaults(t *testing.T) {
	g, err := ParseGateway(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if g.CoAPAddr != ":5683" || g.DiameterAddr != ":3868" || g.AdminAddr != ":8080" || g.SerfAddr != ":7946" {
		t.Errorf("listen defaults = %q %q %q %q", g.CoAPAddr, g.DiameterAddr, g.AdminAddr, g.SerfAddr)
	}
	if g.DiameterHost != g.Name {
		t.Errorf("Origin-Host %q, want the node name %q", g.DiameterHost, g.Name)
	}
	if g.CoAPKey != "path:/d/{id}" || g.DiameterKey != "Session-Id" {
		t.Errorf("keys = %q %q", g.CoAPKey, g.DiameterKey)
	}
	if g.LinkConns != 1 {
		t.Errorf("link connections per worker = %d, want 1", g.LinkConns)
	}
}

func TestEnvironmentAndFlagPrecedence(t *testing.T) {
	e := env(map[string]string{
		"SHARDGATE_COAP_ADDR": "127.0.0.1:6000",
		"SHARDGATE_JOIN":      "gw-0.gw:7946, gw-1.gw",
		"SHARDGATE_NAME":      "from-env",
	})
	g, err := ParseGateway([]string{"--name", "from-flag"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if g.CoAPAddr != "127.0.0.1:6000" {
		t.Errorf("coap-addr %q, want the variable's value", g.CoAPAddr)
	}
	if g.Name != "from-flag" {
		t.Errorf("name %q, want the flag to win over the variable", g.Name)
	}
	if !slices.Equal(g.Join, []string{"gw-0.gw:7946", "gw-1.gw"}) {
		t.Errorf("join %q", g.Join)
	}
}

func TestWorkerDurations(t *testing.T) {
	w, err := ParseWorker([]string{"--session-idle", "90s"}, env(map[string]string{"SHARDGATE_DRAIN_TIMEOUT": "3s"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if w.SessionIdle != 90*time.Second || w.DrainTimeout != 3*time.Second || w.LinkAddr != ":9000" {
		t.Errorf("worker = %+v", w)
	}
}

func TestBadValuesNameTheFlag(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--coap-addr", "5683"}, nil, "--coap-addr"},
		{[]string{"--coap-key", "header:x"}, nil, "--coap-key"},
		{[]string{"--coap-key", "path:/d/x"}, nil, "--coap-key"},
		{[]string{"--join", "a:99999"}, nil, "--join"},
		{[]string{"--log-format", "xml"}, nil, "--log-format"},
		{[]string{"--serf-profile", "wan"}, nil, "--serf-profile"},
		{[]string{"--link-conns", "0"}, nil, "--link-conns"},
		{nil, map[string]string{"SHARDGATE_LINK_CONNS": "65"}, "--link-conns"},
		{nil, map[string]string{"SHARDGATE_ADMIN_ADDR": "nope"}, "--admin-addr"},
		{[]string{"stray"}, nil, "stray"},
	}
	for _, tc := range cases {
		_, err := ParseGateway(tc.args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("args %q env %v: error %v, want one naming %s", tc.args, tc.env, err, tc.want)
		}
	}
	_, err := ParseWorker(nil, env(map[string]string{"SHARDGATE_SESSION_IDLE": "soon"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "SHARDGATE_SESSION_IDLE") {
		t.Errorf("bad variable: error %v, want one naming SHARDGATE_SESSION_IDLE", err)
	}
}

func TestEnvVars(t *testing.T) {
	gw := EnvVars(RoleGateway)
	for _, want := range []string{"SHARDGATE_COAP_ADDR", "SHARDGATE_DIAMETER_HOST", "SHARDGATE_JOIN", "SHARDGATE_ADVERTISE"} {
		if !slices.Contains(gw, want) {
			t.Errorf("gateway variables %v lack %s", gw, want)
		}
	}
	if slices.Contains(gw, "SHARDGATE_LINK_ADDR") || slices.Contains(gw, "SHARDGATE_VERSION") {
		t.Errorf("gateway variables %v include one it does not read", gw)
	}
	if !slices.Contains(EnvVars(RoleWorker), "SHARDGATE_LINK_ADDR") {
		t.Error("worker variables lack SHARDGATE_LINK_ADDR")
	}
	if EnvVars("proxy") != nil {
		t.Error("unknown role returned variables")
	}
}

func TestParseCoAPKey(t *testing.T) {
	k, err := ParseCoAPKey("path:/t/x/{id}")
	if err != nil || k.Kind != KeyPath || !slices.Equal(k.Prefix, []string{"t", "x"}) {
		t.Errorf("path key = %+v, %v", k, err)
	}
	k, err = ParseCoAPKey("query:ep")
	if err != nil || k.Kind != KeyQuery || k.Query != "ep" {
		t.Errorf("query key = %+v, %v", k, err)
	}
	if _, err := ParseCoAPKey("source:x"); err == nil {
		t.Error("source:x accepted")
	}
}

func TestListFlagsRejectEmptyLists(t *testing.T) {
	if _, err := ParseGateway([]string{"--diameter-peers", ",,,"}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "diameter-peers") {
		t.Errorf("--diameter-peers ,,, gave %v, want an error naming the flag", err)
	}
	if _, err := ParseGateway([]string{"--join", "::::"}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "--join") {
		t.Errorf("--join :::: gave %v, want an error naming the flag", err)
	}
	if _, err := ParseGateway([]string{"--join", "[::1]:7946,gw-0.gw"}, env(nil), io.Discard); err != nil {
		t.Errorf("--join with a bracketed IPv6 address: %v", err)
	}
}

func TestUnknownEnv(t *testing.T) {
	got := UnknownEnv(RoleWorker, []string{"SHARDGATE_LINK_ADDR=:1", "SHARDGATE_LINKADDR=:2", "HOME=/root", "SHARDGATE_COAP_ADDR=:3"})
	if !slices.Equal(got, []string{"SHARDGATE_LINKADDR", "SHARDGATE_COAP_ADDR"}) {
		t.Errorf("UnknownEnv = %v, want the misspelt and the gateway-only variable", got)
	}
}

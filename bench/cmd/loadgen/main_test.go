package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseFlagsDefaults(t *testing.T) {
	c, out, meta, err := parseFlags([]string{"-target", "127.0.0.1:5683", "-pids", "gw=10,w1=11", "-out", "r.json"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != "coap" || c.InFlight != 256 || c.Sockets != 16 || !c.CoAP.Confirmable {
		t.Errorf("defaults %+v, want coap CON 256 in flight over 16 sockets", c)
	}
	if c.PaceQuantum != 100*time.Microsecond {
		t.Errorf("pace quantum %v, want 100us", c.PaceQuantum)
	}
	if c.PIDs["gw"] != 10 || c.PIDs["w1"] != 11 || out != "r.json" || meta.scenario != "coap" {
		t.Errorf("pids %v out %q scenario %q", c.PIDs, out, meta.scenario)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, tc := range []struct{ args, want string }{
		{"-target 8.8.8.8:53", "not a loopback address"},
		{"-pids 1234", "want name=pid"},
		{"-mode http", "invalid -mode"},
		{"-inflight 4 -sockets 8", "invalid -inflight"},
		{"-duration 0s", "invalid -duration"},
		{"-pace-quantum -1us", "invalid -pace-quantum"},
		{"-pace-quantum 2s", "invalid -pace-quantum"},
	} {
		_, _, _, err := parseFlags(strings.Fields(tc.args))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFlags(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

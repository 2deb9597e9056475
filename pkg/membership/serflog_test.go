package membership

import (
	"bytes"
	"encoding/json"
	"log"
	"testing"

	"github.com/rs/zerolog"
)

func TestLogWriterLevels(t *testing.T) {
	tests := []struct {
		line      string
		level     string
		component string
		message   string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:5000",
			"debug", "memberlist", "Stream connection from=127.0.0.1:5000"},
		{"[INFO] serf: attempting reconnect to w1 127.0.0.1:7946",
			"info", "serf", "attempting reconnect to w1 127.0.0.1:7946"},
		{"[WARN] serf: Shutdown without a Leave", "warn", "serf", "Shutdown without a Leave"},
		{"[ERR] memberlist: Failed to send ping: timeout", "error", "memberlist", "Failed to send ping: timeout"},
		{"[ERROR] memberlist: bad packet", "error", "memberlist", "bad packet"},
		{"[TRACE] memberlist: gossip", "trace", "memberlist", "gossip"},
		{"no level here", "info", "", "no level here"},
		{"[NOTICE] serf: odd", "info", "", "[NOTICE] serf: odd"},
		// Membership logs member events itself, so these repeats go to debug.
		{"[INFO] serf: EventMemberJoin: w1 127.0.0.1", "debug", "serf", "EventMemberJoin: w1 127.0.0.1"},
		{"[INFO] memberlist: Marking w2 as failed, suspect timeout reached (1 peer confirmations)",
			"debug", "memberlist", "Marking w2 as failed, suspect timeout reached (1 peer confirmations)"},
		{"[ERR] memberlist: Failed to send nack: write udp: use of closed network connection",
			"debug", "memberlist", "Failed to send nack: write udp: use of closed network connection"},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		logger := zerolog.New(&buf).Level(zerolog.TraceLevel)
		log.New(logWriter{logger: logger}, "", 0).Println(tt.line)

		var got struct {
			Level     string `json:"level"`
			Component string `json:"component"`
			Message   string `json:"message"`
		}
		if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatalf("%q: output %q is not JSON: %v", tt.line, buf.String(), err)
		}
		if got.Level != tt.level {
			t.Errorf("%q: level = %q, want %q", tt.line, got.Level, tt.level)
		}
		if got.Component != tt.component {
			t.Errorf("%q: component = %q, want %q", tt.line, got.Component, tt.component)
		}
		if got.Message != tt.message {
			t.Errorf("%q: message = %q, want %q", tt.line, got.Message, tt.message)
		}
	}
}

func FuzzLogWriter(f *testing.F) {
	f.Add([]byte("[WARN] memberlist: Refuting a suspect message (from: w2)\n"))
	f.Add([]byte("[ERR] serf: Node name conflicts with another node at 127.0.0.1:7946.\n"))
	f.Add([]byte("[INFO] serf: EventMemberJoin: w1 127.0.0.1\n"))
	f.Add([]byte("["))
	f.Add([]byte("]["))
	f.Fuzz(func(t *testing.T, line []byte) {
		var buf bytes.Buffer
		w := logWriter{logger: zerolog.New(&buf).Level(zerolog.TraceLevel)}
		n, err := w.Write(line)
		if err != nil || n != len(line) {
			t.Fatalf("Write = %d, %v, want %d, nil", n, err, len(line))
		}
		if !json.Valid(buf.Bytes()) {
			t.Fatalf("output %q is not JSON", buf.String())
		}
	})
}

package worker

import (
	"io"
	"testing"

	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/pkg/config"
)

// TestContextSetBeforeLinkServes checks that the applications' context
// exists when New returns: the link server already listens then, and a
// gateway that reconnects at once may send frames before Run starts.
func TestContextSetBeforeLinkServes(t *testing.T) {
	cfg, err := config.ParseWorker([]string{"--name", "w-test", "--link-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--serf-addr", "127.0.0.1:0"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.stop)
	if w.handler.ctx == nil {
		t.Fatal("frame handler has no context after New, while the link server already accepts frames")
	}
	if err := w.handler.ctx.Err(); err != nil {
		t.Fatalf("frame handler context already ended: %v", err)
	}
}

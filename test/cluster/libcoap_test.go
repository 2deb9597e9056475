package cluster_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// libcoap's coap-client (Debian libcoap3-bin 4.3.1) exits 0 even on 4.xx
// responses and timeouts, so each check reads the response code from stderr
// and the body from -o FILE.
func coapClient(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"coap-client-notls", "coap-client"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("libcoap's coap-client-notls is not installed (Debian package libcoap3-bin); .ci/run installs it")
	return ""
}

type coapRun struct {
	body   string
	stderr string
}

func runClient(t *testing.T, bin string, args ...string) coapRun {
	t.Helper()
	out := filepath.Join(t.TempDir(), "body")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-B", "5", "-o", out}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v, stderr %s", bin, args, err, stderr.String())
	}
	body, _ := os.ReadFile(out)
	return coapRun{body: string(body), stderr: stderr.String()}
}

func TestLibcoapClient(t *testing.T) {
	bin := coapClient(t)
	c := startCluster(t, 2)
	uri := "coap://" + c.coap

	r := runClient(t, bin, "-m", "post", "-e", "21", uri+"/d/lib1/telemetry")
	if r.stderr != "" {
		t.Fatalf("POST telemetry: stderr %q", r.stderr)
	}
	r = runClient(t, bin, "-m", "get", uri+"/d/lib1/state")
	if !strings.Contains(r.body, `"count":1`) || !strings.Contains(r.body, `"last":"21"`) {
		t.Fatalf("CON GET state = %q, want count 1 and last 21", r.body)
	}
	r = runClient(t, bin, "-N", "-m", "get", uri+"/d/lib1/state")
	if !strings.Contains(r.body, `"count":1`) {
		t.Fatalf("NON GET state = %q, stderr %q", r.body, r.stderr)
	}

	t.Run("block-wise", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "config")
		big := strings.Repeat("0123456789", 200)
		if err := os.WriteFile(cfg, []byte(big), 0o600); err != nil {
			t.Fatal(err)
		}
		// Block1 upload in 64-byte blocks, then a Block2 download.
		r := runClient(t, bin, "-b", "64", "-m", "put", "-f", cfg, uri+"/d/lib1/config")
		if r.stderr != "" {
			t.Fatalf("block-wise PUT: stderr %q", r.stderr)
		}
		r = runClient(t, bin, "-m", "get", uri+"/d/lib1/state")
		if len(r.body) <= 1024 || !strings.Contains(r.body, big) {
			t.Fatalf("block-wise GET returned %d bytes, want the state over 1 KiB with the config", len(r.body))
		}
		small := runClient(t, bin, "-b", "64", "-m", "get", uri+"/d/lib1/state")
		if small.body != r.body {
			t.Fatalf("GET with 64-byte blocks differs from the default block size")
		}
	})

	t.Run("unknown critical option", func(t *testing.T) {
		r := runClient(t, bin, "-O", "65001,x", uri+"/d/lib1/state")
		if !strings.HasPrefix(r.stderr, "4.02") {
			t.Fatalf("stderr %q, want 4.02", r.stderr)
		}
	})

	t.Run("observe", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "notes")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		obs := exec.CommandContext(ctx, bin, "-B", "10", "-w", "-s", "6", "-o", out, uri+"/d/lib1/state")
		var stderr bytes.Buffer
		obs.Stderr = &stderr
		if err := obs.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait until the registration reached the worker: the first
		// response is written to the output file.
		if !poll(5*time.Second, func() bool { b, _ := os.ReadFile(out); return len(b) > 0 }) {
			t.Fatalf("no registration response; stderr %q", stderr.String())
		}
		for _, v := range []string{"n1", "n2", "n3"} {
			runClient(t, bin, "-m", "post", "-e", v, uri+"/d/lib1/telemetry")
		}
		var got []string
		re := regexp.MustCompile(`"last":"(n[123])"`)
		poll(5*time.Second, func() bool {
			b, _ := os.ReadFile(out)
			got = got[:0]
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				got = append(got, m[1])
			}
			return len(got) == 3
		})
		obs.Wait()
		if strings.Join(got, ",") != "n1,n2,n3" {
			t.Fatalf("notifications %v, want n1,n2,n3; stderr %q", got, stderr.String())
		}
	})
}

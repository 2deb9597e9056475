package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startServer serves s on a loopback port until the test ends and checks
// that Serve returns nil after Shutdown.
func startServer(t *testing.T, s *Server) string {
	t.Helper()
	if err := s.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
	})
	return "http://" + s.Addr()
}

func newTestServer() *Server {
	return New("127.0.0.1:0", zerolog.Nop())
}

// get returns the status, Content-Type and body of a GET request.
func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

func TestHealthz(t *testing.T) {
	base := startServer(t, newTestServer())

	status, _, body := get(t, base+"/healthz")
	if status != http.StatusOK {
		t.Errorf("status = %d, want 200", status)
	}
	if body != "ok\n" {
		t.Errorf("body = %q, want %q", body, "ok\n")
	}
}

func TestReadyzFollowsChecks(t *testing.T) {
	s := newTestServer()
	var joined atomic.Bool
	s.AddReadiness("membership", func() error {
		if !joined.Load() {
			return errors.New("not joined to the cluster yet")
		}
		return nil
	})
	s.AddReadiness("link", func() error { return nil })
	base := startServer(t, s)

	status, _, body := get(t, base+"/readyz")
	if status != http.StatusServiceUnavailable {
		t.Errorf("status before join = %d, want 503", status)
	}
	if want := "membership: not joined to the cluster yet\n"; body != want {
		t.Errorf("body before join = %q, want %q", body, want)
	}

	joined.Store(true)
	status, _, body = get(t, base+"/readyz")
	if status != http.StatusOK {
		t.Errorf("status after join = %d, want 200", status)
	}
	if body != "ok\n" {
		t.Errorf("body after join = %q, want %q", body, "ok\n")
	}
}

func TestReadyzWithoutChecks(t *testing.T) {
	base := startServer(t, newTestServer())
	if status, _, _ := get(t, base+"/readyz"); status != http.StatusOK {
		t.Errorf("status = %d, want 200", status)
	}
}

func TestMetricsExposesCounter(t *testing.T) {
	s := newTestServer()
	requests := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "shardgate",
		Name:      "test_requests_total",
		Help:      "Requests counted by the admin test.",
	})
	s.Registry().MustRegister(requests)
	requests.Add(3)
	base := startServer(t, s)

	status, _, body := get(t, base+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("status = %d, want 200", status)
	}
	if !strings.Contains(body, "shardgate_test_requests_total 3\n") {
		t.Errorf("body lacks shardgate_test_requests_total 3:\n%s", body)
	}
	if !strings.Contains(body, "go_goroutines ") {
		t.Error("body lacks the Go collector's go_goroutines")
	}
	if !strings.Contains(body, "process_start_time_seconds ") {
		t.Error("body lacks the process collector's process_start_time_seconds")
	}
}

func TestHandleJSON(t *testing.T) {
	s := newTestServer()
	s.HandleJSON("GET /debug/owner", func(r *http.Request) (any, int) {
		key := r.URL.Query().Get("key")
		if key == "" {
			return errors.New("missing query parameter key"), http.StatusBadRequest
		}
		return map[string]any{"key": key, "worker": "w1"}, 0
	})
	s.HandleJSON("GET /debug/bad", func(*http.Request) (any, int) {
		return func() {}, http.StatusOK // functions cannot be encoded
	})
	base := startServer(t, s)

	tests := []struct {
		path   string
		status int
		body   map[string]any
	}{
		{"/debug/owner?key=imsi-001", http.StatusOK, map[string]any{"key": "imsi-001", "worker": "w1"}},
		{"/debug/owner", http.StatusBadRequest, map[string]any{"error": "missing query parameter key"}},
		{"/debug/bad", http.StatusInternalServerError, nil},
	}
	for _, tt := range tests {
		status, contentType, body := get(t, base+tt.path)
		if status != tt.status {
			t.Errorf("%s: status = %d, want %d", tt.path, status, tt.status)
		}
		if contentType != "application/json" {
			t.Errorf("%s: Content-Type = %q, want application/json", tt.path, contentType)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Errorf("%s: body %q is not a JSON object: %v", tt.path, body, err)
			continue
		}
		if tt.body == nil {
			if _, ok := got["error"]; !ok {
				t.Errorf("%s: body %q lacks an error field", tt.path, body)
			}
			continue
		}
		for k, v := range tt.body {
			if got[k] != v {
				t.Errorf("%s: %s = %v, want %v", tt.path, k, got[k], v)
			}
		}
	}
}

func TestServeReturnsNilAfterShutdown(t *testing.T) {
	s := newTestServer()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()

	// The server is serving once a request succeeds.
	if status, _, _ := get(t, "http://"+s.Addr()+"/healthz"); status != http.StatusOK {
		t.Fatalf("healthz status = %d, want 200", status)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return within 5s of Shutdown")
	}
}

func TestShutdownBeforeServe(t *testing.T) {
	s := newTestServer()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := s.Serve(); err != nil {
		t.Errorf("Serve after Shutdown = %v, want nil", err)
	}
	client := &http.Client{Timeout: time.Second}
	if resp, err := client.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("request succeeded after Shutdown, want the listener closed")
	}
}

func TestListenReportsBadAddress(t *testing.T) {
	s := New("127.0.0.1:notaport", zerolog.Nop())
	err := s.Listen()
	if err == nil {
		t.Fatal("Listen succeeded, want an error")
	}
	if !strings.Contains(err.Error(), `"127.0.0.1:notaport"`) {
		t.Errorf("error %q does not name the address", err)
	}
}

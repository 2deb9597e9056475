// Package admin is the HTTP server for operators and probes that both
// binaries run: /healthz for liveness, /readyz for readiness, /metrics for
// Prometheus and whatever debug endpoints the caller adds.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Timeouts of the admin server. Probes and scrapes are small requests from
// inside the cluster, so a slow client is cut off instead of holding a
// connection.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second // a large /metrics body on a busy node
	idleTimeout       = 2 * time.Minute  // longer than Prometheus scrape intervals
	maxHeaderBytes    = 64 << 10
)

// Server is the admin HTTP server. It is safe for concurrent use: handlers
// and readiness checks may be added while it serves.
type Server struct {
	addr     string
	logger   zerolog.Logger
	mux      *http.ServeMux
	registry *prometheus.Registry
	http     *http.Server

	// mu guards the fields below.
	mu       sync.Mutex
	checks   []readinessCheck // in registration order
	listener net.Listener
	closing  bool
}

type readinessCheck struct {
	name  string
	check func() error
}

// New returns a server for addr (host:port, ":0" picks a free port) with
// /healthz, /readyz and /metrics registered. The registry already holds
// the Go runtime and process collectors.
func New(addr string, logger zerolog.Logger) *Server {
	s := &Server{
		addr:     addr,
		logger:   logger,
		mux:      http.NewServeMux(),
		registry: prometheus.NewRegistry(),
	}
	s.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	s.http = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          log.New(errorLogWriter{logger: logger}, "", 0),
	}

	s.mux.HandleFunc("GET /healthz", s.serveHealth)
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{
		ErrorLog:      promLogger{logger: logger},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      s.registry,
	}))
	// Go's profiler, for finding where a busy node spends its time. A
	// CPU profile must be shorter than writeTimeout.
	s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return s
}

// Registry returns the registry /metrics serves. Register the process's
// collectors here rather than in the global default registry.
func (s *Server) Registry() *prometheus.Registry {
	return s.registry
}

// Handle registers h for pattern, in http.ServeMux syntax such as
// "GET /debug/cluster". Like ServeMux, it panics if the pattern is
// invalid or conflicts with one already registered.
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
}

// HandleJSON registers fn for pattern and writes its result as JSON with
// the status it returns (200 when 0). A result that is an error is written
// as {"error": "<message>"}.
func (s *Server) HandleJSON(pattern string, fn func(r *http.Request) (any, int)) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		body, status := fn(r)
		s.writeJSON(w, body, status)
	})
}

// AddReadiness adds a check that /readyz runs on every request. A check
// must be quick and safe to call from many goroutines at once.
func (s *Server) AddReadiness(name string, check func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, readinessCheck{name: name, check: check})
}

// Listen binds the server's address, so Addr reports the port even when
// it was ":0". Serve calls it when it has not been called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener != nil {
		return nil
	}
	if s.closing {
		return fmt.Errorf("admin: listen on %q: server is shut down", s.addr)
	}

	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("admin: listen on %q: %w", s.addr, err)
	}
	s.listener = ln
	s.logger.Info().Str("addr", ln.Addr().String()).Msg("admin server listening")
	return nil
}

// Addr returns the bound address after Listen, and the configured one
// before.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener != nil {
		return s.listener.Addr().String()
	}
	return s.addr
}

// Serve handles requests until Shutdown, and then returns nil, also when
// Shutdown came first. Any other return is an error of the listener.
func (s *Server) Serve() error {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return nil
	}
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	ln := s.listener
	s.mu.Unlock()

	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("admin: serve on %s: %w", ln.Addr(), err)
}

// Shutdown makes /readyz fail, stops accepting connections and waits for
// requests in progress until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	ln := s.listener
	s.mu.Unlock()

	err := s.http.Shutdown(ctx)
	// http.Server closes only the listeners Serve has seen, so close one
	// that Listen opened but Serve never used.
	if ln != nil {
		if closeErr := ln.Close(); closeErr != nil && !errors.Is(closeErr, net.ErrClosed) {
			err = errors.Join(err, closeErr)
		}
	}
	if err != nil {
		return fmt.Errorf("admin: shut down server on %s: %w", s.Addr(), err)
	}
	return nil
}

func (s *Server) serveHealth(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusOK, "ok")
}

// serveReady writes 200 "ok" when every check passes, and 503 listing
// each failing check as "name: error" otherwise.
func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	closing := s.closing
	checks := s.checks
	s.mu.Unlock()

	if closing {
		writeText(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	var failures []string
	for _, c := range checks {
		if err := c.check(); err != nil {
			failures = append(failures, c.name+": "+err.Error())
		}
	}
	if len(failures) > 0 {
		writeText(w, http.StatusServiceUnavailable, strings.Join(failures, "\n"))
		return
	}
	writeText(w, http.StatusOK, "ok")
}

func (s *Server) writeJSON(w http.ResponseWriter, body any, status int) {
	if status == 0 {
		status = http.StatusOK
	}
	if err, ok := body.(error); ok {
		body = map[string]string{"error": err.Error()}
	}
	data, err := json.Marshal(body)
	if err != nil {
		s.logger.Error().Err(err).Str("type", fmt.Sprintf("%T", body)).Msg("admin: encode JSON response")
		status = http.StatusInternalServerError
		data, _ = json.Marshal(map[string]string{"error": "encode response: " + err.Error()})
	}

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

func writeText(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(text + "\n"))
}

// errorLogWriter sends net/http's server errors, such as TLS handshake or
// accept failures, to zerolog at warn.
type errorLogWriter struct {
	logger zerolog.Logger
}

func (w errorLogWriter) Write(p []byte) (int, error) {
	w.logger.Warn().Str("component", "http").Msg(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// promLogger sends promhttp's gathering errors to zerolog at error.
type promLogger struct {
	logger zerolog.Logger
}

func (l promLogger) Println(v ...any) {
	l.logger.Error().Str("component", "metrics").Msg(strings.TrimRight(fmt.Sprintln(v...), "\n"))
}

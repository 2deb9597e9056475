package diameter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Forwarder sends requests to the worker that owns their session. It must be
// safe for concurrent use.
type Forwarder interface {
	// Forward sends one request (a whole encoded Diameter message) to the
	// worker owning key and calls done exactly once with the worker's encoded
	// answer, or an error. done must not block. An immediate error return
	// means done will not be called. Forward and done may keep msg and key
	// until done is called, and must not modify them.
	Forward(key []byte, msg []byte, done func(answer []byte, err error)) error
}

// QueueForwarder is a Forwarder that can hold requests until Flush, so that
// the requests read from a peer in one go reach each worker in one write.
// A peer's reader calls QueueForward instead of Forward, and Flush once it
// has no more buffered input.
type QueueForwarder interface {
	Forwarder
	QueueForward(key []byte, msg []byte, done func(answer []byte, err error)) error
	Flush()
}

// ErrOverloaded is wrapped by a Forwarder's error when the request was shed
// for load; the peer then gets 3004 DIAMETER_TOO_BUSY. Any other error gets
// 3002 DIAMETER_UNABLE_TO_DELIVER.
var ErrOverloaded = errors.New("diameter: overloaded")

// ServerOptions configure a Server. Zero values take the defaults noted.
type ServerOptions struct {
	Addr        string // TCP listen address, e.g. ":3868"
	OriginHost  string // required
	OriginRealm string // required
	// KeyAVP names the AVP whose value is the session key (default
	// "Session-Id"). Requests without it are routed by Session-Id.
	KeyAVP string
	// AllowedPeers lists the Origin-Hosts accepted in a CER, compared without
	// regard to ASCII case. An empty list allows all.
	AllowedPeers []string
	// Watchdog is Tw (RFC 3539 §3.4.1): the idle time before the gateway sends
	// a DWR, and again the time it waits for the DWA. Default 30 s.
	Watchdog time.Duration
	// MaxInFlightPerPeer bounds the requests of one peer awaiting a worker;
	// more get 3004. Default 1024.
	MaxInFlightPerPeer int
	// MaxMessage is the largest message accepted, in bytes; a larger one
	// closes the connection. Default 65536. Before its CER is accepted a
	// connection may send at most 4096 bytes in one message.
	MaxMessage int
	// MaxPeers bounds the open TCP connections, counting those still waiting
	// for their CER. The server closes a connection accepted beyond it.
	// Default 1024.
	MaxPeers   int
	Forwarder  Forwarder // required
	Logger     zerolog.Logger
	Registerer prometheus.Registerer // nil: metrics are kept but not registered
}

const (
	defaultWatchdog    = 30 * time.Second
	defaultMaxInFlight = 1024
	defaultMaxMessage  = 64 << 10
	defaultMaxPeers    = 1024
	// maxMessageLimit is the largest Message Length the 24-bit field allows.
	maxMessageLimit = 1<<24 - 4
	// minWatchdog is the smallest Tw RFC 3539 §3.4.1 allows (6 s); tests may
	// go lower, so it is only a warning.
	minWatchdog = 6 * time.Second
)

// Server is a Diameter node on TCP that forwards each request to the worker
// owning its session. It is safe for concurrent use. Where Server.mu and a
// peer's mu are both held, Server.mu is taken first.
type Server struct {
	opts    ServerOptions
	id      Identity
	stateID uint32 // Origin-State-Id: changes on every start (RFC 6733 §8.16)
	router  router
	allowed map[string]bool // lower-cased AllowedPeers
	labels  *peerLabels
	metrics *metrics
	log     zerolog.Logger
	// queue is opts.Forwarder when it implements QueueForwarder, else nil.
	queue QueueForwarder
	// rejectLog logs the first connection closed for MaxPeers in each 10 s,
	// and the metric counts them all.
	rejectLog zerolog.Logger
	ids       atomic.Uint32 // source of Hop-by-Hop and End-to-End identifiers

	mu       sync.Mutex
	ln       net.Listener
	peers    map[*peer]struct{} // every connection, open or not
	hosts    map[string]*peer   // lower-cased Origin-Host to its connection, from CEA to close
	shutdown bool

	wg sync.WaitGroup // peer goroutines
}

// NewServer validates o and returns a server that is not yet listening.
func NewServer(o ServerOptions) (*Server, error) {
	o, err := withDefaults(o)
	if err != nil {
		return nil, err
	}
	code, vendor, err := resolveKeyAVP(o.KeyAVP)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("diameter: register metrics: %w", err)
	}
	log := o.Logger.With().Str("component", "diameter").Logger()
	s := &Server{
		opts:      o,
		id:        Identity{Host: o.OriginHost, Realm: o.OriginRealm},
		stateID:   uint32(time.Now().Unix()),
		router:    router{keyCode: code, keyVendor: vendor, known: knownAVPs()},
		allowed:   make(map[string]bool, len(o.AllowedPeers)),
		labels:    newPeerLabels(o.AllowedPeers),
		metrics:   m,
		log:       log,
		rejectLog: log.Sample(&zerolog.BurstSampler{Burst: 1, Period: 10 * time.Second}),
		peers:     make(map[*peer]struct{}),
		hosts:     make(map[string]*peer),
	}
	s.queue, _ = o.Forwarder.(QueueForwarder)
	// End-to-End identifiers start from the clock (RFC 6733 §3: high 12 bits
	// from the time, low 20 bits counting).
	s.ids.Store(uint32(time.Now().Unix()) << 20)
	for _, h := range o.AllowedPeers {
		s.allowed[strings.ToLower(h)] = true
	}
	if o.Watchdog < minWatchdog {
		s.log.Warn().Dur("watchdog", o.Watchdog).Msg("Tw below the 6 s minimum of RFC 3539")
	}
	return s, nil
}

// withDefaults checks o and fills in the defaults of its zero fields.
func withDefaults(o ServerOptions) (ServerOptions, error) {
	if o.OriginHost == "" || o.OriginRealm == "" {
		return o, fmt.Errorf("diameter: OriginHost %q and OriginRealm %q must both be set", o.OriginHost, o.OriginRealm)
	}
	if o.Forwarder == nil {
		return o, errors.New("diameter: Forwarder must be set")
	}
	if err := checkAllowedPeers(o.AllowedPeers); err != nil {
		return o, err
	}
	if o.Watchdog == 0 {
		o.Watchdog = defaultWatchdog
	}
	if o.Watchdog < 0 {
		return o, fmt.Errorf("diameter: invalid Watchdog %v: must be positive (RFC 3539 suggests 30s)", o.Watchdog)
	}
	if o.MaxInFlightPerPeer == 0 {
		o.MaxInFlightPerPeer = defaultMaxInFlight
	}
	if o.MaxInFlightPerPeer < 0 {
		return o, fmt.Errorf("diameter: invalid MaxInFlightPerPeer %d: must be positive", o.MaxInFlightPerPeer)
	}
	if o.MaxMessage == 0 {
		o.MaxMessage = defaultMaxMessage
	}
	if o.MaxMessage < 256 || o.MaxMessage > maxMessageLimit {
		return o, fmt.Errorf("diameter: invalid MaxMessage %d: must be between 256 and %d bytes", o.MaxMessage, maxMessageLimit)
	}
	if o.MaxPeers == 0 {
		o.MaxPeers = defaultMaxPeers
	}
	if o.MaxPeers < 0 {
		return o, fmt.Errorf("diameter: invalid MaxPeers %d: must be positive", o.MaxPeers)
	}
	return o, nil
}

// checkAllowedPeers rejects an allow-list entry that no CER could match. The
// message names the gateway's flag, which is where the list comes from.
func checkAllowedPeers(hosts []string) error {
	for i, h := range hosts {
		if h == "" {
			return fmt.Errorf("invalid --diameter-peers: entry %d is empty; list Origin-Hosts separated by commas, "+
				"for example peer1.example.net,peer2.example.net", i+1)
		}
		if !validIdentity([]byte(h)) {
			return fmt.Errorf("invalid --diameter-peers entry %q: %s", h, identityRule)
		}
	}
	return nil
}

// Listen opens the TCP listener.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("diameter: listen on %q: %w", s.opts.Addr, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		ln.Close()
		return errors.New("diameter: Listen called twice")
	}
	s.ln = ln
	s.log.Info().Str("addr", ln.Addr().String()).Str("origin_host", s.id.Host).
		Str("origin_realm", s.id.Realm).Msg("diameter listening")
	return nil
}

// Addr returns the bound listen address, or "" before Listen.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Serve accepts peers until Shutdown, after which it returns nil.
func (s *Server) Serve() error {
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	if ln == nil {
		return errors.New("diameter: Serve called before Listen")
	}
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.isShutdown() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("diameter accept failed")
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("diameter: accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		s.startPeer(conn)
	}
}

func (s *Server) isShutdown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

func (s *Server) startPeer(conn net.Conn) {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		conn.Close()
		return
	}
	if len(s.peers) >= s.opts.MaxPeers {
		s.mu.Unlock()
		// Count and log before the close, so that a client that observes
		// the close reads the updated counter.
		s.metrics.connRejected.Inc()
		s.rejectLog.Warn().Int("max_peers", s.opts.MaxPeers).Str("remote", conn.RemoteAddr().String()).
			Msg("diameter connection closed because MaxPeers connections are open (more within 10 s are counted, not logged)")
		conn.Close()
		return
	}
	p := newPeer(s, conn)
	s.peers[p] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		p.run()
		s.removePeer(p)
	}()
}

// removePeer forgets p and frees its Origin-Host for a new connection. It
// runs after p's reader has returned, so p.claimed no longer changes.
func (s *Server) removePeer(p *peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.peers, p)
	if p.claimed != "" && s.hosts[p.claimed] == p {
		delete(s.hosts, p.claimed)
	}
}

// claimHost records p as the connection of Origin-Host host and reports
// whether host had no connection yet. Identities compare without regard to
// ASCII case (RFC 6733 §5.6.4). Only p's reader goroutine calls it.
func (s *Server) claimHost(host string, p *peer) bool {
	key := strings.ToLower(host)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.hosts[key]; ok {
		return false
	}
	s.hosts[key] = p
	p.claimed = key
	return true
}

// Shutdown stops accepting, sends DPR (Disconnect-Cause REBOOTING) to every
// open peer, waits for their DPAs or ctx, then closes every connection and
// waits for the peer goroutines. It returns ctx's error if ctx ended first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	if s.ln != nil {
		s.ln.Close()
	}
	peers := make([]*peer, 0, len(s.peers))
	for p := range s.peers {
		peers = append(peers, p)
	}
	s.mu.Unlock()

	for _, p := range peers {
		p.disconnect()
	}
	var err error
	for _, p := range peers {
		select {
		case <-p.closed:
		case <-p.dpa:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			break
		}
	}
	for _, p := range peers {
		p.close("shutdown")
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("diameter: shutdown: %w", ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("diameter: shutdown: waiting for DPA: %w", err)
	}
	return nil
}

// PeerInfo is one row of the /debug/peers snapshot.
type PeerInfo struct {
	OriginHost   string    `json:"origin_host"`
	OriginRealm  string    `json:"origin_realm"`
	RemoteAddr   string    `json:"remote_addr"`
	State        string    `json:"state"`
	Applications []uint32  `json:"applications"`
	InFlight     int64     `json:"in_flight"`
	Requests     uint64    `json:"requests"`
	LastDWA      time.Time `json:"last_dwa,omitzero"`
}

// Peers returns a JSON-ready snapshot of the connected peers ([]PeerInfo,
// sorted by remote address) for /debug/peers.
func (s *Server) Peers() any {
	s.mu.Lock()
	out := make([]PeerInfo, 0, len(s.peers))
	for p := range s.peers {
		out = append(out, p.info())
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b PeerInfo) int {
		switch {
		case a.RemoteAddr < b.RemoteAddr:
			return -1
		case a.RemoteAddr > b.RemoteAddr:
			return 1
		}
		return 0
	})
	return out
}

// nextID returns a fresh identifier for a request the gateway originates.
func (s *Server) nextID() uint32 { return s.ids.Add(1) }

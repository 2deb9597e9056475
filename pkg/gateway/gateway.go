// Package gateway assembles a gateway: the CoAP endpoint and the Diameter
// server in front, the ring and the link to workers behind them, Serf
// membership feeding the ring, and the admin server.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/pkg/admin"
	"github.com/shardgate/shardgate/pkg/config"
	"github.com/shardgate/shardgate/pkg/link"
	"github.com/shardgate/shardgate/pkg/membership"
	"github.com/shardgate/shardgate/pkg/metrics"
	"github.com/shardgate/shardgate/pkg/protocols/coap"
	"github.com/shardgate/shardgate/pkg/protocols/diameter"
	"github.com/shardgate/shardgate/pkg/ring"
)

// Gateway is one running gateway. Create it with New and run it with Run.
type Gateway struct {
	cfg     config.Gateway
	log     zerolog.Logger
	admin   *admin.Server
	metrics *metrics.Metrics
	ring    *ring.Ring
	link    *link.Client
	fwd     *forwarder
	coap    *coap.Endpoint
	diam    *diameter.Server
	members *membership.Membership

	// mu guards known, the link addresses of the workers on the ring.
	mu    sync.Mutex
	known map[string]string
}

// New builds a gateway from its configuration and binds its sockets.
func New(cfg config.Gateway, log zerolog.Logger) (*Gateway, error) {
	g := &Gateway{cfg: cfg, log: log, known: make(map[string]string)}
	g.admin = admin.New(cfg.AdminAddr, log)
	g.metrics = metrics.New(g.admin.Registry())
	r, err := ring.New(ring.DefaultShards)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.ring = r
	g.link, err = link.NewClient(link.ClientOptions{Logger: log, OnNotify: g.onNotify, AfterRead: g.afterLinkRead,
		ConnsPerWorker: cfg.LinkConns})
	if err != nil {
		return nil, fmt.Errorf("gateway: start link client: %w", err)
	}
	g.fwd = &forwarder{ring: r, link: g.link, proto: link.ProtoCoAP}
	key, err := config.ParseCoAPKey(cfg.CoAPKey)
	if err != nil {
		return nil, err
	}
	g.coap, err = coap.New(coap.Options{Addr: cfg.CoAPAddr, Key: key, Forwarder: g.fwd, Metrics: g.metrics, Logger: log, BatchResponses: true})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if cfg.DiameterAddr != "" {
		g.diam, err = diameter.NewServer(diameter.ServerOptions{
			Addr: cfg.DiameterAddr, OriginHost: cfg.DiameterHost, OriginRealm: cfg.DiameterRealm,
			KeyAVP: cfg.DiameterKey, AllowedPeers: cfg.DiameterPeers,
			Forwarder: diameterForwarder{g.fwd}, Logger: log, Registerer: g.admin.Registry(),
		})
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	if err := g.listen(); err != nil {
		g.link.Close()
		return nil, err
	}
	g.routes()
	return g, nil
}

// listen binds every socket; an error names the flag that set the address.
func (g *Gateway) listen() error {
	if err := g.coap.Listen(); err != nil {
		return fmt.Errorf("gateway: --coap-addr %q: %w", g.cfg.CoAPAddr, err)
	}
	if g.diam != nil {
		if err := g.diam.Listen(); err != nil {
			g.coap.Close()
			return fmt.Errorf("gateway: --diameter-addr %q: %w", g.cfg.DiameterAddr, err)
		}
	}
	if err := g.admin.Listen(); err != nil {
		g.coap.Close()
		return fmt.Errorf("gateway: --admin-addr %q: %w", g.cfg.AdminAddr, err)
	}
	return nil
}

// CoAPAddr returns the bound CoAP address.
func (g *Gateway) CoAPAddr() string { return g.coap.Addr().String() }

// AdminAddr returns the bound admin address.
func (g *Gateway) AdminAddr() string { return g.admin.Addr() }

// DiameterAddr returns the bound Diameter address, or "" when disabled.
func (g *Gateway) DiameterAddr() string {
	if g.diam == nil {
		return ""
	}
	return g.diam.Addr()
}

// Run joins the cluster and serves until ctx ends, then shuts down.
func (g *Gateway) Run(ctx context.Context) error {
	members, err := membership.Start(ctx, membership.Config{
		Name: g.cfg.Name, Role: membership.RoleGateway, BindAddr: g.cfg.SerfAddr,
		Advertise: g.cfg.Advertise, Join: g.cfg.Join, Profile: g.cfg.SerfProfile,
		Logger: g.log, OnChange: g.onMembers,
	})
	if err != nil {
		g.close()
		return fmt.Errorf("gateway: %w", err)
	}
	g.members = members
	g.admin.AddReadiness("cluster", g.ready)

	errs := make(chan error, 3)
	go func() { errs <- g.coap.Serve(ctx) }()
	go func() { errs <- g.admin.Serve() }()
	if g.diam != nil {
		go func() { errs <- g.diam.Serve() }()
	}
	g.log.Info().Str("coap", g.CoAPAddr()).Str("diameter", g.DiameterAddr()).
		Str("admin", g.AdminAddr()).Msg("gateway serving")
	select {
	case <-ctx.Done():
	case <-members.Done():
		err = fmt.Errorf("gateway: left the cluster: %w", members.Err())
	case err = <-errs:
		if err != nil {
			g.log.Error().Err(err).Msg("gateway: server stopped")
		}
	}
	g.shutdown()
	return err
}

func (g *Gateway) ready() error {
	if !g.members.Joined() {
		return errors.New("not joined to the cluster yet")
	}
	if len(g.ring.Members()) == 0 {
		return errors.New("no active worker")
	}
	return nil
}

// shutdown ends Diameter peers with DPR, leaves Serf and stops everything,
// within a bounded time.
func (g *Gateway) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if g.diam != nil {
		if err := g.diam.Shutdown(ctx); err != nil {
			g.log.Warn().Err(err).Msg("gateway: diameter shutdown")
		}
	}
	if err := g.members.Leave(2 * time.Second); err != nil {
		g.log.Warn().Err(err).Msg("gateway: leave cluster")
	}
	g.close()
	if err := g.admin.Shutdown(ctx); err != nil {
		g.log.Warn().Err(err).Msg("gateway: admin shutdown")
	}
	g.log.Info().Msg("gateway stopped")
}

func (g *Gateway) close() {
	g.coap.Close()
	g.link.Close()
}

// onMembers rebuilds the ring from the active workers. It runs serially on
// the membership goroutine.
func (g *Gateway) onMembers(all []membership.Member) {
	active := membership.FilterActiveWorkers(all)
	rm := make([]ring.Member, 0, len(active))
	next := make(map[string]string, len(active))
	for _, m := range active {
		rm = append(rm, ring.Member{Name: m.Name, Addr: m.LinkAddr})
		next[m.Name] = m.LinkAddr
	}
	moved := g.ring.Set(rm)

	g.mu.Lock()
	var gone []string
	for name, addr := range g.known {
		if next[name] != addr {
			gone = append(gone, addr)
		}
	}
	g.known = next
	g.mu.Unlock()

	stillAlive := make(map[string]bool)
	for _, m := range all {
		if m.Role == membership.RoleWorker && m.Status == "alive" {
			stillAlive[m.LinkAddr] = true
		}
	}
	for _, addr := range gone {
		// A draining worker still answers its in-flight requests; a
		// failed or departed one fails them now.
		if !stillAlive[addr] {
			g.link.Forget(addr)
		}
	}
	g.updateRingMetrics()
	if moved > 0 {
		g.log.Info().Int("workers", len(rm)).Int("shards_moved", moved).Msg("ring updated")
		g.coap.Reroute(func(key []byte) string {
			_, owner, ok := g.ring.Lookup(key)
			if !ok {
				return ""
			}
			return owner.Addr
		})
	}
}

func (g *Gateway) updateRingMetrics() {
	counts := g.ring.ShardCounts()
	g.metrics.RingMembers.Set(float64(len(counts)))
	g.metrics.RingShards.Reset()
	for name, n := range counts {
		g.metrics.RingShards.WithLabelValues(name).Set(float64(n))
	}
}

// afterLinkRead sends the CoAP responses that one link read delivered. Link
// reads start only after New has set g.coap, since connections open on the
// first forwarded request.
func (g *Gateway) afterLinkRead() {
	if g.coap != nil {
		g.coap.FlushResponses()
	}
}

// onNotify relays a worker's notification to the CoAP endpoint.
func (g *Gateway) onNotify(_ string, f *link.Frame) {
	if f.Proto == link.ProtoCoAP && f.Corr&observeBit != 0 {
		g.coap.Notify(f.Corr&^observeBit, f.Body)
	}
}

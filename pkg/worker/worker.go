// Package worker assembles a worker: the link server that gateways forward
// requests to, the applications behind it, Serf membership and the admin
// server.
package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/pkg/admin"
	"github.com/shardgate/shardgate/pkg/app"
	"github.com/shardgate/shardgate/pkg/app/creditcontrol"
	"github.com/shardgate/shardgate/pkg/app/devices"
	"github.com/shardgate/shardgate/pkg/app/diameterapp"
	"github.com/shardgate/shardgate/pkg/config"
	"github.com/shardgate/shardgate/pkg/link"
	"github.com/shardgate/shardgate/pkg/membership"
	"github.com/shardgate/shardgate/pkg/metrics"
	"github.com/shardgate/shardgate/pkg/session"
)

// Worker is one running worker. Create it with New and run it with Run.
type Worker struct {
	cfg      config.Worker
	log      zerolog.Logger
	admin    *admin.Server
	metrics  *metrics.Metrics
	devices  *devices.App
	ccStore  *session.Store[creditcontrol.Session]
	handler  *frameHandler
	server   *link.Server
	members  *membership.Membership
	linkAddr string // advertised to gateways

	// appCtx is the applications' context, cancelled when Run returns.
	appCtx   context.Context
	stopApps context.CancelFunc

	mu       sync.Mutex
	draining bool // guarded by mu
}

// New builds a worker and binds its link and admin sockets.
func New(cfg config.Worker, log zerolog.Logger) (*Worker, error) {
	w := &Worker{cfg: cfg, log: log}
	w.admin = admin.New(cfg.AdminAddr, log)
	w.metrics = metrics.New(w.admin.Registry())
	w.devices = devices.New(devices.Options{WorkerName: cfg.Name, IdleTimeout: cfg.SessionIdle, Logger: log})
	w.ccStore = session.New[creditcontrol.Session](session.Options{IdleTimeout: cfg.SessionIdle})
	mux := &app.Mux{}
	if err := mux.Register(app.CoAP, w.devices); err != nil {
		return nil, err
	}
	dia := diameterapp.New(diameterapp.Options{WorkerName: cfg.Name, Store: w.ccStore, Logger: log})
	if err := mux.Register(app.Diameter, dia); err != nil {
		return nil, err
	}
	// The applications' context exists before the link server starts,
	// because a gateway may send frames as soon as it listens.
	w.appCtx, w.stopApps = context.WithCancel(context.Background())
	w.handler = &frameHandler{mux: mux, log: log, ctx: w.appCtx, observers: make(map[obsKey]*observer)}
	// One event loop per CPU, because the applications run on the loops.
	w.server = link.NewServer(link.ServerOptions{Addr: cfg.LinkAddr, Handler: w.handler, Logger: log, Multicore: true})
	if err := w.server.Start(); err != nil {
		return nil, fmt.Errorf("worker: --link-addr %q: %w", cfg.LinkAddr, err)
	}
	addr, err := advertisedAddr(cfg.Advertise, w.server.Addr())
	if err != nil {
		w.server.Stop(context.Background())
		return nil, err
	}
	w.linkAddr = addr
	if err := w.admin.Listen(); err != nil {
		w.server.Stop(context.Background())
		return nil, fmt.Errorf("worker: --admin-addr %q: %w", cfg.AdminAddr, err)
	}
	w.routes()
	return w, nil
}

// LinkAddr returns the link address gateways dial.
func (w *Worker) LinkAddr() string { return w.linkAddr }

// AdminAddr returns the bound admin address.
func (w *Worker) AdminAddr() string { return w.admin.Addr() }

// Run joins the cluster and serves until ctx ends. Then it drains: it tags
// itself draining so that gateways move its shards, keeps serving for
// DrainTimeout, leaves the cluster and stops.
func (w *Worker) Run(ctx context.Context) error {
	appCtx := w.appCtx
	defer w.stopApps()
	members, err := membership.Start(ctx, membership.Config{
		Name: w.cfg.Name, Role: membership.RoleWorker, BindAddr: w.cfg.SerfAddr,
		Advertise: w.cfg.Advertise, LinkAddr: w.linkAddr, Join: w.cfg.Join,
		Profile: w.cfg.SerfProfile, Logger: w.log,
	})
	if err != nil {
		w.stop()
		return fmt.Errorf("worker: %w", err)
	}
	w.members = members
	w.admin.AddReadiness("serving", w.ready)
	go w.devices.Run(appCtx)
	go w.ccStore.Run(appCtx, session.DefaultSweepInterval)
	go w.reportSessions(appCtx)

	errs := make(chan error, 1)
	go func() { errs <- w.admin.Serve() }()
	w.log.Info().Str("link", w.linkAddr).Str("admin", w.AdminAddr()).Msg("worker serving")
	select {
	case <-ctx.Done():
	case <-members.Done():
		err = fmt.Errorf("worker: left the cluster: %w", members.Err())
	case err = <-errs:
	}
	w.drain()
	w.stop()
	return err
}

func (w *Worker) ready() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.draining {
		return errors.New("draining")
	}
	return nil
}

// drain moves the worker's shards away before it leaves.
func (w *Worker) drain() {
	w.mu.Lock()
	w.draining = true
	w.mu.Unlock()
	if err := w.members.SetState(membership.StateDraining); err != nil {
		w.log.Warn().Err(err).Msg("worker: could not tag itself draining")
	}
	w.log.Info().Dur("drain_timeout", w.cfg.DrainTimeout).Msg("worker draining")
	// NOTE: sessions are not handed to the new owner; state held here is
	// lost when the worker stops, and devices start afresh on the new owner.
	time.Sleep(w.cfg.DrainTimeout)
	if err := w.members.Leave(5 * time.Second); err != nil {
		w.log.Warn().Err(err).Msg("worker: leave cluster")
	}
}

func (w *Worker) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.server.Stop(ctx); err != nil {
		w.log.Warn().Err(err).Msg("worker: stop link server")
	}
	if err := w.admin.Shutdown(ctx); err != nil {
		w.log.Warn().Err(err).Msg("worker: admin shutdown")
	}
	w.log.Info().Msg("worker stopped")
}

// reportSessions keeps the sessions gauge current.
func (w *Worker) reportSessions(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	g := w.metrics.Sessions.WithLabelValues(w.cfg.Name)
	for {
		g.Set(float64(w.devices.Sessions() + w.ccStore.Len()))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// advertisedAddr returns the link address gateways dial: the --advertise
// host if set, else the bound host, else this machine's first non-loopback
// address.
func advertisedAddr(advertise, bound string) (string, error) {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return "", fmt.Errorf("worker: link address %q: %w", bound, err)
	}
	if advertise != "" {
		if h, _, err := net.SplitHostPort(advertise); err == nil {
			advertise = h
		}
		return net.JoinHostPort(advertise, port), nil
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		return bound, nil
	}
	return net.JoinHostPort(localIP(), port), nil
}

func localIP() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// Package membership runs a hashicorp/serf member in every gateway and
// worker process. Members gossip their role, link address and state as
// Serf tags, so gateways learn which workers are active and where to reach
// them, and every process learns of joins, departures and failures within
// seconds.
package membership

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/serf/serf"
	"github.com/rs/zerolog"
)

// ErrNameConflict is reported by Err when another member already uses this
// member's name. Serf's conflict resolution keeps the member that most
// peers know and shuts this one down.
var ErrNameConflict = errors.New("membership: another member uses this name; names must be unique")

// eventBuffer is the capacity of the Serf event channel. Serf blocks its
// gossip handling while the channel is full, and the event loop only logs
// each event before reading the next.
const eventBuffer = 256

// Member is one cluster member as seen from this process.
type Member struct {
	Name     string
	Role     Role
	State    State
	LinkAddr string // worker link address, host:port; empty for gateways
	SerfAddr string // gossip address, host:port
	Status   string // Serf status: alive, leaving, left or failed
}

// Membership is this process's Serf member. It is safe for concurrent use.
type Membership struct {
	serf    *serf.Serf
	cfg     Config
	profile profile
	logger  zerolog.Logger

	events chan serf.Event
	// changed holds at most one pending OnChange notification.
	changed chan struct{}
	// done is closed by the event loop once Serf has shut down, whether
	// through Shutdown or through name conflict resolution.
	done chan struct{}
	// cancel ends the join loop and any lookup it runs.
	cancel context.CancelFunc
	wg     sync.WaitGroup

	joined atomic.Bool
	err    atomic.Pointer[error]

	// mu guards closing and tags.
	mu      sync.Mutex
	closing bool
	tags    map[string]string
}

// Start creates the Serf member, starts its event loop and, when
// cfg.Join is not empty, a background loop that retries the join with
// exponential backoff until one succeeds, so processes may start in any
// order. ctx bounds the Advertise lookup and the join loop, but ending it
// does not shut the member down. Call Leave or Shutdown to stop it.
func Start(ctx context.Context, cfg Config) (*Membership, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver.LookupHost
	}
	prof, err := profileByName(cfg.Profile)
	if err != nil {
		return nil, err
	}
	bind, err := parseBind(cfg.BindAddr)
	if err != nil {
		return nil, err
	}
	advertise, err := parseAdvertise(ctx, cfg.Advertise, bind, cfg.Resolver)
	if err != nil {
		return nil, err
	}

	m := &Membership{
		cfg:     cfg,
		profile: prof,
		logger:  cfg.Logger.With().Str("node", cfg.Name).Logger(),
		events:  make(chan serf.Event, eventBuffer),
		changed: make(chan struct{}, 1),
		done:    make(chan struct{}),
		tags: map[string]string{
			tagRole:  string(cfg.Role),
			tagLink:  cfg.LinkAddr,
			tagState: string(StateActive),
		},
	}

	sc := m.serfConfig(bind, advertise)
	// NOTE: when serf.Create fails after it set up its query handler, for
	// example because the port is in use, Serf v0.11.0 leaves that
	// handler's goroutine running.
	m.serf, err = serf.Create(sc)
	if err != nil {
		return nil, fmt.Errorf("membership: start member %q on %s: %w",
			cfg.Name, net.JoinHostPort(bind.host, strconv.Itoa(bind.port)), err)
	}
	m.logStart()

	joinCtx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	m.wg.Add(1)
	go m.eventLoop()
	if cfg.OnChange != nil {
		m.wg.Add(1)
		go m.notifyLoop()
	}
	if len(cfg.Join) == 0 {
		m.joined.Store(true)
	} else {
		m.wg.Add(1)
		go m.joinLoop(joinCtx)
	}
	return m, nil
}

func (m *Membership) serfConfig(bind, advertise endpoint) *serf.Config {
	sc := m.profile.serfConfig()
	sc.NodeName = m.cfg.Name
	sc.Tags = m.copyTags()
	sc.EventCh = m.events

	serfLog := log.New(logWriter{logger: m.logger}, "", 0)
	sc.Logger = serfLog
	sc.LogOutput = nil

	ml := sc.MemberlistConfig
	ml.Name = m.cfg.Name
	ml.Logger = serfLog
	ml.LogOutput = nil
	ml.BindAddr = bind.host
	ml.BindPort = bind.port
	ml.AdvertiseAddr = advertise.host
	ml.AdvertisePort = bind.port
	if advertise.host != "" {
		ml.AdvertisePort = advertise.port
	}
	return sc
}

func (m *Membership) logStart() {
	local := m.serf.LocalMember()
	m.logger.Info().
		Str("role", string(m.cfg.Role)).
		Str("profile", m.profile.name).
		Str("serf_addr", hostPort(local.Addr, local.Port)).
		Str("link_addr", m.cfg.LinkAddr).
		Strs("join", m.cfg.Join).
		Msg("membership started")
}

// Members returns every member in Serf's member list, sorted by name: alive ones and
// those that are leaving, have left or have failed and are not yet reaped.
func (m *Membership) Members() []Member {
	serfMembers := m.serf.Members()
	members := make([]Member, 0, len(serfMembers))
	for _, sm := range serfMembers {
		members = append(members, memberFromSerf(sm))
	}
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return members
}

// ActiveWorkers returns the alive workers in the active state, sorted by
// name. These are the workers that may own shards.
func (m *Membership) ActiveWorkers() []Member {
	return FilterActiveWorkers(m.Members())
}

// FilterActiveWorkers returns the alive workers in the active state from
// members, for example from the list passed to Config.OnChange.
func FilterActiveWorkers(members []Member) []Member {
	var workers []Member
	for _, member := range members {
		if member.Role == RoleWorker && member.State == StateActive && member.Status == "alive" {
			workers = append(workers, member)
		}
	}
	return workers
}

// Joined reports whether this member is part of a cluster: a join has
// succeeded, another member has joined this one, or Config.Join is empty.
func (m *Membership) Joined() bool {
	return m.joined.Load()
}

// SetState updates this member's state tag. Serf gossips the change, and
// peers see it as a member update.
func (m *Membership) SetState(s State) error {
	if s != StateActive && s != StateDraining {
		return fmt.Errorf("membership: invalid state %q: use %q or %q", s, StateActive, StateDraining)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	tags := m.copyTags()
	tags[tagState] = string(s)
	if err := m.serf.SetTags(tags); err != nil {
		return fmt.Errorf("membership: set state of %q to %q: %w", m.cfg.Name, s, err)
	}
	m.tags = tags
	return nil
}

// Leave announces a graceful departure, waiting at most timeout for the
// announcement to go out, and then shuts the member down. Peers then list
// the member as left, not failed. It does nothing once Shutdown has begun.
func (m *Membership) Leave(timeout time.Duration) error {
	m.mu.Lock()
	closing := m.closing
	m.mu.Unlock()
	if closing {
		return nil
	}

	// Serf's Leave is not cancellable. When it outlasts timeout, its
	// goroutine ends on its own within two broadcast timeouts plus the
	// propagation delay (11 s with the LAN profile), after Leave returns.
	result := make(chan error, 1)
	go func() { result <- m.serf.Leave() }()

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var leaveErr error
	select {
	case err := <-result:
		if err != nil {
			leaveErr = fmt.Errorf("membership: leave %q: %w", m.cfg.Name, err)
		}
	case <-timer.C:
		leaveErr = fmt.Errorf("membership: leave %q timed out after %s: peers will see it as failed",
			m.cfg.Name, timeout)
	}
	return errors.Join(leaveErr, m.Shutdown())
}

// Shutdown stops the member without announcing a departure, so peers
// detect it as failed. It waits for the goroutines Start began, so it must
// not be called from Config.OnChange, and a join attempt in progress can
// hold it for up to memberlist's TCP timeout (10 s with the LAN profile).
// It is safe to call more than once.
func (m *Membership) Shutdown() error {
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()

	m.cancel()
	err := m.serf.Shutdown()
	m.wg.Wait()
	if err != nil {
		return fmt.Errorf("membership: shut down %q: %w", m.cfg.Name, err)
	}
	return nil
}

// Done returns a channel closed once the member has shut down, either
// through Leave or Shutdown or because it lost a name conflict.
func (m *Membership) Done() <-chan struct{} {
	return m.done
}

// Err returns ErrNameConflict after the member shut itself down to resolve
// a name conflict, and nil otherwise.
func (m *Membership) Err() error {
	if err := m.err.Load(); err != nil {
		return *err
	}
	return nil
}

// LocalName returns this member's name.
func (m *Membership) LocalName() string {
	return m.cfg.Name
}

// NumMembers returns the number of alive members, this one included.
func (m *Membership) NumMembers() int {
	n := 0
	for _, sm := range m.serf.Members() {
		if sm.Status == serf.StatusAlive {
			n++
		}
	}
	return n
}

// copyTags returns a copy of the local tags. The caller holds m.mu or has
// not yet started any goroutine.
func (m *Membership) copyTags() map[string]string {
	tags := make(map[string]string, len(m.tags))
	for k, v := range m.tags {
		tags[k] = v
	}
	return tags
}

func memberFromSerf(sm serf.Member) Member {
	return Member{
		Name:     sm.Name,
		Role:     Role(sm.Tags[tagRole]),
		State:    State(sm.Tags[tagState]),
		LinkAddr: sm.Tags[tagLink],
		SerfAddr: hostPort(sm.Addr, sm.Port),
		Status:   statusName(sm.Status),
	}
}

// statusName names a Serf status without calling MemberStatus.String,
// which panics on values it does not know.
func statusName(s serf.MemberStatus) string {
	switch s {
	case serf.StatusAlive:
		return "alive"
	case serf.StatusLeaving:
		return "leaving"
	case serf.StatusLeft:
		return "left"
	case serf.StatusFailed:
		return "failed"
	}
	return "none"
}

func hostPort(ip net.IP, port uint16) string {
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
}

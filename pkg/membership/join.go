package membership

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// lookupTimeout bounds each DNS lookup of a Join entry.
const lookupTimeout = 5 * time.Second

// joinLoop joins the peers in Config.Join. It retries with exponential
// backoff and jitter until a join succeeds, a peer joins this member, ctx
// ends or the member shuts down. Each attempt resolves names again, so
// pods that start later are found.
func (m *Membership) joinLoop(ctx context.Context) {
	defer m.wg.Done()

	backoff := m.profile.joinMinBackoff
	for attempt := 1; ; attempt++ {
		if m.joined.Load() {
			m.logger.Info().Int("attempt", attempt).Msg("join loop stopped: a peer joined this member")
			return
		}
		contacted, targets, err := m.joinOnce(ctx)
		if contacted > 0 {
			m.joined.Store(true)
			m.logger.Info().Int("attempt", attempt).Int("contacted", contacted).
				Strs("targets", targets).Msg("joined cluster")
			return
		}

		delay := withJitter(backoff)
		m.logger.Warn().Err(err).Int("attempt", attempt).Strs("join", m.cfg.Join).
			Strs("targets", targets).Dur("retry_in", delay).Msg("join failed, will retry")
		if !m.wait(ctx, delay) {
			return
		}
		backoff = min(2*backoff, m.profile.joinMaxBackoff)
	}
}

// wait sleeps for delay and reports false if ctx ends or the member shuts
// down first.
func (m *Membership) wait(ctx context.Context, delay time.Duration) bool {
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		m.logger.Warn().Err(ctx.Err()).Msg("join loop stopped before any join succeeded")
		return false
	case <-m.done:
		return false
	}
}

// joinOnce resolves the Join entries and passes every address to Serf's
// Join. It returns how many peers responded, the addresses tried and the
// errors.
func (m *Membership) joinOnce(ctx context.Context) (int, []string, error) {
	targets, lookupErr := m.joinTargets(ctx)
	if len(targets) == 0 {
		if lookupErr == nil {
			lookupErr = errors.New("no join address other than this member's own")
		}
		return 0, nil, lookupErr
	}

	contacted, err := m.serf.Join(targets, true)
	if err != nil {
		// Serf returns a multi-line list of errors, one per address.
		err = fmt.Errorf("join %v: %s", targets, strings.Join(strings.Fields(err.Error()), " "))
	}
	return contacted, targets, errors.Join(lookupErr, err)
}

// joinTargets returns the IP:port addresses of the Join entries, looking
// up names and leaving out this member's own address and duplicates.
func (m *Membership) joinTargets(ctx context.Context) ([]string, error) {
	// NOTE: only the advertised address counts as this member's own. When
	// bound to all addresses, a Join entry that reaches this member by
	// another local IP is joined like a peer and counts as a success.
	local := m.serf.LocalMember()
	self := hostPort(local.Addr, local.Port)

	var targets []string
	var errs []error
	for _, entry := range m.cfg.Join {
		host, port, err := splitJoin(entry)
		if err != nil {
			// Start validated every entry, so this is unexpected.
			errs = append(errs, fmt.Errorf("invalid join address %q: %w", entry, err))
			continue
		}
		hosts, err := m.lookup(ctx, host)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, h := range hosts {
			target := net.JoinHostPort(h, strconv.Itoa(port))
			if target != self && !slices.Contains(targets, target) {
				targets = append(targets, target)
			}
		}
	}
	return targets, errors.Join(errs...)
}

// lookup returns host itself when it is an IP address, and the addresses
// the resolver returns for it otherwise, in canonical form.
func (m *Membership) lookup(ctx context.Context, host string) ([]string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []string{ip.String()}, nil
	}

	lookupCtx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	addrs, err := m.cfg.Resolver(lookupCtx, host)
	if err != nil {
		return nil, fmt.Errorf("lookup %q: %w", host, err)
	}

	var hosts []string
	for _, addr := range addrs {
		ip := net.ParseIP(addr)
		if ip == nil {
			return nil, fmt.Errorf("lookup %q: resolver returned %q, which is not an IP address", host, addr)
		}
		hosts = append(hosts, ip.String())
	}
	return hosts, nil
}

// withJitter returns a delay between d/2 and d, so members that start
// together do not retry in step.
func withJitter(d time.Duration) time.Duration {
	half := d / 2
	return half + rand.N(half+1)
}

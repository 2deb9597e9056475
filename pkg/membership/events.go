package membership

import (
	"github.com/hashicorp/serf/serf"
)

// eventLoop logs each member event and schedules an OnChange call. It
// ends once Serf has shut down, and then closes m.done.
func (m *Membership) eventLoop() {
	defer m.wg.Done()
	defer close(m.done)

	for {
		select {
		case e := <-m.events:
			m.handleEvent(e)
		case <-m.serf.ShutdownCh():
			m.drainEvents()
			m.recordShutdown()
			return
		}
	}
}

func (m *Membership) handleEvent(e serf.Event) {
	me, ok := e.(serf.MemberEvent)
	if !ok {
		// User events and queries are not used by shardgate.
		return
	}

	msg := eventMessage(me.Type)
	for _, sm := range me.Members {
		member := memberFromSerf(sm)
		m.logger.Info().
			Str("member", member.Name).
			Str("role", string(member.Role)).
			Str("state", string(member.State)).
			Str("status", member.Status).
			Str("serf_addr", member.SerfAddr).
			Str("link_addr", member.LinkAddr).
			Msg(msg)
		// A peer that joins this member makes it part of a cluster, which
		// also ends the join loop when this member started first.
		if me.Type == serf.EventMemberJoin && sm.Name != m.cfg.Name {
			m.joined.Store(true)
		}
	}

	select {
	case m.changed <- struct{}{}:
	default:
		// A notification is already pending and will read the new list.
	}
}

// drainEvents discards events Serf queued before it shut down, so no Serf
// goroutine stays blocked sending to m.events.
func (m *Membership) drainEvents() {
	for {
		select {
		case <-m.events:
		default:
			return
		}
	}
}

// recordShutdown distinguishes a requested shutdown from one that Serf
// started itself, which Serf does only after losing a name conflict.
func (m *Membership) recordShutdown() {
	m.mu.Lock()
	requested := m.closing
	m.mu.Unlock()
	if requested {
		return
	}

	err := ErrNameConflict
	m.err.Store(&err)
	m.logger.Error().Err(err).
		Msg("membership shut down: another member already uses this name; give each process a unique name")
}

// notifyLoop calls OnChange once per batch of changes, one call at a time.
func (m *Membership) notifyLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.changed:
			m.cfg.OnChange(m.Members())
		case <-m.done:
			return
		}
	}
}

func eventMessage(t serf.EventType) string {
	switch t {
	case serf.EventMemberJoin:
		return "member joined"
	case serf.EventMemberLeave:
		return "member left"
	case serf.EventMemberFailed:
		return "member failed"
	case serf.EventMemberUpdate:
		return "member updated"
	case serf.EventMemberReap:
		return "member reaped"
	}
	return "member event"
}

package membership

import (
	"fmt"
	"time"

	"github.com/hashicorp/serf/serf"
)

// Profile names accepted in Config.Profile.
const (
	ProfileLAN   = "lan"
	ProfileLocal = "local"
)

// profile is a named preset of Serf timers and join retry delays.
type profile struct {
	name string

	// joinMinBackoff and joinMaxBackoff bound the delay between join
	// attempts, which doubles after each failure.
	joinMinBackoff time.Duration
	joinMaxBackoff time.Duration

	// serfConfig returns a Serf configuration with the preset timers.
	serfConfig func() *serf.Config
}

func profileByName(name string) (profile, error) {
	switch name {
	case "", ProfileLAN:
		return profile{
			name:           ProfileLAN,
			joinMinBackoff: 200 * time.Millisecond,
			joinMaxBackoff: 10 * time.Second,
			serfConfig:     lanSerfConfig,
		}, nil
	case ProfileLocal:
		return profile{
			name:           ProfileLocal,
			joinMinBackoff: 100 * time.Millisecond,
			joinMaxBackoff: time.Second,
			serfConfig:     localSerfConfig,
		}, nil
	}
	return profile{}, fmt.Errorf("membership: invalid profile %q: use %q or %q",
		name, ProfileLAN, ProfileLocal)
}

// lanSerfConfig starts from Serf's and memberlist's LAN defaults. With
// them a failed member is detected after about 5 s when peers confirm the
// suspicion and up to about 25 s when none do (10 members or fewer).
func lanSerfConfig() *serf.Config {
	c := serf.DefaultConfig()
	applyCommon(c)

	// Serf keeps failed members (and retries them) and left members for
	// 24 hours by default. Pods replaced by a Deployment come back under
	// new names, so an hour keeps /debug/cluster readable while still
	// covering network partitions.
	c.ReconnectTimeout = time.Hour
	c.TombstoneTimeout = time.Hour

	// A restarted StatefulSet pod keeps its name but may get a new IP.
	// Without a reclaim time memberlist reports a name conflict until the
	// old entry is forgotten. Ten seconds lets the new address win once
	// the old one has been declared dead for that long.
	c.MemberlistConfig.DeadNodeReclaimTime = 10 * time.Second
	return c
}

// localSerfConfig starts from the LAN defaults and applies the values of
// memberlist.DefaultLocalConfig (v0.7.0) with shorter timers still, so
// tests on loopback see a failure in about one second. Setting the fields
// here keeps memberlist an indirect dependency.
func localSerfConfig() *serf.Config {
	c := serf.DefaultConfig()
	applyCommon(c)

	ml := c.MemberlistConfig
	// Loopback round trips take microseconds. The 100 ms probe timeout
	// leaves room for a busy test machine running the race detector.
	ml.TCPTimeout = time.Second
	ml.ProbeInterval = 200 * time.Millisecond
	ml.ProbeTimeout = 100 * time.Millisecond
	// Test clusters have a handful of members: one indirect probe and
	// fewer retransmissions are enough.
	ml.IndirectChecks = 1
	ml.RetransmitMult = 2
	// With fewer than 10 members, suspicion lasts SuspicionMult*ProbeInterval
	// (600 ms) with enough confirmations and twice that with none, instead
	// of six times.
	ml.SuspicionMult = 3
	ml.SuspicionMaxTimeoutMult = 2
	// Lifeguard may slow probing when this node is slow to respond, by at
	// most this factor, which keeps detection within a few seconds.
	ml.AwarenessMaxMultiplier = 3
	// Faster gossip and full-state sync let tests converge quickly.
	ml.GossipInterval = 50 * time.Millisecond
	ml.PushPullInterval = 2 * time.Second
	ml.GossipToTheDeadTime = 2 * time.Second
	ml.DeadNodeReclaimTime = time.Second

	// Reap failed and left members after seconds, not a day.
	c.ReapInterval = time.Second
	c.ReconnectInterval = time.Second
	c.ReconnectTimeout = 10 * time.Second
	c.TombstoneTimeout = 10 * time.Second
	// A leave needs a few 50 ms gossip rounds to spread. Half a second
	// covers them on a loaded test machine, where 100 ms was seen to let
	// the member shut down first and be marked failed instead of left.
	c.LeavePropagateDelay = 500 * time.Millisecond
	c.BroadcastTimeout = 2 * time.Second
	return c
}

// applyCommon sets what both profiles share.
func applyCommon(c *serf.Config) {
	// Shard ownership hashes over names, not round-trip times, so the
	// network coordinates Serf computes on every probe are not needed.
	c.DisableCoordinates = true
	// Reject names with characters that would need escaping in logs,
	// metrics and URLs. Start checks the same rule with a clearer message.
	c.ValidateNodeNames = true
	// No snapshot file: a restarted member rejoins through Config.Join.
	c.SnapshotPath = ""
	// When two members claim one name, the minority shuts down, which
	// Membership reports as ErrNameConflict.
	c.EnableNameConflictResolution = true
}

package ring

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

func newRing(t testing.TB, shards int) *Ring {
	t.Helper()
	r, err := New(shards)
	if err != nil {
		t.Fatalf("New(%d): %v", shards, err)
	}
	return r
}

// workers returns n members named worker-1 ... worker-n.
func workers(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{
			Name: fmt.Sprintf("worker-%d", i+1),
			Addr: fmt.Sprintf("127.0.0.1:%d", 7000+i),
		}
	}
	return ms
}

// owners returns the owner name of every shard.
func owners(t *testing.T, r *Ring) []string {
	t.Helper()
	names := make([]string, r.Shards())
	for s := range names {
		m, ok := r.Owner(uint32(s))
		if !ok {
			t.Fatalf("Owner(%d) = false with %d members", s, len(r.Members()))
		}
		names[s] = m.Name
	}
	return names
}

// binomialSigma is the standard deviation of the number of shards a member
// owns when each of n shards picks one of k members at random.
func binomialSigma(n, k int) float64 {
	p := 1 / float64(k)
	return math.Sqrt(float64(n) * p * (1 - p))
}

func TestNewRejectsShardCount(t *testing.T) {
	for _, n := range []int{-1, 0, MaxShards + 1} {
		if _, err := New(n); err == nil {
			t.Errorf("New(%d) returned no error", n)
		}
	}
	for _, n := range []int{1, DefaultShards, MaxShards} {
		r, err := New(n)
		if err != nil {
			t.Errorf("New(%d): %v", n, err)
			continue
		}
		if r.Shards() != n {
			t.Errorf("Shards() = %d, want %d", r.Shards(), n)
		}
	}
}

func TestEmptyRingHasNoOwner(t *testing.T) {
	r := newRing(t, 16)
	if _, ok := r.Owner(0); ok {
		t.Error("Owner(0) on an empty ring returned ok")
	}
	if _, _, ok := r.LookupString("device-1"); ok {
		t.Error("LookupString on an empty ring returned ok")
	}
	if got := r.Members(); len(got) != 0 {
		t.Errorf("Members() = %v, want none", got)
	}
	if got := r.Version(); got != 0 {
		t.Errorf("Version() = %d, want 0", got)
	}
}

func TestOwnerOutOfRange(t *testing.T) {
	r := newRing(t, 16)
	r.Set(workers(3))
	if _, ok := r.Owner(15); !ok {
		t.Error("Owner(15) of 16 shards returned false")
	}
	if _, ok := r.Owner(16); ok {
		t.Error("Owner(16) of 16 shards returned ok")
	}
}

func TestShardStringMatchesShard(t *testing.T) {
	r := newRing(t, DefaultShards)
	for _, key := range []string{"", "a", "device-0001", "gw1.example.net;1096298391;1"} {
		if got, want := r.ShardString(key), r.Shard([]byte(key)); got != want {
			t.Errorf("ShardString(%q) = %d, Shard = %d", key, got, want)
		}
	}
}

// TestGoldenShards pins key -> shard. A change here re-routes every session
// of a cluster whose gateways run different releases.
func TestGoldenShards(t *testing.T) {
	r := newRing(t, DefaultShards)
	cases := []struct {
		key   string
		shard uint32
	}{
		{"", 2457}, // xxhash64("") = 0xef46db3751d8e999
		{"a", 3675},
		{"device-0001", 1898},
		{"urn:dev:mac:0024befffe804ff1", 2637},
		{"gw1.example.net;1096298391;1", 2534},
	}
	for _, c := range cases {
		if got := r.ShardString(c.key); got != c.shard {
			t.Errorf("ShardString(%q) = %d, want %d", c.key, got, c.shard)
		}
	}
}

// TestGoldenOwners pins shard -> owner for a fixed member set. A change here
// means gateways of different releases disagree on owners.
func TestGoldenOwners(t *testing.T) {
	r := newRing(t, DefaultShards)
	r.Set([]Member{{Name: "worker-a"}, {Name: "worker-b"}, {Name: "worker-c"}})
	cases := []struct {
		shard uint32
		owner string
	}{
		{0, "worker-a"},
		{1, "worker-a"},
		{2, "worker-b"},
		{100, "worker-b"},
		{4095, "worker-b"},
	}
	for _, c := range cases {
		m, ok := r.Owner(c.shard)
		if !ok || m.Name != c.owner {
			t.Errorf("Owner(%d) = %q, %v; want %q", c.shard, m.Name, ok, c.owner)
		}
	}
	counts := r.ShardCounts()
	want := map[string]int{"worker-a": 1406, "worker-b": 1294, "worker-c": 1396}
	for name, n := range want {
		if counts[name] != n {
			t.Errorf("ShardCounts()[%q] = %d, want %d", name, counts[name], n)
		}
	}
}

func TestSetOrderDoesNotMatter(t *testing.T) {
	members := workers(12)
	a := newRing(t, DefaultShards)
	a.Set(members)
	want := owners(t, a)

	rng := rand.New(rand.NewPCG(1, 2))
	for range 5 {
		shuffled := append([]Member(nil), members...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		b := newRing(t, DefaultShards)
		b.Set(shuffled)
		got := owners(t, b)
		for s := range want {
			if got[s] != want[s] {
				t.Fatalf("shard %d: owner %q after shuffle, %q before", s, got[s], want[s])
			}
		}
	}
}

func TestSetDuplicateLastWins(t *testing.T) {
	r := newRing(t, 64)
	r.Set([]Member{
		{Name: "worker-1", Addr: "127.0.0.1:1"},
		{Name: "worker-2", Addr: "127.0.0.1:2"},
		{Name: "worker-1", Addr: "127.0.0.1:3"},
		{Name: "", Addr: "127.0.0.1:4"},
	})
	got := r.Members()
	want := []Member{{"worker-1", "127.0.0.1:3"}, {"worker-2", "127.0.0.1:2"}}
	if len(got) != len(want) {
		t.Fatalf("Members() = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Members()[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestSetVersionAndMoved(t *testing.T) {
	r := newRing(t, 256)
	members := workers(3)
	if moved := r.Set(members); moved != 256 {
		t.Errorf("first Set moved %d shards, want all 256", moved)
	}
	if v := r.Version(); v != 1 {
		t.Errorf("Version() after first Set = %d, want 1", v)
	}

	if moved := r.Set(workers(3)); moved != 0 {
		t.Errorf("Set of the same members moved %d shards, want 0", moved)
	}
	if v := r.Version(); v != 1 {
		t.Errorf("Version() after an unchanged Set = %d, want 1", v)
	}

	readdressed := workers(3)
	readdressed[0].Addr = "127.0.0.1:9999"
	if moved := r.Set(readdressed); moved != 0 {
		t.Errorf("Set with a new address moved %d shards, want 0", moved)
	}
	if v := r.Version(); v != 2 {
		t.Errorf("Version() after an address change = %d, want 2", v)
	}
	for s := range uint32(256) {
		if m, _ := r.Owner(s); m.Name == "worker-1" && m.Addr != "127.0.0.1:9999" {
			t.Fatalf("Owner(%d).Addr = %q, want the new address", s, m.Addr)
		}
	}

	if moved := r.Set(nil); moved != 256 {
		t.Errorf("Set(nil) moved %d shards, want all 256", moved)
	}
	if _, ok := r.Owner(0); ok {
		t.Error("Owner(0) after Set(nil) returned ok")
	}
}

func TestJoinMovesOnlyToNewMember(t *testing.T) {
	for n := 1; n <= 20; n++ {
		r := newRing(t, DefaultShards)
		r.Set(workers(n))
		before := owners(t, r)

		joined := append(workers(n), Member{Name: "worker-new"})
		moved := r.Set(joined)
		after := owners(t, r)

		changed := 0
		for s := range before {
			if before[s] == after[s] {
				continue
			}
			changed++
			if after[s] != "worker-new" {
				t.Fatalf("n=%d: shard %d moved from %q to %q, not to the new member",
					n, s, before[s], after[s])
			}
		}
		if changed != moved {
			t.Errorf("n=%d: Set returned moved=%d, %d owners changed", n, moved, changed)
		}
		checkAboutOneNth(t, "join", n+1, moved)
	}
}

func TestLeaveMovesOnlyLeaversShards(t *testing.T) {
	for n := 2; n <= 20; n++ {
		r := newRing(t, DefaultShards)
		members := workers(n)
		r.Set(members)
		before := owners(t, r)

		leaver := members[n/2].Name
		remaining := append(append([]Member(nil), members[:n/2]...), members[n/2+1:]...)
		moved := r.Set(remaining)
		after := owners(t, r)

		changed := 0
		for s := range before {
			if before[s] == after[s] {
				continue
			}
			changed++
			if before[s] != leaver {
				t.Fatalf("n=%d: shard %d of %q moved to %q although %q left",
					n, s, before[s], after[s], leaver)
			}
		}
		if changed != moved {
			t.Errorf("n=%d: Set returned moved=%d, %d owners changed", n, moved, changed)
		}
		checkAboutOneNth(t, "leave", n, moved)
	}
}

// checkAboutOneNth fails when moved is more than five binomial standard
// deviations from DefaultShards/n, which random assignment exceeds with
// probability below one in a million.
func checkAboutOneNth(t *testing.T, event string, n, moved int) {
	t.Helper()
	want := float64(DefaultShards) / float64(n)
	if dev := math.Abs(float64(moved) - want); dev > 5*binomialSigma(DefaultShards, n) {
		t.Errorf("%s with %d members moved %d shards, want about %.0f", event, n, moved, want)
	}
}

func TestShardCountsEven(t *testing.T) {
	for n := 2; n <= 20; n++ {
		r := newRing(t, DefaultShards)
		r.Set(workers(n))
		counts := r.ShardCounts()
		if len(counts) != n {
			t.Fatalf("n=%d: ShardCounts has %d members", n, len(counts))
		}

		mean := float64(DefaultShards) / float64(n)
		limit := 4 * binomialSigma(DefaultShards, n)
		total, worst := 0, 0.0
		for name, c := range counts {
			total += c
			dev := math.Abs(float64(c) - mean)
			worst = max(worst, dev)
			if dev > limit {
				t.Errorf("n=%d: %s owns %d shards, mean %.1f, limit ±%.1f", n, name, c, mean, limit)
			}
		}
		if total != DefaultShards {
			t.Errorf("n=%d: shard counts sum to %d, want %d", n, total, DefaultShards)
		}
		t.Logf("n=%2d: mean %6.1f, worst deviation %5.1f%%", n, mean, 100*worst/mean)
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	r := newRing(t, DefaultShards)
	r.Set(workers(10))
	key := []byte("device-0001")
	allocs := testing.AllocsPerRun(100, func() {
		r.Lookup(key)
		r.LookupString("device-0001")
	})
	if allocs != 0 {
		t.Errorf("Lookup allocates %.1f times per call, want 0", allocs)
	}
}

// TestConcurrentSetAndLookup runs lookups while the member set changes; run
// it with -race.
func TestConcurrentSetAndLookup(t *testing.T) {
	r := newRing(t, DefaultShards)
	small, large := workers(3), workers(7)
	r.Set(small)

	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			key := []byte(fmt.Sprintf("device-%d", g))
			for i := 0; !stop.Load(); i++ {
				key[len(key)-1] = byte('0' + i%10)
				if _, m, ok := r.Lookup(key); !ok || m.Name == "" || m.Addr == "" {
					errs <- fmt.Errorf("Lookup(%q) = %+v, %v during Set", key, m, ok)
					return
				}
			}
		})
	}
	for i := range 200 {
		if i%2 == 0 {
			r.Set(large)
		} else {
			r.Set(small)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if v := r.Version(); v != 201 {
		t.Errorf("Version() = %d after 201 changing Sets", v)
	}
}

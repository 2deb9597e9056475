package ring

import (
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// table is one immutable assignment of shards to members.
type table struct {
	// members is sorted by name with unique, non-empty names.
	members []Member
	// owners[shard] indexes members; it is empty when members is.
	owners  []uint32
	version uint64
}

// normalize drops members with empty names, keeps the last entry for each
// name and sorts the result by name.
func normalize(members []Member) []Member {
	byName := make(map[string]int, len(members))
	out := make([]Member, 0, len(members))
	for _, m := range members {
		if m.Name == "" {
			continue
		}
		if i, ok := byName[m.Name]; ok {
			out[i] = m
			continue
		}
		byName[m.Name] = len(out)
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// build assigns every shard to the member of highest weight. Ties, which need
// a 64-bit collision, go to the member with the smaller name, so every
// gateway still agrees.
func build(members []Member, shards uint32, version uint64) *table {
	t := &table{members: members, version: version}
	if len(members) == 0 {
		return t
	}
	seeds := make([]uint64, len(members))
	for i, m := range members {
		seeds[i] = xxhash.Sum64String(m.Name)
	}
	t.owners = make([]uint32, shards)
	for s := range shards {
		t.owners[s] = highestWeight(seeds, s)
	}
	return t
}

// highestWeight returns the index of the seed with the highest weight for
// shard, the first one on a tie.
func highestWeight(seeds []uint64, shard uint32) uint32 {
	shardHash := mix64(uint64(shard) + golden)
	best, bestWeight := uint32(0), mix64(seeds[0]^shardHash)
	for i := 1; i < len(seeds); i++ {
		if w := mix64(seeds[i] ^ shardHash); w > bestWeight {
			best, bestWeight = uint32(i), w
		}
	}
	return best
}

// golden is 2^64 divided by the golden ratio, the increment of SplitMix64. It
// spreads small consecutive shard numbers before mixing.
const golden = 0x9e3779b97f4a7c15

// mix64 is the SplitMix64 finalizer: a bijection on uint64 in which each input
// bit flips about half of the output bits. The weight of a member for a shard
// is mix64(xxhash64(name) XOR mix64(shard + golden)).
//
// The constants are part of the ring's wire contract: changing them moves
// shards between workers on gateways that upgrade, and the golden tests fail.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// countMoved returns the number of shards whose owner name differs between
// two tables. A shard without an owner in one of them counts as moved.
func countMoved(old, next *table, shards uint32) int {
	if len(old.members) == 0 || len(next.members) == 0 {
		if len(old.members) == 0 && len(next.members) == 0 {
			return 0
		}
		return int(shards)
	}
	moved := 0
	for s := range shards {
		if old.members[old.owners[s]].Name != next.members[next.owners[s]].Name {
			moved++
		}
	}
	return moved
}

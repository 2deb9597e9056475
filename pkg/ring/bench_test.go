package ring

import (
	"fmt"
	"testing"
)

// Results on a shared 2-core AMD EPYC VM, Go 1.26.8, -benchtime 200ms:
//
//	Lookup        members=1..100  13-15 ns/op  0 allocs/op
//	LookupString  members=10      15 ns/op     0 allocs/op
//	Set           members=1       36 µs/op     3 allocs/op
//	Set           members=10      125 µs/op    7 allocs/op
//	Set           members=100     651 µs/op    7 allocs/op
var memberCounts = []int{1, 3, 10, 100}

func BenchmarkLookup(b *testing.B) {
	keys := make([][]byte, 1024)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "urn:dev:mac:%012x", i)
	}
	for _, n := range memberCounts {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			r := newRing(b, DefaultShards)
			r.Set(workers(n))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				r.Lookup(keys[i&1023])
				i++
			}
		})
	}
}

func BenchmarkLookupString(b *testing.B) {
	r := newRing(b, DefaultShards)
	r.Set(workers(10))
	b.ReportAllocs()
	for b.Loop() {
		r.LookupString("gw1.example.net;1096298391;1")
	}
}

// BenchmarkSet measures a full rebuild: it alternates between n and n+1
// members so that every iteration changes the set.
func BenchmarkSet(b *testing.B) {
	for _, n := range memberCounts {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			r := newRing(b, DefaultShards)
			sets := [2][]Member{workers(n), workers(n + 1)}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				r.Set(sets[i&1])
				i++
			}
		})
	}
}

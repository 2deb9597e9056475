package hist

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketBoundsRoundTrip(t *testing.T) {
	for b := 0; b < numBuckets-1; b++ {
		lo := lowerOf(b)
		if got := bucketOf(lo); got != b {
			t.Fatalf("bucketOf(lowerOf(%d)=%d) = %d", b, lo, got)
		}
		if got := bucketOf(lowerOf(b+1) - 1); got != b {
			t.Fatalf("bucketOf(upper of %d) = %d", b, got)
		}
	}
}

func TestQuantileWithinOnePercent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	vals := make([]time.Duration, 100000)
	for i := range vals {
		vals[i] = time.Duration(r.ExpFloat64() * float64(200*time.Microsecond))
		h.Record(vals[i])
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := vals[int(q*float64(len(vals)))-1]
		got := h.Quantile(q)
		if got < want || float64(got-want) > 0.01*float64(want)+1 {
			t.Errorf("Quantile(%v) = %v, exact %v", q, got, want)
		}
	}
	if h.Max() != vals[len(vals)-1] {
		t.Errorf("Max = %v, want %v", h.Max(), vals[len(vals)-1])
	}
	if h.Quantile(1) != h.Max() {
		t.Errorf("Quantile(1) = %v, want max %v", h.Quantile(1), h.Max())
	}
}

func TestMergeEqualsSingle(t *testing.T) {
	var a, b, all Histogram
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * time.Microsecond
		all.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	if a.Count() != all.Count() || a.Quantile(0.99) != all.Quantile(0.99) || a.Max() != all.Max() {
		t.Errorf("merged count %d p99 %v max %v, want %d %v %v",
			a.Count(), a.Quantile(0.99), a.Max(), all.Count(), all.Quantile(0.99), all.Max())
	}
	if got := a.Mean(); got != 500500*time.Nanosecond {
		t.Errorf("Mean = %v, want 500.5µs", got)
	}
}

func TestEmptyAndHuge(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram should report 0")
	}
	h.Record(-time.Second)
	h.Record(100 * time.Hour)
	if h.Max() != 100*time.Hour {
		t.Errorf("Max = %v, want 100h", h.Max())
	}
	if h.Quantile(0) != 0 {
		t.Errorf("Quantile(0) = %v, want 0", h.Quantile(0))
	}
}

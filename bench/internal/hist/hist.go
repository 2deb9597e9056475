// Package hist records latencies in a log-linear histogram in the style of
// HdrHistogram: each power of two of nanoseconds is split into 2^subBits
// linear buckets, so every recorded value is kept within 1/2^subBits (about
// 0.8%) of its true value while the histogram stays a fixed 8 KB array.
//
// A Histogram is not safe for concurrent use; give each goroutine its own and
// Merge them at the end.
package hist

import (
	"math"
	"math/bits"
	"time"
)

const (
	subBits    = 7
	subCount   = 1 << subBits
	maxExp     = 40 // 2^40 ns is about 18 minutes, far beyond any bounded run
	numBuckets = (maxExp - subBits + 1) * subCount
)

// Histogram counts durations. The zero value is empty and ready to use.
type Histogram struct {
	counts [numBuckets]uint64
	total  uint64
	sum    uint64
	min    uint64
	max    uint64
}

// bucketOf maps v nanoseconds to its bucket. Values below subCount get one
// bucket each; above that, bucket width doubles with each power of two.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	exp := bits.Len64(v) - 1 // v is in [2^exp, 2^(exp+1))
	if exp > maxExp {
		return numBuckets - 1
	}
	shift := exp - subBits
	return (shift+1)*subCount + int(v>>shift) - subCount
}

// lowerOf returns the smallest value that falls in bucket b.
func lowerOf(b int) uint64 {
	if b < subCount {
		return uint64(b)
	}
	shift := b/subCount - 1
	return uint64(b%subCount+subCount) << shift
}

// Record adds one duration. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucketOf(v)]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.total++
	h.sum += v
}

// Merge adds every count of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.total == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.total += o.total
	h.sum += o.sum
}

// Count returns the number of recorded durations.
func (h *Histogram) Count() uint64 { return h.total }

// Max returns the largest recorded duration, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the arithmetic mean, or 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / h.total)
}

// Quantile returns the duration at quantile q in [0, 1]: the upper edge of
// the bucket holding the q-th value, capped at the exact maximum, so it
// overstates the true value by at most one bucket width. It returns 0 when
// the histogram is empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	q = math.Max(0, math.Min(1, q))
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = max(rank, 1)
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			upper := lowerOf(b+1) - 1
			return time.Duration(min(max(upper, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

package link

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// coapObserveGET is a confirmable CoAP GET (RFC 7252 §3) with message id
// 0x3039, token 0xaa, Observe=0 (RFC 7641 §2) and Uri-Path "temp".
var coapObserveGET = mustHex("41013039aa605474656d70")

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

var goldenFrames = []struct {
	name  string
	frame Frame
	hex   string
}{
	{
		name: "coap observe request",
		frame: Frame{
			Type: TypeRequest, Proto: ProtoCoAP, Flags: FlagObserve,
			Corr: 0x0102030405060708, Shard: 42,
			Key: []byte("dev1"), Body: coapObserveGET,
		},
		hex: "01 01 01 01 0000000b 0102030405060708 0000002a 0004 0000" +
			" 64657631 41013039aa605474656d70",
	},
	{
		name: "diameter response not owner",
		frame: Frame{
			Type: TypeResponse, Proto: ProtoDiameter,
			Corr: 7, Shard: 3, Status: StatusNotOwner,
		},
		hex: "01 02 02 00 00000000 0000000000000007 00000003 0000 0002",
	},
}

func TestFrameGolden(t *testing.T) {
	for _, tc := range goldenFrames {
		t.Run(tc.name, func(t *testing.T) {
			want := mustHex(tc.hex)
			got, err := AppendFrame(nil, &tc.frame)
			if err != nil {
				t.Fatalf("AppendFrame: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("AppendFrame:\n got %x\nwant %x", got, want)
			}

			f, n, err := ParseFrame(want)
			if err != nil {
				t.Fatalf("ParseFrame: %v", err)
			}
			if n != len(want) {
				t.Errorf("ParseFrame consumed %d bytes, want %d", n, len(want))
			}
			assertFrameEqual(t, &f, &tc.frame)
		})
	}
}

func assertFrameEqual(t *testing.T, got, want *Frame) {
	t.Helper()
	if got.Type != want.Type || got.Proto != want.Proto || got.Flags != want.Flags {
		t.Errorf("type/proto/flags = %s/%s/%#x, want %s/%s/%#x",
			got.Type, got.Proto, got.Flags, want.Type, want.Proto, want.Flags)
	}
	if got.Corr != want.Corr || got.Shard != want.Shard || got.Status != want.Status {
		t.Errorf("corr/shard/status = %d/%d/%s, want %d/%d/%s",
			got.Corr, got.Shard, got.Status, want.Corr, want.Shard, want.Status)
	}
	if !bytes.Equal(got.Key, want.Key) {
		t.Errorf("key = %q, want %q", got.Key, want.Key)
	}
	if !bytes.Equal(got.Body, want.Body) {
		t.Errorf("body = %x, want %x", got.Body, want.Body)
	}
}

func TestParseFramePartial(t *testing.T) {
	whole := mustHex(goldenFrames[0].hex)
	for i := range len(whole) {
		f, n, err := ParseFrame(whole[:i])
		if err != nil || n != 0 {
			t.Fatalf("ParseFrame of %d of %d bytes = n %d, err %v; want 0, nil", i, len(whole), n, err)
		}
		if f.Type != 0 || f.Key != nil {
			t.Fatalf("ParseFrame of %d bytes returned a partial frame %+v", i, f)
		}
	}
}

func TestParseFrameMany(t *testing.T) {
	var stream []byte
	for _, tc := range goldenFrames {
		stream = append(stream, mustHex(tc.hex)...)
	}
	for i, tc := range goldenFrames {
		f, n, err := ParseFrame(stream)
		if err != nil || n == 0 {
			t.Fatalf("frame %d: n %d, err %v", i, n, err)
		}
		assertFrameEqual(t, &f, &tc.frame)
		stream = stream[n:]
	}
	if len(stream) != 0 {
		t.Fatalf("%d bytes left over", len(stream))
	}
}

// header returns a valid request header with the given lengths, for tests
// that then corrupt one field.
func header(keyLen uint16, bodyLen uint32) []byte {
	h := mustHex("01 01 01 00 00000000 0000000000000001 00000000 0000 0000")
	binary.BigEndian.PutUint32(h[4:8], bodyLen)
	binary.BigEndian.PutUint16(h[20:22], keyLen)
	return h
}

func TestParseFrameInvalid(t *testing.T) {
	tests := []struct {
		name   string
		bytes  func() []byte
		target error
	}{
		{"version 2", func() []byte { h := header(0, 0); h[0] = 2; return h }, ErrBadVersion},
		{"version 0 first byte only", func() []byte { return []byte{0} }, ErrBadVersion},
		{"type 0", func() []byte { h := header(0, 0); h[1] = 0; return h }, ErrBadType},
		{"type 7", func() []byte { h := header(0, 0); h[1] = 7; return h }, ErrBadType},
		{"proto 3", func() []byte { h := header(0, 0); h[2] = 3; return h }, ErrBadProto},
		{"reserved flag", func() []byte { h := header(0, 0); h[3] = 0x02; return h }, ErrBadFlags},
		{"status in request", func() []byte { h := header(0, 0); h[23] = 1; return h }, ErrBadStatus},
		{"status 5 in response", func() []byte { h := header(0, 0); h[1] = 2; h[23] = 5; return h }, ErrBadStatus},
		{"body MaxBody+1", func() []byte { return header(0, MaxBody+1) }, ErrBodyTooLong},
		{"body 4 GiB-1", func() []byte { return header(0, 0xffffffff) }, ErrBodyTooLong},
		{"key MaxKey+1", func() []byte { return header(MaxKey+1, 0) }, ErrKeyTooLong},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, n, err := ParseFrame(tc.bytes())
			if !errors.Is(err, tc.target) {
				t.Fatalf("err = %v, want %v", err, tc.target)
			}
			if n != 0 {
				t.Errorf("n = %d, want 0", n)
			}
		})
	}
}

func TestAppendFrameInvalid(t *testing.T) {
	tests := []struct {
		name   string
		frame  Frame
		target error
	}{
		{"type 0", Frame{}, ErrBadType},
		{"body too long", Frame{Type: TypeRequest, Body: make([]byte, MaxBody+1)}, ErrBodyTooLong},
		{"key too long", Frame{Type: TypeRequest, Key: make([]byte, MaxKey+1)}, ErrKeyTooLong},
		{"status in notify", Frame{Type: TypeNotify, Status: StatusOverloaded}, ErrBadStatus},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := AppendFrame(dst, &tc.frame)
			if !errors.Is(err, tc.target) {
				t.Fatalf("err = %v, want %v", err, tc.target)
			}
			if string(got) != "keep" {
				t.Errorf("dst changed to %q on error", got)
			}
		})
	}
}

func TestAppendFrameNoAlloc(t *testing.T) {
	f := goldenFrames[0].frame
	buf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = AppendFrame(buf[:0], &f)
	})
	if allocs != 0 {
		t.Fatalf("AppendFrame allocated %.1f times per call with room in dst", allocs)
	}
}

func TestStatusErr(t *testing.T) {
	if err := StatusOK.Err(); err != nil {
		t.Errorf("StatusOK.Err() = %v", err)
	}
	if err := StatusOverloaded.Err(); !errors.Is(err, ErrOverloaded) {
		t.Errorf("StatusOverloaded.Err() = %v", err)
	}
	if err := Status(9).Err(); !errors.Is(err, ErrBadStatus) {
		t.Errorf("Status(9).Err() = %v", err)
	}
}

// FuzzParseFrame checks that ParseFrame never panics, that what it accepts
// encodes back to the same bytes, and that feeding the input in two parts,
// as TCP may deliver it, gives the same result as feeding it whole.
func FuzzParseFrame(f *testing.F) {
	for _, tc := range goldenFrames {
		f.Add(mustHex(tc.hex))
	}
	f.Add(append(mustHex(goldenFrames[0].hex), mustHex(goldenFrames[1].hex)...))
	f.Add(header(MaxKey+1, 0))
	f.Add(header(0, MaxBody+1))

	f.Fuzz(func(t *testing.T, b []byte) {
		whole, n, err := ParseFrame(b)
		if err == nil && n > 0 {
			re, err := AppendFrame(nil, &whole)
			if err != nil {
				t.Fatalf("AppendFrame of a parsed frame: %v", err)
			}
			if !bytes.Equal(re, b[:n]) {
				t.Fatalf("re-encoded %x, parsed from %x", re, b[:n])
			}
		}
		for _, split := range splitPoints(len(b)) {
			_, n1, err1 := ParseFrame(b[:split])
			if err1 != nil && err == nil {
				t.Fatalf("first %d bytes fail with %v but the whole input parses", split, err1)
			}
			if err1 == nil && n1 > 0 && n1 != n {
				t.Fatalf("first %d bytes give a %d-byte frame, the whole input %d", split, n1, n)
			}
		}
	})
}

// splitPoints returns up to 32 positions to split an input of n bytes,
// always including the header boundary.
func splitPoints(n int) []int {
	var points []int
	step := max(1, n/32)
	for i := 0; i <= n; i += step {
		points = append(points, i)
	}
	if n > HeaderLen {
		points = append(points, HeaderLen)
	}
	return points
}

func BenchmarkAppendFrame(b *testing.B) {
	f := goldenFrames[0].frame
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(f.Len()))
	for b.Loop() {
		buf, _ = AppendFrame(buf[:0], &f)
	}
}

func BenchmarkParseFrame(b *testing.B) {
	raw := mustHex(goldenFrames[0].hex)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, _, err := ParseFrame(raw); err != nil {
			b.Fatal(err)
		}
	}
}

package diameter

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// fuzzSeeds are real messages: the golden CCR and DWA, the malformed cases
// of the unit tests, and a CER whose Origin-Host is ff fe c0.
func fuzzSeeds(f *testing.F) {
	for _, s := range []string{
		goldenCCR, goldenDWA,
		"01 000010 80 000118 00000000 00000001 00000001",
		`01 000024 80 000110 00000004 00000001 00000001 00000107 40 000040 73317373 73737373`,
		`01 000020 80 000110 00000004 00000001 00000001 000003e8 c0 00000a 000028af`,
		`01 000060 80 000101 00000000 00000001 00000001 00000108 40 00000b fffec0 00
		00000128 40 00000c 74657374 00000101 40 00000e 0001 7f000001 0000
		0000010a 40 00000c 00000000 0000010d 00 000009 78 000000 00000102 40 00000c 00000004`,
	} {
		f.Add(unhex(f, s))
	}
}

// readAll frames every message in the stream r.
func readAll(r io.Reader) (msgs [][]byte, err error) {
	for {
		msg, _, err := readFrame(r, 4096)
		if err != nil {
			return msgs, err
		}
		msgs = append(msgs, msg)
	}
}

// FuzzFraming reads a TCP stream as one chunk and as every input split in
// two: the framing must not depend on how the bytes arrive.
func FuzzFraming(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		whole, errWhole := readAll(bytes.NewReader(data))
		for _, cut := range []int{1, len(data) / 2, len(data) - 1} {
			if cut <= 0 || cut >= len(data) {
				continue
			}
			split, errSplit := readAll(io.MultiReader(bytes.NewReader(data[:cut]), bytes.NewReader(data[cut:])))
			if len(split) != len(whole) || (errWhole == nil) != (errSplit == nil) {
				t.Fatalf("cut %d: %d messages (%v), whole: %d (%v)", cut, len(split), errSplit, len(whole), errWhole)
			}
			for i := range whole {
				if !bytes.Equal(whole[i], split[i]) {
					t.Fatalf("cut %d: message %d differs", cut, i)
				}
			}
		}
		for _, m := range whole {
			if len(m) > 4096 || len(m) < HeaderLen || len(m)%4 != 0 {
				t.Fatalf("framed a %d-byte message", len(m))
			}
		}
	})
}

// FuzzAVPWalk runs every parser over arbitrary messages: none may panic, and
// a rewritten answer must itself walk cleanly with Session-Id first.
func FuzzAVPWalk(f *testing.F) {
	fuzzSeeds(f)
	r := router{keyCode: AVPSessionID, known: knownAVPs()}
	id := Identity{Host: "gw", Realm: "realm"}
	f.Fuzz(func(t *testing.T, msg []byte) {
		_, _, _ = FindAVP(msg, AVPSessionID, 0)
		h, err := ReadHeader(msg)
		if err != nil || int(h.Length) != len(msg) {
			return
		}
		var v verdict
		r.inspect(msg, &v)
		if v.result == 0 && v.key == nil {
			t.Fatal("inspect passed a request without a key")
		}
		if c, rej := parseCER(msg, r.known); rej.result == 0 && (!validIdentity(c.host) || !validIdentity(c.realm)) {
			t.Fatalf("parseCER passed Origin-Host %q, Origin-Realm %q", c.host, c.realm)
		}

		req := Header{Flags: FlagRequest, CommandCode: h.CommandCode, AppID: h.AppID, HopByHop: 1, EndToEnd: 2}
		out, _, err := RewriteAnswer(nil, msg, req, id)
		if err != nil {
			if !errors.Is(err, ErrBadAnswer) {
				t.Fatalf("RewriteAnswer error %v does not wrap ErrBadAnswer", err)
			}
			return
		}
		body, err := Body(out)
		if err != nil {
			t.Fatalf("rewritten answer: %v", err)
		}
		it := NewAVPIter(body)
		var a AVP
		for it.Next(&a) {
		}
		if it.Err() != nil {
			t.Fatalf("rewritten answer does not walk: %v", it.Err())
		}
		if _, ok, _ := FindAVP(msg, AVPSessionID, 0); ok && (len(body) < 4 || body[3] != AVPSessionID&0xff) {
			t.Fatal("Session-Id is not the first AVP of the rewritten answer")
		}
	})
}

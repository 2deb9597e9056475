package cluster_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// Each datagram carries one message format error (RFC 7252 §3). A CON gets
// RST with its Message ID; NON, ACK and RST are dropped.
var malformedDatagrams = []struct {
	name string
	hex  string
	rst  bool
}{
	{"token length 9", "49011001010203040506070809", true},
	{"token length 15", "4F011002", true},
	{"option delta nibble 15", "40011003F0", true},
	{"option length nibble 15", "400110040F", true},
	{"truncated option header", "40011005D0", true},
	{"payload marker without payload", "40021006FF", true},
	{"version 2", "80011007", true},
	{"NON token length 9", "59011008010203040506070809", false},
	{"NON payload marker without payload", "50021009FF", false},
	{"ACK with option delta 15", "6001100AF0", false},
	{"RST with payload marker", "7000100BFF", false},
	{"two bytes", "4001", false},
}

func TestMalformedDatagramsAgainstGateway(t *testing.T) {
	c := startCluster(t, 1)
	raddr, err := net.ResolveUDPAddr("udp", c.coap)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 2048)
	read := func(wait time.Duration) []byte {
		conn.SetReadDeadline(time.Now().Add(wait))
		n, err := conn.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return buf[:n]
	}
	for _, tc := range malformedDatagrams {
		b, _ := hex.DecodeString(tc.hex)
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		got := read(300 * time.Millisecond)
		switch {
		case tc.rst && !bytes.Equal(got, []byte{0x70, 0, b[2], b[3]}):
			t.Errorf("%s: got %x, want RST 7000%x", tc.name, got, b[2:4])
		case !tc.rst && got != nil:
			t.Errorf("%s: got %x, want silence", tc.name, got)
		}
	}
	// A 1100-byte Uri-Path segment (the session key) exceeds the option's
	// 255-byte maximum: 4.02 at once, not an Empty ACK and silence.
	req := append([]byte{0x40, 0x02, 0x12, 0x34, 0xb1, 'd'}, longUriPath(strings.Repeat("k", 1100))...)
	conn.Write(req)
	if resp := read(3 * time.Second); len(resp) < 4 || resp[0]>>4 != 0x6 || resp[1] != 0x82 {
		t.Errorf("POST with a 1100-byte key got %x, want ACK 4.02", resp)
	}

	// The gateway keeps serving: a CON GET to /.well-known/core.
	get, _ := hex.DecodeString("4001beef" + "bb2e77656c6c2d6b6e6f776e" + "04636f7265")
	conn.Write(get)
	resp := read(3 * time.Second)
	if len(resp) < 4 || resp[0]>>4 != 0x6 || resp[1] != 0x45 {
		t.Fatalf("after malformed input, GET /.well-known/core got %x, want ACK 2.05", resp)
	}
}

// longUriPath encodes one Uri-Path option of 269 bytes or more, following
// the Uri-Path "d" already in the message (option delta 0, 2-byte extended
// length, RFC 7252 §3.1), then a payload.
func longUriPath(seg string) []byte {
	n := len(seg) - 269
	b := []byte{0x0e, byte(n >> 8), byte(n)}
	b = append(b, seg...)
	return append(b, 0xff, '1')
}

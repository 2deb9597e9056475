// Package coap is the gateway's CoAP endpoint (RFC 7252 over UDP). It parses
// datagrams with go-coap's message codec, answers what the gateway answers
// itself (pings, duplicates, format errors, bad options, block-wise steps)
// and forwards each request to the worker that owns its session key.
package coap

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// Message types, the T field of the header (RFC 7252 §3).
const (
	typeCON uint8 = 0
	typeNON uint8 = 1
	typeACK uint8 = 2
	typeRST uint8 = 3
)

// Header layout (RFC 7252 §3):
//
//	byte 0: Ver (2 bits, must be 1) | T (2 bits) | TKL (4 bits, 0-8)
//	byte 1: Code (3-bit class . 5-bit detail)
//	bytes 2-3: Message ID, big-endian
//	then TKL bytes of token, options, and 0xFF before a non-empty payload.
const headerLen = 4

// Option numbers the gateway understands (RFC 7252 §5.10, RFC 7641 §2,
// RFC 7959 §2.1, RFC 8613 §2, RFC 7252 §5.10.2).
const (
	optIfMatch       = 1
	optUriHost       = 3
	optETag          = 4
	optIfNoneMatch   = 5
	optObserve       = 6
	optUriPort       = 7
	optLocationPath  = 8
	optOSCORE        = 9
	optUriPath       = 11
	optContentFormat = 12
	optMaxAge        = 14
	optUriQuery      = 15
	optAccept        = 17
	optQBlock1       = 19
	optLocationQuery = 20
	optBlock2        = 23
	optBlock1        = 27
	optSize2         = 28
	optQBlock2       = 31
	optProxyURI      = 35
	optProxyScheme   = 39
	optSize1         = 60
	optNoResponse    = 258
)

// maxOptions bounds the options decoded from one datagram. go-coap's decoder
// fails with ErrOptionsTooSmall past the slice capacity, which the endpoint
// answers with 4.00 because the message itself is well formed.
const maxOptions = 64

// Response codes the gateway sends itself.
var (
	codeContinue        = codes.Continue
	codeBadRequest      = codes.BadRequest
	codeBadOption       = codes.BadOption
	codeIncomplete      = codes.RequestEntityIncomplete
	codeTooLarge        = codes.RequestEntityTooLarge
	codeUnavailable     = codes.ServiceUnavailable
	codeGatewayTimeout  = codes.GatewayTimeout
	codeProxyNotSupport = codes.ProxyingNotSupported
)

// errFormat marks a message format error (RFC 7252 §3): the endpoint answers
// a CON with RST and drops anything else.
var errFormat = errors.New("coap: message format error")

// decode parses one datagram into m, whose Options must have capacity
// maxOptions. Every error wraps errFormat.
func decode(b []byte, m *message.Message) error {
	if len(b) >= 1 && b[0]>>6 != 1 {
		return fmt.Errorf("%w: version %d", errFormat, b[0]>>6)
	}
	if _, err := coder.DefaultCoder.Decode(b, m); err != nil {
		return fmt.Errorf("%w: %w", errFormat, err)
	}
	if m.Code == codes.Empty && len(b) != headerLen {
		// An Empty message is the 4-byte header only (RFC 7252 §4.1).
		return fmt.Errorf("%w: empty message with %d trailing bytes", errFormat, len(b)-headerLen)
	}
	if c := uint8(m.Code); c>>5 == 1 || c>>5 == 6 || c>>5 == 7 {
		// Classes 1, 6 and 7 are reserved (RFC 7252 §3).
		return fmt.Errorf("%w: reserved code class %d", errFormat, c>>5)
	}
	return nil
}

// isRequest reports whether code is a method code 0.01-0.31.
func isRequest(c codes.Code) bool { return c != codes.Empty && uint8(c)>>5 == 0 }

// badCritical returns the first critical option (odd number) that the
// gateway does not implement or whose value length is out of its range, and
// a reason for the diagnostic payload (RFC 7252 §5.4.1, §5.4.3). It returns
// 0 when every critical option is acceptable.
func badCritical(opts message.Options) (message.OptionID, string) {
	for _, o := range opts {
		if o.ID&1 == 0 {
			continue
		}
		switch o.ID {
		case optIfMatch, optUriHost, optIfNoneMatch, optUriPort, optUriPath,
			optUriQuery, optAccept, optBlock2, optBlock1, optProxyURI, optProxyScheme:
		default:
			return o.ID, "unknown critical option "
		}
		def := message.CoapOptionDefs[o.ID]
		if n := uint32(len(o.Value)); n < def.MinLen || n > def.MaxLen {
			return o.ID, "invalid length of critical option "
		}
	}
	return 0, ""
}

// hasOption reports whether opts contains id.
func hasOption(opts message.Options, id message.OptionID) bool {
	for _, o := range opts {
		if o.ID == id {
			return true
		}
	}
	return false
}

// uintOption returns the value of an unsigned integer option
// (RFC 7252 §3.2: big-endian, 0-4 bytes, leading zeros allowed).
func uintOption(opts message.Options, id message.OptionID) (uint32, bool) {
	for _, o := range opts {
		if o.ID != id {
			continue
		}
		if len(o.Value) > 4 {
			return 0, false
		}
		var v uint32
		for _, b := range o.Value {
			v = v<<8 | uint32(b)
		}
		return v, true
	}
	return 0, false
}

// empty builds an Empty ACK or RST for mid into dst (RFC 7252 §4.2, §4.3).
func empty(dst []byte, typ uint8, mid uint16) []byte {
	dst = append(dst[:0], 1<<6|typ<<4, 0, 0, 0)
	binary.BigEndian.PutUint16(dst[2:], mid)
	return dst
}

// setHeader rewrites the type and Message ID of an encoded message in place.
func setHeader(b []byte, typ uint8, mid uint16) {
	b[0] = b[0]&0xCF | typ<<4
	binary.BigEndian.PutUint16(b[2:], mid)
}

// codeNames holds "c.dd" for every CoAP code, so labelling a metric by code
// does not format a string.
var codeNames = func() (t [256]string) {
	for i := range t {
		t[i] = fmt.Sprintf("%d.%02d", i>>5, i&31)
	}
	return t
}()

// block is a decoded Block1 or Block2 option value (RFC 7959 §2.2):
// NUM (up to 20 bits) | M (1 bit) | SZX (3 bits), in 0-3 bytes.
type block struct {
	num  uint32
	more bool
	szx  uint8
}

func (b block) size() int { return 1 << (b.szx + 4) }

func parseBlock(v uint32) block {
	return block{num: v >> 4, more: v&8 != 0, szx: uint8(v & 7)}
}

func (b block) value() uint32 {
	v := b.num<<4 | uint32(b.szx)
	if b.more {
		v |= 8
	}
	return v
}

// szxFor returns the SZX for a block size of n bytes, rounded down.
func szxFor(n int) uint8 {
	s := uint8(0)
	for s < 6 && 1<<(s+5) <= n {
		s++
	}
	return s
}

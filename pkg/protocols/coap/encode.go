package coap

import (
	"encoding/binary"
	"sort"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// appendHeader appends the 4-byte header and the token.
func appendHeader(dst []byte, typ uint8, code codes.Code, mid uint16, token []byte) []byte {
	dst = append(dst, 1<<6|typ<<4|uint8(len(token)), uint8(code), 0, 0)
	binary.BigEndian.PutUint16(dst[len(dst)-2:], mid)
	return append(dst, token...)
}

// optionNibble returns the 4-bit delta or length field for v and how many
// extension bytes follow it (RFC 7252 §3.1: 13 adds one byte, 14 adds two).
func optionNibble(v int) (uint8, int) {
	switch {
	case v < 13:
		return uint8(v), 0
	case v < 269:
		return 13, 1
	default:
		return 14, 2
	}
}

func appendExtension(dst []byte, v, n int) []byte {
	switch n {
	case 1:
		return append(dst, uint8(v-13))
	case 2:
		return binary.BigEndian.AppendUint16(dst, uint16(v-269))
	}
	return dst
}

// appendOption appends one option whose number is id, following an option
// numbered prev.
func appendOption(dst []byte, prev, id message.OptionID, val []byte) []byte {
	delta := int(id - prev)
	dn, dx := optionNibble(delta)
	ln, lx := optionNibble(len(val))
	dst = append(dst, dn<<4|ln)
	dst = appendExtension(dst, delta, dx)
	dst = appendExtension(dst, len(val), lx)
	return append(dst, val...)
}

// appendMessage appends a whole message. opts must be sorted by number.
func appendMessage(dst []byte, typ uint8, code codes.Code, mid uint16, token []byte,
	opts message.Options, payload []byte) []byte {
	dst = appendHeader(dst, typ, code, mid, token)
	var prev message.OptionID
	for _, o := range opts {
		dst = appendOption(dst, prev, o.ID, o.Value)
		prev = o.ID
	}
	if len(payload) > 0 {
		dst = append(dst, 0xFF)
		dst = append(dst, payload...)
	}
	return dst
}

// uintValue returns the shortest big-endian encoding of v (RFC 7252 §3.2).
func uintValue(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	i := 0
	for i < 4 && b[i] == 0 {
		i++
	}
	return append([]byte(nil), b[i:]...)
}

// replaceOptions returns a copy of opts without the options in drop, plus
// add, sorted by number. Used on the block-wise path only: it allocates.
func replaceOptions(opts message.Options, drop []message.OptionID, add ...message.Option) message.Options {
	out := make(message.Options, 0, len(opts)+len(add))
	for _, o := range opts {
		keep := true
		for _, d := range drop {
			if o.ID == d {
				keep = false
				break
			}
		}
		if keep {
			out = append(out, o)
		}
	}
	out = append(out, add...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

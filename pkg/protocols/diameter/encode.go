package diameter

import (
	"encoding/binary"
	"net/netip"
)

// The Append functions encode a message into a caller's buffer: AppendHeader,
// then AVPs, then SetLength. They only append, so a caller that reuses a
// buffer pays no allocation once it is large enough.

// AppendHeader appends h with a zero Message Length; SetLength fills it in.
func AppendHeader(dst []byte, h Header) []byte {
	v := h.Version
	if v == 0 {
		v = Version
	}
	dst = append(dst, v, 0, 0, 0, h.Flags,
		byte(h.CommandCode>>16), byte(h.CommandCode>>8), byte(h.CommandCode))
	dst = binary.BigEndian.AppendUint32(dst, h.AppID)
	dst = binary.BigEndian.AppendUint32(dst, h.HopByHop)
	return binary.BigEndian.AppendUint32(dst, h.EndToEnd)
}

// SetLength writes len(msg) into the Message Length field of msg, which must
// start with a header.
func SetLength(msg []byte) []byte {
	putUint24(msg[1:4], uint32(len(msg)))
	return msg
}

func putUint24(b []byte, v uint32) {
	b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v)
}

// appendAVPHeader appends an AVP header for a payload of n bytes. The V flag
// is set exactly when vendor is non-zero.
func appendAVPHeader(dst []byte, code uint32, flags uint8, vendor uint32, n int) []byte {
	hdr := avpHeaderLen
	flags &^= AVPFlagVendor
	if vendor != 0 {
		hdr = avpVendorHeaderLen
		flags |= AVPFlagVendor
	}
	length := uint32(hdr + n)
	dst = binary.BigEndian.AppendUint32(dst, code)
	dst = append(dst, flags, byte(length>>16), byte(length>>8), byte(length))
	if vendor != 0 {
		dst = binary.BigEndian.AppendUint32(dst, vendor)
	}
	return dst
}

func appendPadding(dst []byte, n int) []byte {
	for ; n%4 != 0; n++ {
		dst = append(dst, 0)
	}
	return dst
}

// AppendAVP appends an AVP carrying data, padded to 4 bytes.
func AppendAVP(dst []byte, code uint32, flags uint8, vendor uint32, data []byte) []byte {
	dst = appendAVPHeader(dst, code, flags, vendor, len(data))
	dst = append(dst, data...)
	return appendPadding(dst, len(data))
}

// AppendString appends an AVP of a string type (OctetString, UTF8String,
// DiameterIdentity).
func AppendString(dst []byte, code uint32, flags uint8, vendor uint32, s string) []byte {
	dst = appendAVPHeader(dst, code, flags, vendor, len(s))
	dst = append(dst, s...)
	return appendPadding(dst, len(s))
}

// AppendUint32 appends an Unsigned32, Integer32 or Enumerated AVP.
func AppendUint32(dst []byte, code uint32, flags uint8, vendor uint32, v uint32) []byte {
	dst = appendAVPHeader(dst, code, flags, vendor, 4)
	return binary.BigEndian.AppendUint32(dst, v)
}

// AppendUint64 appends an Unsigned64 AVP.
func AppendUint64(dst []byte, code uint32, flags uint8, vendor uint32, v uint64) []byte {
	dst = appendAVPHeader(dst, code, flags, vendor, 8)
	return binary.BigEndian.AppendUint64(dst, v)
}

// AppendAddress appends an Address AVP (RFC 6733 §4.3.1): a 2-byte address
// family (1 IPv4, 2 IPv6) followed by the address.
func AppendAddress(dst []byte, code uint32, flags uint8, addr netip.Addr) []byte {
	addr = addr.Unmap()
	family, raw := uint16(2), addr.As16()
	data := raw[:]
	if addr.Is4() {
		v4 := addr.As4()
		family, data = 1, v4[:]
	}
	dst = appendAVPHeader(dst, code, flags, 0, 2+len(data))
	dst = binary.BigEndian.AppendUint16(dst, family)
	dst = append(dst, data...)
	return appendPadding(dst, 2+len(data))
}

// BeginGroup appends the header of a Grouped AVP and returns the offset that
// EndGroup needs once the members are appended.
func BeginGroup(dst []byte, code uint32, flags uint8, vendor uint32) ([]byte, int) {
	start := len(dst)
	return appendAVPHeader(dst, code, flags, vendor, 0), start
}

// EndGroup sets the length of the Grouped AVP that BeginGroup started at start.
// Members are padded already, so the group needs no padding of its own.
func EndGroup(dst []byte, start int) []byte {
	putUint24(dst[start+5:start+8], uint32(len(dst)-start))
	return dst
}

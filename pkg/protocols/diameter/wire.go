// Package diameter is the gateway's Diameter (RFC 6733) node: an allocation-free
// codec for routing (header, AVP walk, answer rewriting) and a TCP server that
// performs the peer state machine (capabilities exchange, watchdog, disconnect)
// and forwards requests to the worker that owns each session.
package diameter

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Header layout (RFC 6733 §3), 20 bytes:
//
//	0       1       2       3
//	Version Message-Length (24 bits)
//	Flags   Command-Code (24 bits)
//	Application-ID (32 bits)
//	Hop-by-Hop Identifier (32 bits)
//	End-to-End Identifier (32 bits)
const (
	HeaderLen = 20
	Version   = 1

	FlagRequest       = 0x80 // R: request (RFC 6733 §3)
	FlagProxiable     = 0x40 // P: may be proxied, relayed or redirected
	FlagError         = 0x20 // E: answer carries a protocol error (3xxx)
	FlagRetransmitted = 0x10 // T: potentially retransmitted request
	flagsReserved     = 0x0f // r bits: must be zero (RFC 6733 §3)
)

// AVP header layout (RFC 6733 §4.1): code (32 bits), flags (8 bits), length
// (24 bits, header included, padding excluded), then a 32-bit Vendor-ID when
// the V flag is set. Data is padded to a multiple of 4 bytes.
const (
	avpHeaderLen       = 8
	avpVendorHeaderLen = 12

	AVPFlagVendor    = 0x80 // V: Vendor-ID field present
	AVPFlagMandatory = 0x40 // M: receiver must understand the AVP
)

// Header is the fixed part of a Diameter message.
type Header struct {
	Version     uint8
	Length      uint32 // whole message including this header, in bytes
	Flags       uint8
	CommandCode uint32
	AppID       uint32
	HopByHop    uint32
	EndToEnd    uint32
}

// IsRequest reports whether the R bit is set.
func (h Header) IsRequest() bool { return h.Flags&FlagRequest != 0 }

// Errors of framing. A stream that yields one of these cannot be re-synchronised,
// so the connection must be closed.
var (
	ErrShortHeader   = errors.New("diameter: message shorter than the 20-byte header")
	ErrBadLength     = errors.New("diameter: invalid message length")
	ErrBadVersion    = errors.New("diameter: unsupported version")
	ErrAVPLength     = errors.New("diameter: invalid AVP length")
	ErrMessageLength = errors.New("diameter: message length does not match the buffer")
)

// ReadHeader decodes the 20-byte header at the start of b. It checks only what
// framing needs: the Message Length must be at least 20 and a multiple of 4
// (RFC 6733 §3). The version is returned as is, for the caller to answer 5011.
func ReadHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrShortHeader
	}
	h := Header{
		Version:     b[0],
		Length:      uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]),
		Flags:       b[4],
		CommandCode: uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7]),
		AppID:       binary.BigEndian.Uint32(b[8:12]),
		HopByHop:    binary.BigEndian.Uint32(b[12:16]),
		EndToEnd:    binary.BigEndian.Uint32(b[16:20]),
	}
	if h.Length < HeaderLen || h.Length%4 != 0 {
		return h, fmt.Errorf("%w: %d (must be at least 20 and a multiple of 4)", ErrBadLength, h.Length)
	}
	return h, nil
}

// AVP is one attribute-value pair as it sits in a message. Data aliases the
// message buffer.
type AVP struct {
	Code     uint32
	Flags    uint8
	VendorID uint32
	Data     []byte
	// Raw is the whole AVP as encoded, header and padding included.
	Raw []byte
}

// AVPError is a framing error at one AVP. Header holds the offending AVP
// header bytes (up to 12 of them) for a Failed-AVP.
type AVPError struct {
	Offset int
	Header []byte
	Err    error
}

func (e *AVPError) Error() string {
	return fmt.Sprintf("diameter: AVP at offset %d: %v", e.Offset, e.Err)
}

func (e *AVPError) Unwrap() error { return e.Err }

// AVPIter walks the AVPs of a message body without allocating. It is not
// safe for concurrent use.
type AVPIter struct {
	buf []byte
	off int
	err error
}

// NewAVPIter returns an iterator over the AVPs in body, which is a message
// without its header or the payload of a Grouped AVP.
func NewAVPIter(body []byte) AVPIter { return AVPIter{buf: body} }

// Next decodes the next AVP into a. It returns false at the end of the body or
// at a framing error, which Err then returns.
func (it *AVPIter) Next(a *AVP) bool {
	if it.err != nil || it.off >= len(it.buf) {
		return false
	}
	rest := it.buf[it.off:]
	if len(rest) < avpHeaderLen {
		return it.fail(rest, fmt.Errorf("%w: %d bytes left, an AVP header needs 8", ErrAVPLength, len(rest)))
	}
	flags := rest[4]
	length := int(rest[5])<<16 | int(rest[6])<<8 | int(rest[7])
	hdr := avpHeaderLen
	if flags&AVPFlagVendor != 0 {
		hdr = avpVendorHeaderLen
	}
	if length < hdr {
		return it.fail(rest, fmt.Errorf("%w: %d is shorter than its %d-byte header", ErrAVPLength, length, hdr))
	}
	if length > len(rest) {
		return it.fail(rest, fmt.Errorf("%w: %d runs past the message (%d bytes left)", ErrAVPLength, length, len(rest)))
	}
	padded := (length + 3) &^ 3
	if padded > len(rest) {
		// The last AVP of a message must still carry its padding (RFC 6733 §4).
		padded = len(rest)
	}
	a.Code = binary.BigEndian.Uint32(rest[0:4])
	a.Flags = flags
	a.VendorID = 0
	if hdr == avpVendorHeaderLen {
		a.VendorID = binary.BigEndian.Uint32(rest[8:12])
	}
	a.Data = rest[hdr:length]
	a.Raw = rest[:padded]
	it.off += padded
	return true
}

func (it *AVPIter) fail(rest []byte, err error) bool {
	n := min(len(rest), avpVendorHeaderLen)
	it.err = &AVPError{Offset: HeaderLen + it.off, Header: rest[:n], Err: err}
	return false
}

// Err returns the framing error that stopped the walk, or nil.
func (it *AVPIter) Err() error { return it.err }

// Body returns the AVP part of msg after checking that msg holds exactly the
// length its header states.
func Body(msg []byte) ([]byte, error) {
	h, err := ReadHeader(msg)
	if err != nil {
		return nil, err
	}
	if int(h.Length) != len(msg) {
		return nil, fmt.Errorf("%w: header says %d, buffer has %d", ErrMessageLength, h.Length, len(msg))
	}
	return msg[HeaderLen:], nil
}

// FindAVP returns the data of the first top-level AVP with code and vendor in
// msg, a whole message. It walks at most len(msg)/8 AVPs and does not allocate
// unless it returns a framing error.
func FindAVP(msg []byte, code uint32, vendor uint32) (data []byte, ok bool, err error) {
	body, err := Body(msg)
	if err != nil {
		return nil, false, err
	}
	it := NewAVPIter(body)
	var a AVP
	for it.Next(&a) {
		if a.Code == code && a.VendorID == vendor {
			return a.Data, true, nil
		}
	}
	return nil, false, it.Err()
}

// Uint32 decodes an Unsigned32, Integer32 or Enumerated AVP payload.
func Uint32(data []byte) (uint32, bool) {
	if len(data) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(data), true
}

// Uint64 decodes an Unsigned64 AVP payload.
func Uint64(data []byte) (uint64, bool) {
	if len(data) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(data), true
}

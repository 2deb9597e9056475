package load

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Diameter header (RFC 6733 §3), 20 bytes:
//
//	Version(1) | Message Length(3)
//	Command Flags(1) | Command Code(3)
//	Application-ID(4) | Hop-by-Hop Identifier(4) | End-to-End Identifier(4)
const (
	diamHeaderLen = 20
	diamMaxLen    = 1 << 16 // larger answers are not expected from any peer here
	flagRequest   = 0x80
	flagProxiable = 0x40
	flagError     = 0x20
)

// Command codes and application ids used by the load.
const (
	cmdCapabilitiesExchange = 257 // RFC 6733 §5.3.1
	cmdDeviceWatchdog       = 280 // RFC 6733 §5.5.1
	cmdDisconnectPeer       = 282 // RFC 6733 §5.4.1
	cmdCreditControl        = 272 // RFC 4006 §3.1
	cmdTestRequest          = 0xfffffe
	appCreditControl        = 4        // RFC 4006 §12.1
	appTest                 = 0xffffff // freeDiameter test_app default Application Id
	vendorTest              = 999999   // freeDiameter test_app default Vendor-Id
)

// AVP codes (RFC 6733 §4.5, RFC 4006 §8) and the AVP flags (RFC 6733 §4.1).
const (
	avpHostIPAddress       = 257
	avpAuthApplicationID   = 258
	avpVendorSpecificAppID = 260
	avpSessionID           = 263
	avpOriginHost          = 264
	avpVendorID            = 266
	avpResultCode          = 268
	avpProductName         = 269
	avpDisconnectCause     = 273
	avpOriginStateID       = 278
	avpDestinationRealm    = 283
	avpOriginRealm         = 296
	avpExperimentalResult  = 297
	avpExperimentalCode    = 298
	avpCCRequestNumber     = 415
	avpCCRequestType       = 416
	avpServiceContextID    = 461
	avpTest                = 0xffffff // test_app Test-AVP, Integer32, vendor 999999
	avpFlagVendor          = 0x80
	avpFlagMandatory       = 0x40
	resultSuccess          = 2001
	disconnectRebooting    = 0 // Disconnect-Cause REBOOTING, RFC 6733 §5.4.3
)

// diamMsg appends one Diameter message. Begin writes the header with a zero
// length, the AVP methods append AVPs, and End patches the length.
type diamMsg struct{ b []byte }

func (m *diamMsg) begin(buf []byte, flags byte, cmd, app, hbh, e2e uint32) {
	m.b = append(buf[:0], 1, 0, 0, 0, flags, byte(cmd>>16), byte(cmd>>8), byte(cmd))
	m.b = binary.BigEndian.AppendUint32(m.b, app)
	m.b = binary.BigEndian.AppendUint32(m.b, hbh)
	m.b = binary.BigEndian.AppendUint32(m.b, e2e)
}

func (m *diamMsg) end() []byte {
	putUint24(m.b[1:], uint32(len(m.b)))
	return m.b
}

// avp appends an AVP header and data padded to 4 bytes (RFC 6733 §4.1).
// vendor 0 leaves out the Vendor-ID field.
func (m *diamMsg) avp(code uint32, flags byte, vendor uint32, data []byte) {
	hdr := 8
	if vendor != 0 {
		flags |= avpFlagVendor
		hdr = 12
	}
	m.b = binary.BigEndian.AppendUint32(m.b, code)
	m.b = append(m.b, flags, 0, 0, 0)
	putUint24(m.b[len(m.b)-3:], uint32(hdr+len(data)))
	if vendor != 0 {
		m.b = binary.BigEndian.AppendUint32(m.b, vendor)
	}
	m.b = append(m.b, data...)
	for len(m.b)%4 != 0 {
		m.b = append(m.b, 0)
	}
}

func (m *diamMsg) str(code uint32, s string) {
	m.b = binary.BigEndian.AppendUint32(m.b, code)
	m.b = append(m.b, avpFlagMandatory, 0, 0, 0)
	putUint24(m.b[len(m.b)-3:], uint32(8+len(s)))
	m.b = append(m.b, s...)
	for len(m.b)%4 != 0 {
		m.b = append(m.b, 0)
	}
}

func (m *diamMsg) u32(code uint32, flags byte, vendor, v uint32) {
	var d [4]byte
	binary.BigEndian.PutUint32(d[:], v)
	m.avp(code, flags, vendor, d[:])
}

// group appends a grouped AVP whose members are written by fill.
func (m *diamMsg) group(code uint32, fill func()) {
	start := len(m.b)
	m.b = binary.BigEndian.AppendUint32(m.b, code)
	m.b = append(m.b, avpFlagMandatory, 0, 0, 0)
	fill()
	putUint24(m.b[start+5:], uint32(len(m.b)-start))
}

func putUint24(b []byte, v uint32) {
	b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v)
}

func uint24(b []byte) uint32 {
	return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2])
}

// diamHeader is the decoded fixed header of one message.
type diamHeader struct {
	length   int
	flags    byte
	cmd      uint32
	app      uint32
	hbh, e2e uint32
}

var errDiamHeader = errors.New("invalid Diameter header")

func parseDiamHeader(b []byte) (diamHeader, error) {
	if len(b) < diamHeaderLen {
		return diamHeader{}, fmt.Errorf("%w: %d bytes, want %d", errDiamHeader, len(b), diamHeaderLen)
	}
	h := diamHeader{
		length: int(uint24(b[1:])),
		flags:  b[4],
		cmd:    uint24(b[5:]),
		app:    binary.BigEndian.Uint32(b[8:]),
		hbh:    binary.BigEndian.Uint32(b[12:]),
		e2e:    binary.BigEndian.Uint32(b[16:]),
	}
	if b[0] != 1 {
		return h, fmt.Errorf("%w: version %d, want 1", errDiamHeader, b[0])
	}
	if h.length < diamHeaderLen || h.length > diamMaxLen || h.length%4 != 0 {
		return h, fmt.Errorf("%w: length %d, want a multiple of 4 from %d to %d",
			errDiamHeader, h.length, diamHeaderLen, diamMaxLen)
	}
	return h, nil
}

// resultCode returns the Result-Code of a message, or the
// Experimental-Result-Code inside Experimental-Result, or 0 when neither is
// present or the AVPs are malformed.
func resultCode(msg []byte) uint32 {
	return findResult(msg[diamHeaderLen:], true)
}

func findResult(avps []byte, top bool) uint32 {
	for len(avps) >= 8 {
		code := binary.BigEndian.Uint32(avps)
		flags := avps[4]
		n := int(uint24(avps[5:]))
		hdr := 8
		if flags&avpFlagVendor != 0 {
			hdr = 12
		}
		if n < hdr || n > len(avps) {
			return 0
		}
		data := avps[hdr:n]
		switch {
		case (code == avpResultCode || code == avpExperimentalCode) && len(data) == 4 && hdr == 8:
			return binary.BigEndian.Uint32(data)
		case code == avpExperimentalResult && top:
			if rc := findResult(data, false); rc != 0 {
				return rc
			}
		}
		padded := (n + 3) &^ 3
		if padded > len(avps) {
			return 0
		}
		avps = avps[padded:]
	}
	return 0
}

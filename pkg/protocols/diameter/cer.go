package diameter

import (
	"net"
	"net/netip"
	"slices"
	"time"
)

// capabilities is what a CER says about the peer (RFC 6733 §5.3.1).
type capabilities struct {
	host, realm []byte
	apps        []uint32 // Auth- and Acct-Application-Ids, vendor-specific ones included
}

// parseCER reads the capabilities from a CER. On failure it returns the
// Result-Code, an Error-Message and the Failed-AVP content to answer with.
func parseCER(msg []byte) (c capabilities, result uint32, errMsg string, failed []byte) {
	it := NewAVPIter(msg[HeaderLen:])
	var a AVP
	for it.Next(&a) {
		if a.VendorID != 0 {
			continue
		}
		switch a.Code {
		case AVPOriginHost:
			c.host = a.Data
		case AVPOriginRealm:
			c.realm = a.Data
		case AVPAuthApplicationID, AVPAcctApplicationID:
			if id, ok := Uint32(a.Data); ok {
				c.apps = append(c.apps, id)
			}
		case AVPVendorSpecificApplicationID:
			c.apps = appendVendorApps(c.apps, a.Data)
		}
	}
	if err := it.Err(); err != nil {
		return c, ResultInvalidAVPLength, "invalid AVP length", failedHeader(nil, err.(*AVPError).Header)
	}
	if len(c.host) == 0 {
		return c, ResultMissingAVP, "missing Origin-Host", AppendAVP(nil, AVPOriginHost, AVPFlagMandatory, 0, nil)
	}
	if len(c.realm) == 0 {
		return c, ResultMissingAVP, "missing Origin-Realm", AppendAVP(nil, AVPOriginRealm, AVPFlagMandatory, 0, nil)
	}
	return c, ResultSuccess, "", nil
}

// appendVendorApps appends the application ids inside a
// Vendor-Specific-Application-Id group.
func appendVendorApps(apps []uint32, group []byte) []uint32 {
	it := NewAVPIter(group)
	var a AVP
	for it.Next(&a) {
		if a.VendorID == 0 && (a.Code == AVPAuthApplicationID || a.Code == AVPAcctApplicationID) {
			if id, ok := Uint32(a.Data); ok {
				apps = append(apps, id)
			}
		}
	}
	return apps
}

// servedApps are the applications the gateway forwards, as advertised in CEA.
var servedApps = []uint32{AppCreditControl, AppTest}

// commonApps returns the advertised applications the gateway also serves.
// A relay (0xffffffff) shares all of them (RFC 6733 §5.3).
func commonApps(apps []uint32) []uint32 {
	if slices.Contains(apps, AppRelay) {
		return slices.Clone(servedApps)
	}
	var out []uint32
	for _, id := range servedApps {
		if slices.Contains(apps, id) {
			out = append(out, id)
		}
	}
	return out
}

// handleCER performs the capabilities exchange and reports whether the
// connection stays open.
func (p *peer) handleCER(h Header, msg []byte) bool {
	c, result, errMsg, failed := parseCER(msg)
	var common []uint32
	if result == ResultSuccess {
		switch {
		case len(p.s.allowed) > 0 && !p.s.allowed[string(c.host)]:
			result, errMsg = ResultUnknownPeer, "Origin-Host not in the allowed peers"
		default:
			common = commonApps(c.apps)
			if len(common) == 0 {
				result, errMsg = ResultNoCommonApplication, "no common application: the gateway serves 4 and 16777215"
			}
		}
	}

	p.mu.Lock()
	p.host, p.realm, p.apps = string(c.host), string(c.realm), common
	p.log = p.log.With().Str("origin_host", p.host).Logger()
	p.mu.Unlock()

	cea := p.appendCEA(nil, h, result, errMsg, failed)
	if result != ResultSuccess {
		p.log.Warn().Uint32("result_code", result).Str("error", errMsg).Uints32("applications", c.apps).
			Msg("diameter capabilities exchange rejected")
		p.setState(stateClosing)
		p.w.sendAndClose(cea)
		return false
	}
	_ = p.conn.SetReadDeadline(time.Time{})
	p.w.send(cea)
	p.setState(stateOpen)
	go p.watchdog()
	return true
}

// appendCEA builds the CEA in the order of RFC 6733 §5.3.2. The E bit is set
// only for 3xxx codes, so 5010 goes without it.
func (p *peer) appendCEA(dst []byte, req Header, result uint32, errMsg string, failed []byte) []byte {
	dst = AppendAnswerStart(dst, req, nil, result, p.s.id)
	dst = AppendAddress(dst, AVPHostIPAddress, AVPFlagMandatory, hostIP(p.conn.LocalAddr()))
	dst = AppendUint32(dst, AVPVendorID, AVPFlagMandatory, 0, 0)
	dst = AppendString(dst, AVPProductName, 0, 0, defaultProductName)
	dst = AppendUint32(dst, AVPOriginStateID, AVPFlagMandatory, 0, p.s.stateID)
	if errMsg != "" {
		dst = AppendString(dst, AVPErrorMessage, 0, 0, errMsg)
	}
	if failed != nil {
		var g int
		dst, g = BeginGroup(dst, AVPFailedAVP, AVPFlagMandatory, 0)
		dst = append(dst, failed...)
		dst = EndGroup(dst, g)
	}
	dst = AppendUint32(dst, AVPSupportedVendorID, AVPFlagMandatory, 0, VendorTest)
	dst = AppendUint32(dst, AVPAuthApplicationID, AVPFlagMandatory, 0, AppCreditControl)
	var g int
	dst, g = BeginGroup(dst, AVPVendorSpecificApplicationID, AVPFlagMandatory, 0)
	dst = AppendUint32(dst, AVPVendorID, AVPFlagMandatory, 0, VendorTest)
	dst = AppendUint32(dst, AVPAuthApplicationID, AVPFlagMandatory, 0, AppTest)
	dst = EndGroup(dst, g)
	dst = AppendUint32(dst, AVPFirmwareRevision, 0, 0, defaultFirmwareRevision)
	return SetLength(dst)
}

// hostIP returns the IP of a TCP address, or 127.0.0.1 for other addresses.
func hostIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

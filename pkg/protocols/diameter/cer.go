package diameter

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// capabilities is what a CER says about the peer (RFC 6733 §5.3.1).
type capabilities struct {
	host, realm []byte
	apps        []uint32 // Auth- and Acct-Application-Ids, vendor-specific ones included
}

// maxCER is the largest CER accepted, in bytes. A larger one closes the
// connection before its body is read, which bounds the memory a connection
// can take before the gateway accepts it. By estimate, a CER with two
// 255-byte identities, 30 Supported-Vendor-Ids and 20
// Vendor-Specific-Application-Id groups is about 2 KiB.
const maxCER = 4096

// maxIdentity is the longest DiameterIdentity, an FQDN (RFC 6733 §4.3.1).
const maxIdentity = 255

// cerReject is the CEA a CER gets when it is rejected: the Result-Code, an
// Error-Message and the Failed-AVP content (nil for none).
type cerReject struct {
	result uint32
	errMsg string
	failed []byte
}

// parseCER reads the capabilities from a CER and checks them: AVP framing
// (5014), AVPs with the M bit outside known (5001), Origin-Host and
// Origin-Realm present (5005) and each a valid DiameterIdentity (5004). A
// zero result means the CER passed.
func parseCER(msg []byte, known map[uint64]struct{}) (capabilities, cerReject) {
	var c capabilities
	var hostAVP, realmAVP, unknown []byte
	it := NewAVPIter(msg[HeaderLen:])
	var a AVP
	for it.Next(&a) {
		if a.Flags&AVPFlagMandatory != 0 && unknown == nil {
			if _, ok := known[avpKey(a.VendorID, a.Code)]; !ok {
				unknown = a.Raw
			}
		}
		if a.VendorID != 0 {
			continue
		}
		switch a.Code {
		case AVPOriginHost:
			if hostAVP == nil {
				c.host, hostAVP = a.Data, a.Raw
			}
		case AVPOriginRealm:
			if realmAVP == nil {
				c.realm, realmAVP = a.Data, a.Raw
			}
		case AVPAuthApplicationID, AVPAcctApplicationID:
			if id, ok := Uint32(a.Data); ok {
				c.apps = append(c.apps, id)
			}
		case AVPVendorSpecificApplicationID:
			c.apps = appendVendorApps(c.apps, a.Data)
		}
	}
	if err := it.Err(); err != nil {
		return c, cerReject{ResultInvalidAVPLength, "invalid AVP length", failedHeader(nil, err.(*AVPError).Header)}
	}
	if unknown != nil {
		return c, cerReject{ResultAVPUnsupported, "AVP with the M bit not supported", unknown}
	}
	return c, checkIdentities(hostAVP, realmAVP, c)
}

// checkIdentities checks the Origin-Host and Origin-Realm of a CER, given
// their raw AVPs (nil when absent).
func checkIdentities(hostAVP, realmAVP []byte, c capabilities) cerReject {
	switch {
	case hostAVP == nil:
		return cerReject{ResultMissingAVP, "missing Origin-Host", AppendAVP(nil, AVPOriginHost, AVPFlagMandatory, 0, nil)}
	case realmAVP == nil:
		return cerReject{ResultMissingAVP, "missing Origin-Realm", AppendAVP(nil, AVPOriginRealm, AVPFlagMandatory, 0, nil)}
	case !validIdentity(c.host):
		return cerReject{ResultInvalidAVPValue, "invalid Origin-Host: " + identityRule, hostAVP}
	case !validIdentity(c.realm):
		return cerReject{ResultInvalidAVPValue, "invalid Origin-Realm: " + identityRule, realmAVP}
	}
	return cerReject{}
}

// identityRule is the rule validIdentity enforces, worded for an Error-Message.
const identityRule = "a DiameterIdentity is 1 to 255 printable ASCII characters without spaces"

// validIdentity reports whether b can be a DiameterIdentity, which RFC 6733
// §4.3.1 makes an FQDN in ASCII. The check accepts any printable ASCII but the
// space, looser than the FQDN grammar, so that a peer using an underscore
// still connects.
func validIdentity(b []byte) bool {
	if len(b) == 0 || len(b) > maxIdentity {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
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
// connection stays open. A rejected CER gets its CEA, then the connection
// closes.
func (p *peer) handleCER(h Header, msg []byte) bool {
	c, common, rej := p.checkCER(h, msg)

	p.mu.Lock()
	p.host, p.realm, p.apps = string(c.host), string(c.realm), common
	p.log = p.log.With().Str("origin_host", p.host).Logger()
	log := p.log
	p.mu.Unlock()

	if rej.result != 0 {
		log.Warn().Uint32("result_code", rej.result).Str("error", rej.errMsg).Uints32("applications", c.apps).
			Msg("diameter capabilities exchange rejected")
		p.setState(stateClosing)
		p.w.sendAndClose(p.appendCEA(nil, h, rej.result, rej.errMsg, rej.failed))
		return false
	}
	p.setLabel(p.s.labels.label(p.host))
	_ = p.conn.SetReadDeadline(time.Time{})
	p.w.send(p.appendCEA(nil, h, ResultSuccess, "", nil))
	p.setState(stateOpen)
	go p.watchdog()
	return true
}

// checkCER runs the checks of a CER in the order of the answers they give:
// header (5011, 3008), AVPs (5014, 5001, 5005, 5004), allowed peers (3010),
// common applications (5010), and last the claim on the Origin-Host (4003), so
// that only a CER that passes everything else takes the claim.
func (p *peer) checkCER(h Header, msg []byte) (capabilities, []uint32, cerReject) {
	if h.Version != Version {
		return capabilities{}, nil, cerReject{ResultUnsupportedVersion,
			"unsupported Diameter version: the gateway speaks version 1", nil}
	}
	if h.Flags&FlagError != 0 {
		return capabilities{}, nil, cerReject{ResultInvalidHeaderBits, "E bit set in a request", nil}
	}
	c, rej := parseCER(msg, p.s.router.known)
	if rej.result != 0 {
		return c, nil, rej
	}
	if len(p.s.allowed) > 0 && !p.s.allowed[strings.ToLower(string(c.host))] {
		return c, nil, cerReject{ResultUnknownPeer, "Origin-Host not in the allowed peers", nil}
	}
	common := commonApps(c.apps)
	if len(common) == 0 {
		return c, nil, cerReject{ResultNoCommonApplication,
			"no common application: the gateway serves 4 and 16777215", nil}
	}
	// A CER from an Origin-Host that already has a connection is the event
	// R-Conn-CER in state R-Open of RFC 6733 §5.6, whose action R-Reject
	// closes the new connection and keeps the open one. The election of
	// §5.6.4 does not apply: it picks between the connection a node initiated
	// and the one it accepted, and the gateway never initiates. The CEA before
	// the close tells the peer why. 4003 DIAMETER_ELECTION_LOST is a transient
	// failure, so the peer may retry once the old connection is gone. Erlang/OTP's
	// diameter application sends 4003 in this case too, whereas 5012 would call
	// the failure permanent.
	if !p.s.claimHost(string(c.host), p) {
		return c, nil, cerReject{ResultElectionLost,
			"Origin-Host already has an open connection to the gateway", nil}
	}
	return c, common, cerReject{}
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

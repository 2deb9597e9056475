package diameter

// MaxKey is the longest routing key, in bytes: the key limit of the link frame
// that carries a request to its worker (link.MaxKey). A request whose key is
// longer gets 5004 DIAMETER_INVALID_AVP_VALUE and is not forwarded.
const MaxKey = 1024

// verdict is the outcome of inspecting one request from a peer: either a key
// to route on or the error answer the gateway sends itself.
type verdict struct {
	sessionID []byte // Session-Id data, nil when absent
	key       []byte // routing key: the key AVP's data, or the Session-Id

	result    uint32 // 0 to forward, else the Result-Code of the error answer
	errMsg    string
	failedAVP []byte // Failed-AVP content that aliases the message, or nil
	// scratch holds a Failed-AVP built here when failedAVP is nil and
	// scratchLen is not zero. It is kept apart from failedAVP so that a
	// verdict on the stack does not point into itself and escape.
	scratch    [avpVendorHeaderLen]byte
	scratchLen int
}

// failed returns the Failed-AVP content of the error answer, or nil.
func (v *verdict) failed() []byte {
	if v.failedAVP != nil {
		return v.failedAVP
	}
	if v.scratchLen == 0 {
		return nil
	}
	return v.scratch[:v.scratchLen]
}

// router decides where a request goes. It is read-only after construction and
// safe for concurrent use.
type router struct {
	keyCode   uint32
	keyVendor uint32
	known     map[uint64]struct{}
}

// served reports whether the gateway forwards requests of app and cmd, and
// otherwise the Result-Code to answer with (RFC 6733 §7.1.3).
func served(app, cmd uint32) (ok bool, result uint32) {
	switch app {
	case AppCreditControl:
		return cmd == CmdCreditControl, ResultCommandUnsupported
	case AppTest:
		return cmd == CmdTest, ResultCommandUnsupported
	case AppCommon:
		// Base commands are handled by the peer state machine, so any other
		// command of application 0 is unsupported.
		return false, ResultCommandUnsupported
	}
	return false, ResultApplicationUnsupported
}

// inspect validates a request of a served application in one bounded walk of
// its top-level AVPs and fills v. The walk checks AVP framing (5014), looks
// for an unknown AVP with the M bit (5001), finds the Session-Id (5005 when
// absent) and the key AVP, and checks the key against MaxKey (5004). It does
// not allocate.
func (r *router) inspect(msg []byte, v *verdict) {
	it := NewAVPIter(msg[HeaderLen:])
	var a AVP
	var unknown, sessionAVP, keyAVP []byte
	for it.Next(&a) {
		switch {
		case a.Code == AVPSessionID && a.VendorID == 0 && v.sessionID == nil:
			v.sessionID, sessionAVP = a.Data, a.Raw
		case a.Code == r.keyCode && a.VendorID == r.keyVendor && v.key == nil:
			v.key, keyAVP = a.Data, a.Raw
		}
		if a.Flags&AVPFlagMandatory != 0 && unknown == nil {
			if _, ok := r.known[avpKey(a.VendorID, a.Code)]; !ok {
				unknown = a.Raw
			}
		}
	}
	if err := it.Err(); err != nil {
		v.result = ResultInvalidAVPLength
		v.errMsg = "invalid AVP length"
		var buf [avpVendorHeaderLen]byte
		v.scratchLen = copy(v.scratch[:], failedHeader(buf[:0], err.(*AVPError).Header))
		return
	}
	if unknown != nil {
		v.result = ResultAVPUnsupported
		v.errMsg = "AVP with the M bit not supported"
		v.failedAVP = unknown
		return
	}
	if v.sessionID == nil {
		v.result = ResultMissingAVP
		v.errMsg = "missing Session-Id"
		var buf [avpVendorHeaderLen]byte
		v.scratchLen = copy(v.scratch[:], AppendAVP(buf[:0], AVPSessionID, AVPFlagMandatory, 0, nil))
		return
	}
	if v.key == nil {
		v.key, keyAVP = v.sessionID, sessionAVP
	}
	if len(v.key) > MaxKey {
		v.result = ResultInvalidAVPValue
		v.errMsg = "routing key AVP (Session-Id or the configured key AVP) longer than 1024 bytes"
		v.failedAVP = keyAVP
	}
}

// failedHeader rebuilds the header of an AVP whose length is invalid, zero
// padded to the full header size and with the length set to that size, so the
// Failed-AVP it goes into stays well framed (RFC 6733 §7.1.5 allows sending
// only the offending header).
func failedHeader(dst, hdr []byte) []byte {
	dst = append(dst, hdr...)
	for len(dst) < avpHeaderLen {
		dst = append(dst, 0)
	}
	size := avpHeaderLen
	if dst[4]&AVPFlagVendor != 0 {
		size = avpVendorHeaderLen
	}
	for len(dst) < size {
		dst = append(dst, 0)
	}
	dst = dst[:size]
	putUint24(dst[5:8], uint32(size))
	return dst
}

// appLabel is the metrics label of an Application-Id.
func appLabel(app uint32) string {
	switch app {
	case AppCommon:
		return "base"
	case AppCreditControl:
		return "credit_control"
	case AppTest:
		return "test_app"
	}
	return "other"
}

package diameter

import (
	"errors"
	"fmt"
)

// Identity is the Origin-Host and Origin-Realm a node puts in what it sends.
type Identity struct {
	Host  string
	Realm string
}

// AnswerHeader returns the header of the answer to req: the R and T bits
// cleared, the P bit kept, the Hop-by-Hop and End-to-End identifiers copied
// (RFC 6733 §6.2). The E bit is set for a 3xxx result code.
func AnswerHeader(req Header, resultCode uint32) Header {
	flags := req.Flags & FlagProxiable
	if isProtocolError(resultCode) {
		flags |= FlagError
	}
	return Header{
		Version:     Version,
		Flags:       flags,
		CommandCode: req.CommandCode,
		AppID:       req.AppID,
		HopByHop:    req.HopByHop,
		EndToEnd:    req.EndToEnd,
	}
}

// AppendAnswerStart appends the header and the leading AVPs of an answer to
// req: Session-Id (when sessionID is not nil, first as RFC 6733 §8.8 requires),
// Result-Code, Origin-Host and Origin-Realm. The caller appends the rest and
// calls SetLength.
func AppendAnswerStart(dst []byte, req Header, sessionID []byte, resultCode uint32, id Identity) []byte {
	dst = AppendHeader(dst, AnswerHeader(req, resultCode))
	if sessionID != nil {
		dst = AppendAVP(dst, AVPSessionID, AVPFlagMandatory, 0, sessionID)
	}
	dst = AppendUint32(dst, AVPResultCode, AVPFlagMandatory, 0, resultCode)
	dst = AppendString(dst, AVPOriginHost, AVPFlagMandatory, 0, id.Host)
	return AppendString(dst, AVPOriginRealm, AVPFlagMandatory, 0, id.Realm)
}

// AppendErrorAnswer appends a whole error answer to req. errMsg becomes an
// Error-Message AVP and failed, when not nil, the content of a Failed-AVP
// (one or more encoded AVPs, RFC 6733 §7.5).
func AppendErrorAnswer(dst []byte, req Header, sessionID []byte, resultCode uint32, id Identity, errMsg string, failed []byte) []byte {
	start := len(dst)
	dst = AppendAnswerStart(dst, req, sessionID, resultCode, id)
	if errMsg != "" {
		dst = AppendString(dst, AVPErrorMessage, 0, 0, errMsg)
	}
	if failed != nil {
		var g int
		dst, g = BeginGroup(dst, AVPFailedAVP, AVPFlagMandatory, 0)
		dst = append(dst, failed...)
		dst = EndGroup(dst, g)
	}
	SetLength(dst[start:])
	return dst
}

// ErrBadAnswer reports an answer from a worker that cannot be passed to a peer.
var ErrBadAnswer = errors.New("diameter: invalid answer")

// RewriteAnswer appends to dst the answer a peer gets for req, built from the
// worker's answer: the Hop-by-Hop and End-to-End identifiers of req
// (RFC 6733 §6.2), Session-Id moved first (RFC 6733 §8.8), and Origin-Host and
// Origin-Realm set to id. It also returns the Result-Code, or the
// Experimental-Result-Code, or 0 when the answer has neither.
func RewriteAnswer(dst, answer []byte, req Header, id Identity) ([]byte, uint32, error) {
	h, err := ReadHeader(answer)
	if err != nil {
		return dst, 0, fmt.Errorf("%w: %w", ErrBadAnswer, err)
	}
	switch {
	case int(h.Length) != len(answer):
		return dst, 0, fmt.Errorf("%w: length %d in a %d-byte buffer", ErrBadAnswer, h.Length, len(answer))
	case h.IsRequest():
		return dst, 0, fmt.Errorf("%w: R bit set", ErrBadAnswer)
	case h.CommandCode != req.CommandCode || h.AppID != req.AppID:
		return dst, 0, fmt.Errorf("%w: command %d app %d does not match request command %d app %d",
			ErrBadAnswer, h.CommandCode, h.AppID, req.CommandCode, req.AppID)
	}
	body := answer[HeaderLen:]
	session, result, err := scanAnswer(body)
	if err != nil {
		return dst, 0, fmt.Errorf("%w: %w", ErrBadAnswer, err)
	}

	start := len(dst)
	h.HopByHop, h.EndToEnd = req.HopByHop, req.EndToEnd
	dst = AppendHeader(dst, h)
	if session != nil {
		dst = append(dst, session...)
	}
	it := NewAVPIter(body)
	var a AVP
	var host, realm bool
	for it.Next(&a) {
		switch {
		case a.VendorID != 0:
			dst = append(dst, a.Raw...)
		case a.Code == AVPSessionID:
		case a.Code == AVPOriginHost && !host:
			host = true
			dst = AppendString(dst, AVPOriginHost, AVPFlagMandatory, 0, id.Host)
		case a.Code == AVPOriginRealm && !realm:
			realm = true
			dst = AppendString(dst, AVPOriginRealm, AVPFlagMandatory, 0, id.Realm)
		case a.Code == AVPOriginHost || a.Code == AVPOriginRealm:
			// A duplicate would name the worker; drop it.
		default:
			dst = append(dst, a.Raw...)
		}
	}
	if !host {
		dst = AppendString(dst, AVPOriginHost, AVPFlagMandatory, 0, id.Host)
	}
	if !realm {
		dst = AppendString(dst, AVPOriginRealm, AVPFlagMandatory, 0, id.Realm)
	}
	SetLength(dst[start:])
	return dst, result, nil
}

// scanAnswer validates the AVP framing of an answer body and returns the raw
// Session-Id AVP and the result code.
func scanAnswer(body []byte) (session []byte, result uint32, err error) {
	it := NewAVPIter(body)
	var a AVP
	for it.Next(&a) {
		if a.VendorID != 0 {
			continue
		}
		switch a.Code {
		case AVPSessionID:
			if session == nil {
				session = a.Raw
			}
		case AVPResultCode:
			result, _ = Uint32(a.Data)
		case AVPExperimentalResult:
			if result == 0 {
				result = experimentalResultCode(a.Data)
			}
		}
	}
	return session, result, it.Err()
}

// experimentalResultCode returns the Experimental-Result-Code (298) inside an
// Experimental-Result group, or 0.
func experimentalResultCode(group []byte) uint32 {
	const avpExperimentalResultCode = 298
	it := NewAVPIter(group)
	var a AVP
	for it.Next(&a) {
		if a.Code == avpExperimentalResultCode && a.VendorID == 0 {
			v, _ := Uint32(a.Data)
			return v
		}
	}
	return 0
}

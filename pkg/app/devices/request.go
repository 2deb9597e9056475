package devices

import (
	"fmt"
	"sync"
	"unicode/utf8"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// maxOptions bounds the options of one request. A request with more gets
// 4.00 Bad Request, because the resources here need only a handful.
const maxOptions = 32

// maxPathSegments is one more than the longest path served, so that a
// longer path is recognised and gets 4.04 Not Found.
const maxPathSegments = 4

// request is a decoded CoAP request. Its slices point into the encoded
// message, which is valid only while Serve runs, so nothing built from a
// request may keep them past Serve without copying.
type request struct {
	msg message.Message
	// options backs msg.Options so that decoding does not allocate.
	options [maxOptions]message.Option
	path    [maxPathSegments][]byte
	// segments is the number of Uri-Path options; it may exceed len(path).
	segments int
}

// decodeRequest parses data as a CoAP request in the UDP encoding
// (RFC 7252 §3). It returns the request even on error when at least the token
// was read, so the error response can carry it.
//
// The request comes from a pool; call release when done with it.
func decodeRequest(data []byte) (*request, error) {
	r := requestPool.Get().(*request)
	r.msg.Options = r.options[:0]
	if _, err := coder.DefaultCoder.Decode(data, &r.msg); err != nil {
		r.msg.Token = rawToken(data)
		return r, fmt.Errorf("invalid CoAP message of %d bytes: %w", len(data), err)
	}
	if r.msg.Code == codes.Empty || r.msg.Code >= 32 {
		return r, fmt.Errorf("code %v is not a request method", r.msg.Code)
	}
	for _, opt := range r.msg.Options {
		if opt.ID != message.URIPath {
			continue
		}
		if r.segments < len(r.path) {
			r.path[r.segments] = opt.Value
		}
		r.segments++
	}
	return r, nil
}

// requestPool recycles requests, which are about 1 KiB because of their
// option array.
var requestPool = sync.Pool{New: func() any { return new(request) }}

// release returns r to the pool, dropping its references to the message.
func (r *request) release() {
	clear(r.options[:])
	r.msg = message.Message{}
	r.path = [maxPathSegments][]byte{}
	r.segments = 0
	requestPool.Put(r)
}

// rawToken returns the token of a message that failed to decode, or nil if
// even the 4-byte header and token are incomplete. The header is
// Ver(2 bits) | T(2) | TKL(4) | Code(8) | Message ID(16), then TKL bytes of
// token (RFC 7252 §3).
func rawToken(data []byte) []byte {
	if len(data) < 4 {
		return nil
	}
	tkl := int(data[0] & 0x0f)
	if tkl > message.MaxTokenSize || len(data) < 4+tkl {
		return nil
	}
	return data[4 : 4+tkl]
}

// pathIs reports whether the Uri-Path is exactly want, where an empty string
// in want matches any one non-empty segment.
func (r *request) pathIs(want ...string) bool {
	if r.segments != len(want) {
		return false
	}
	for i, w := range want {
		seg := r.path[i]
		if w == "" && len(seg) == 0 || w != "" && string(seg) != w {
			return false
		}
	}
	return true
}

// deviceID returns the {id} segment of a /d/{id}/... path, which must be
// valid UTF-8 because it is reported in the JSON state.
func (r *request) deviceID() ([]byte, error) {
	id := r.path[1]
	if !utf8.Valid(id) {
		return nil, fmt.Errorf("device id %q is not valid UTF-8", id)
	}
	return id, nil
}

// criticalOption returns the first critical option (odd number, RFC 7252
// §5.4.1) that this application does not process, or 0. Block1 and Block2
// are accepted because the gateway has already reassembled the body, and
// Uri-Host, Uri-Port and Uri-Query because they do not select a resource here.
func (r *request) criticalOption(conditional bool) message.OptionID {
	for _, opt := range r.msg.Options {
		if opt.ID%2 == 0 {
			continue
		}
		switch opt.ID {
		case message.URIHost, message.URIPort, message.URIPath, message.URIQuery,
			message.Accept, message.Block1, message.Block2:
			continue
		case message.IfMatch, message.IfNoneMatch:
			if conditional {
				continue
			}
		}
		return opt.ID
	}
	return 0
}

// accepts reports whether the request's Accept option, if any, allows mt.
func (r *request) accepts(mt message.MediaType) bool {
	accept, err := r.msg.Options.Accept()
	return err != nil || accept == mt
}

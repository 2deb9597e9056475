package devices

import (
	"fmt"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// maxPayload is the largest request body accepted, in bytes. A larger one
// gets 4.13 with Size1 set to this value (RFC 7252 §5.9.2.9).
const maxPayload = 64 << 10

// response is a CoAP response waiting to be encoded.
type response struct {
	code    codes.Code
	token   []byte
	payload []byte
	// format is the Content-Format; it is set only when hasFormat is true.
	format    message.MediaType
	hasFormat bool
	// observe is the Observe sequence number; it is set only when hasObserve
	// is true.
	observe    uint32
	hasObserve bool
	// size1 is the maximum accepted body size; it is sent when non-zero.
	size1 uint32
}

// reply returns an empty response with the request's token.
func (r *request) reply(code codes.Code) *response {
	return &response{code: code, token: r.msg.Token}
}

// diagnostic returns an error response whose payload is a diagnostic message
// for a human reader, which RFC 7252 §5.5.2 sends without a Content-Format.
func (r *request) diagnostic(code codes.Code, text string) *response {
	return &response{code: code, token: r.msg.Token, payload: []byte(text)}
}

// content returns a 2.05 Content response carrying payload of format mt.
func (r *request) content(mt message.MediaType, payload []byte) *response {
	return &response{
		code:      codes.Content,
		token:     r.msg.Token,
		payload:   payload,
		format:    mt,
		hasFormat: true,
	}
}

// encode returns the response in the UDP encoding (RFC 7252 §3). The message
// type and Message ID are placeholders that the gateway replaces.
func (p *response) encode() ([]byte, error) {
	var optBuf [16]byte
	opts := make(message.Options, 0, 3)
	used := 0
	var err error
	if p.hasObserve {
		opts, used, err = opts.SetObserve(optBuf[:], p.observe&maxObserve)
	}
	if err == nil && p.hasFormat {
		var n int
		opts, n, err = opts.SetContentFormat(optBuf[used:], p.format)
		used += n
	}
	if err == nil && p.size1 != 0 {
		opts, _, err = opts.SetUint32(optBuf[used:], message.Size1, p.size1)
	}
	if err != nil {
		return nil, fmt.Errorf("devices: encode %v response options: %w", p.code, err)
	}

	m := message.Message{
		Code:      p.code,
		Token:     p.token,
		Options:   opts,
		Payload:   p.payload,
		Type:      message.Acknowledgement,
		MessageID: 0,
	}
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		return nil, fmt.Errorf("devices: size %v response: %w", p.code, err)
	}
	buf := make([]byte, size)
	if _, err := coder.DefaultCoder.Encode(m, buf); err != nil {
		return nil, fmt.Errorf("devices: encode %v response of %d bytes: %w", p.code, size, err)
	}
	return buf, nil
}

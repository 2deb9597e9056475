package load

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// CoAPConfig selects the CoAP requests.
type CoAPConfig struct {
	Confirmable bool   // CON requests, else NON
	Method      string // get, post or mix (alternating)
	// GetPath and PostPath are Uri-Path templates; "{id}" becomes the
	// device key, one of Keys spread uniformly at random.
	GetPath  string
	PostPath string
	Keys     int
}

func (c *CoAPConfig) check() error {
	switch c.Method {
	case "get", "post", "mix":
	default:
		return fmt.Errorf("invalid -coap-method %q: want get, post or mix", c.Method)
	}
	if c.Keys < 1 || c.Keys > 1_000_000 {
		return fmt.Errorf("invalid -keys %d: want 1 to 1000000", c.Keys)
	}
	for _, p := range []string{c.GetPath, c.PostPath} {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("invalid CoAP path %q: want an absolute path such as /d/{id}/state", p)
		}
	}
	return nil
}

// CoAP header layout (RFC 7252 §3): byte 0 is Ver(2) T(2) TKL(4), byte 1 the
// Code, bytes 2-3 the Message ID, then TKL bytes of token.
const (
	coapHeaderLen = 4
	coapTokenLen  = 8 // slot index (4 bytes) and generation (4 bytes)
	coapTypeCON   = 0
	coapTypeNON   = 1
	coapTypeACK   = 2
	coapTypeRST   = 3
)

// coapProto copies pre-encoded requests and patches Message ID and token.
// Templates are encoded once with go-coap's UDP coder.
type coapProto struct {
	t      *coapTemplates
	useGet bool
	// midSlot maps a Message ID back to its slot, because an empty ACK or
	// RST carries no token (RFC 7252 §4.2). -1 marks no slot.
	midSlot [1 << 16]int32
	ack     []byte
}

// coapTemplates are the encoded requests, one GET and one POST per key,
// shared read-only by all flows.
type coapTemplates struct {
	get, post [][]byte
	mix       bool
	startGet  bool
	con       bool
}

func newCoAPTemplates(c Config) (*coapTemplates, error) {
	p := &coapTemplates{
		mix:      c.CoAP.Method == "mix",
		startGet: c.CoAP.Method != "post",
		con:      c.CoAP.Confirmable,
	}
	typ := message.NonConfirmable
	if c.CoAP.Confirmable {
		typ = message.Confirmable
	}
	payload := []byte(`{"t":21.5,"pad":"` + strings.Repeat("x", max(0, c.Payload-20)) + `"}`)
	for k := range c.CoAP.Keys {
		id := strconv.Itoa(k)
		g, err := encodeCoAP(typ, codes.GET, strings.ReplaceAll(c.CoAP.GetPath, "{id}", id), nil)
		if err != nil {
			return nil, err
		}
		b, err := encodeCoAP(typ, codes.POST, strings.ReplaceAll(c.CoAP.PostPath, "{id}", id), payload)
		if err != nil {
			return nil, err
		}
		p.get = append(p.get, g)
		p.post = append(p.post, b)
	}
	return p, nil
}

func (t *coapTemplates) newProto() *coapProto {
	p := &coapProto{t: t, useGet: t.startGet, ack: make([]byte, coapHeaderLen)}
	for i := range p.midSlot {
		p.midSlot[i] = -1
	}
	return p
}

// encodeCoAP encodes one request with a zero token of coapTokenLen bytes.
func encodeCoAP(typ message.Type, code codes.Code, path string, payload []byte) ([]byte, error) {
	m := message.Message{
		Token:     make(message.Token, coapTokenLen),
		Code:      code,
		Type:      typ,
		MessageID: 0,
		Payload:   payload,
	}
	buf := make([]byte, 256)
	opts, _, err := message.Options{}.SetPath(buf, path)
	if err != nil {
		return nil, fmt.Errorf("encode CoAP path %q: %w", path, err)
	}
	if payload != nil {
		opts, _, err = opts.SetContentFormat(buf[len(path)+1:], message.AppJSON)
		if err != nil {
			return nil, fmt.Errorf("encode CoAP Content-Format: %w", err)
		}
	}
	m.Options = opts
	out := make([]byte, 1500)
	n, err := coder.DefaultCoder.Encode(m, out)
	if err != nil {
		return nil, fmt.Errorf("encode CoAP %v %s: %w", code, path, err)
	}
	return out[:n], nil
}

func (p *coapProto) retransmits() bool { return p.t.con }

func (p *coapProto) fill(f *flow, i int, s *slot) {
	tmpl := p.t.get
	if !p.useGet {
		tmpl = p.t.post
	}
	if p.t.mix {
		p.useGet = !p.useGet
	}
	src := tmpl[f.rng.IntN(len(tmpl))]
	s.buf = append(s.buf[:0], src...)
	if p.midSlot[s.mid] == int32(i) {
		p.midSlot[s.mid] = -1
	}
	// NOTE: one socket's Message IDs wrap after 65536 requests, far sooner
	// than EXCHANGE_LIFETIME (247 s, RFC 7252 §4.8.2). A server that
	// deduplicates answers from its cache with a stale token, which is
	// counted as "stale" and never as completed.
	f.mid++
	s.mid = f.mid
	p.midSlot[s.mid] = int32(i)
	binary.BigEndian.PutUint16(s.buf[2:], s.mid)
	binary.BigEndian.PutUint32(s.buf[4:], uint32(i))
	binary.BigEndian.PutUint32(s.buf[8:], s.gen)
}

// onResponse matches one datagram from the server, which arrived at. A
// piggybacked or separate response is matched by token; an empty ACK or RST
// by Message ID. A CON response gets an empty ACK (RFC 7252 §5.2.2).
func (p *coapProto) onResponse(f *flow, b []byte, at arrival) {
	if len(b) < coapHeaderLen || b[0]>>6 != 1 {
		f.count("malformed")
		return
	}
	typ, tkl, code := b[0]>>4&3, int(b[0]&0xf), b[1]
	mid := binary.BigEndian.Uint16(b[2:])
	if code == 0 || typ == coapTypeRST {
		i := p.midSlot[mid]
		if i < 0 || !f.slots[i].busy || f.slots[i].mid != mid {
			f.count("stale")
			return
		}
		if typ == coapTypeRST {
			f.complete(int(i), f.slots[i].gen, "rst", at)
			return
		}
		// Stop retransmitting and wait for the separate response.
		f.slots[i].acked = true
		f.slots[i].deadline = at.read + f.r.lossAfter()
		return
	}
	if typ == coapTypeCON {
		ack := p.ack[:0]
		ack = append(ack, 1<<6|coapTypeACK<<4, 0, byte(mid>>8), byte(mid))
		f.wire.queue(ack)
		p.ack = make([]byte, coapHeaderLen) // the queued one is in use until flush
	}
	if tkl != coapTokenLen || len(b) < coapHeaderLen+coapTokenLen {
		f.count("bad-token")
		return
	}
	slot := binary.BigEndian.Uint32(b[4:])
	gen := binary.BigEndian.Uint32(b[8:])
	f.complete(int(slot), gen, codeString(code), at)
}

// codeString formats a CoAP code as class.detail, as in "2.05".
func codeString(c byte) string {
	return coapCodes[c]
}

var coapCodes = func() (t [256]string) {
	for i := range t {
		t[i] = fmt.Sprintf("%d.%02d", i>>5, i&0x1f)
	}
	return t
}()

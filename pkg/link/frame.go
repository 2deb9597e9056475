package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Frame layout, version 1. All integers are big-endian.
//
//	offset size field
//	0      1    version          = 1 (a frame with another version is a protocol error: close the connection)
//	1      1    type             1 request, 2 response, 3 notify (worker->gateway, unsolicited, e.g. a CoAP Observe notification), 4 cancel (gateway->worker: end an observation), 5 ping, 6 pong
//	2      1    proto            1 CoAP, 2 Diameter
//	3      1    flags            bit 0: observe (request registers an observation whose id is the correlation id); other bits reserved, must be 0
//	4      4    body length      bytes of body after the key; max MaxBody (1 MiB); larger = protocol error, close
//	8      8    correlation id   chosen by the sender of a request; echoed in its response; for notify/cancel: the observation id
//	16     4    shard            the ring shard of the key
//	20     2    key length       max 1024
//	22     2    status           response: 0 ok, 1 no handler for proto, 2 not owner of shard, 3 overloaded, 4 handler error; 0 otherwise
//	24     n    key
//	24+n   m    body (an encoded protocol message: CoAP message bytes, or a Diameter message)
//
// Ping and pong frames carry proto 0, no key and no body.
const (
	Version   = 1       // byte 0
	HeaderLen = 24      // bytes before the key
	MaxBody   = 1 << 20 // bytes 4-7 may not exceed this
	MaxKey    = 1024    // bytes 20-21 may not exceed this

	// MaxFrame is the largest frame on the wire.
	MaxFrame = HeaderLen + MaxKey + MaxBody
)

// FlagObserve in byte 3 marks a request that registers an observation whose
// id is the request's correlation id.
const FlagObserve uint8 = 1 << 0

// Errors returned by ParseFrame and AppendFrame. Each names the field that is
// invalid, and a connection that receives such a frame must be closed.
var (
	ErrBadVersion  = errors.New("link: unsupported frame version")
	ErrBadType     = errors.New("link: unknown frame type")
	ErrBadProto    = errors.New("link: unknown frame proto")
	ErrBadFlags    = errors.New("link: reserved frame flags set")
	ErrBadStatus   = errors.New("link: invalid frame status")
	ErrBodyTooLong = errors.New("link: frame body longer than MaxBody")
	ErrKeyTooLong  = errors.New("link: frame key longer than MaxKey")
)

// Type is byte 1 of a frame.
type Type uint8

// Frame types.
const (
	TypeRequest  Type = 1 // gateway -> worker, answered by one response
	TypeResponse Type = 2 // worker -> gateway, echoes the request's correlation id
	TypeNotify   Type = 3 // worker -> gateway, unsolicited, Corr is the observation id
	TypeCancel   Type = 4 // gateway -> worker, ends the observation whose id is Corr
	TypePing     Type = 5 // either way, answered by a pong with the same Corr
	TypePong     Type = 6
)

func (t Type) String() string {
	switch t {
	case TypeRequest:
		return "request"
	case TypeResponse:
		return "response"
	case TypeNotify:
		return "notify"
	case TypeCancel:
		return "cancel"
	case TypePing:
		return "ping"
	case TypePong:
		return "pong"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Proto is byte 2 of a frame: the protocol of the message in the body.
type Proto uint8

// Protocols carried in a frame body. ProtoNone is only for ping and pong.
const (
	ProtoNone     Proto = 0
	ProtoCoAP     Proto = 1 // body is a CoAP message (RFC 7252 §3)
	ProtoDiameter Proto = 2 // body is a Diameter message (RFC 6733 §3)
)

func (p Proto) String() string {
	switch p {
	case ProtoNone:
		return "none"
	case ProtoCoAP:
		return "coap"
	case ProtoDiameter:
		return "diameter"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// Status is bytes 22-23 of a response frame. It is 0 in every other type.
type Status uint16

// Response statuses.
const (
	StatusOK           Status = 0
	StatusNoHandler    Status = 1 // the worker runs no handler for the frame's proto
	StatusNotOwner     Status = 2 // the worker does not own the frame's shard
	StatusOverloaded   Status = 3 // the worker's request queue is full
	StatusHandlerError Status = 4 // the handler failed without a protocol answer
	maxStatus                 = StatusHandlerError
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusNoHandler:
		return "no handler"
	case StatusNotOwner:
		return "not owner"
	case StatusOverloaded:
		return "overloaded"
	case StatusHandlerError:
		return "handler error"
	}
	return fmt.Sprintf("status(%d)", uint16(s))
}

// Frame is one decoded link frame. Key and Body alias the buffer the frame was
// parsed from, so the code that hands a Frame over states how long they stay valid.
type Frame struct {
	Type   Type
	Proto  Proto
	Flags  uint8
	Corr   uint64 // correlation id, or the observation id in notify and cancel
	Shard  uint32
	Status Status
	Key    []byte
	Body   []byte
}

// Observe reports whether the frame has FlagObserve set.
func (f *Frame) Observe() bool { return f.Flags&FlagObserve != 0 }

// Len returns the encoded size of f in bytes.
func (f *Frame) Len() int { return HeaderLen + len(f.Key) + len(f.Body) }

// AppendFrame appends the encoding of f to dst. It does not allocate when dst
// has room for f.Len() more bytes.
func AppendFrame(dst []byte, f *Frame) ([]byte, error) {
	if err := f.validate(); err != nil {
		return dst, err
	}

	dst = slices.Grow(dst, f.Len())
	dst = append(dst, Version, byte(f.Type), byte(f.Proto), f.Flags)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(f.Body)))
	dst = binary.BigEndian.AppendUint64(dst, f.Corr)
	dst = binary.BigEndian.AppendUint32(dst, f.Shard)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(f.Key)))
	dst = binary.BigEndian.AppendUint16(dst, uint16(f.Status))
	dst = append(dst, f.Key...)
	dst = append(dst, f.Body...)
	return dst, nil
}

func (f *Frame) validate() error {
	if len(f.Body) > MaxBody {
		return fmt.Errorf("%w: %d bytes, max %d", ErrBodyTooLong, len(f.Body), MaxBody)
	}
	if len(f.Key) > MaxKey {
		return fmt.Errorf("%w: %d bytes, max %d", ErrKeyTooLong, len(f.Key), MaxKey)
	}
	return checkFields(f.Type, f.Proto, f.Flags, f.Status)
}

// checkFields validates the fixed-size fields of a header.
func checkFields(t Type, p Proto, flags uint8, s Status) error {
	if t < TypeRequest || t > TypePong {
		return fmt.Errorf("%w: %d", ErrBadType, uint8(t))
	}
	if p > ProtoDiameter {
		return fmt.Errorf("%w: %d", ErrBadProto, uint8(p))
	}
	if flags&^FlagObserve != 0 {
		return fmt.Errorf("%w: %#02x", ErrBadFlags, flags)
	}
	if s > maxStatus || (s != StatusOK && t != TypeResponse) {
		return fmt.Errorf("%w: %d in a %s frame", ErrBadStatus, uint16(s), t)
	}
	return nil
}

// ParseFrame decodes the frame at the start of b and returns its encoded
// size n. When b holds only part of a frame, ParseFrame returns n == 0 and a
// nil error, so the caller waits for more bytes. The header is checked as
// soon as it is complete, so an oversized length is rejected before its bytes
// arrive. Key and Body alias b.
func ParseFrame(b []byte) (f Frame, n int, err error) {
	if len(b) == 0 {
		return f, 0, nil
	}
	if b[0] != Version {
		return f, 0, fmt.Errorf("%w: %d, want %d", ErrBadVersion, b[0], Version)
	}
	if len(b) < HeaderLen {
		return f, 0, nil
	}

	f.Type = Type(b[1])
	f.Proto = Proto(b[2])
	f.Flags = b[3]
	bodyLen := binary.BigEndian.Uint32(b[4:8])
	f.Corr = binary.BigEndian.Uint64(b[8:16])
	f.Shard = binary.BigEndian.Uint32(b[16:20])
	keyLen := binary.BigEndian.Uint16(b[20:22])
	f.Status = Status(binary.BigEndian.Uint16(b[22:24]))

	if bodyLen > MaxBody {
		return Frame{}, 0, fmt.Errorf("%w: %d bytes, max %d", ErrBodyTooLong, bodyLen, MaxBody)
	}
	if keyLen > MaxKey {
		return Frame{}, 0, fmt.Errorf("%w: %d bytes, max %d", ErrKeyTooLong, keyLen, MaxKey)
	}
	if err := checkFields(f.Type, f.Proto, f.Flags, f.Status); err != nil {
		return Frame{}, 0, err
	}

	n = HeaderLen + int(keyLen) + int(bodyLen)
	if len(b) < n {
		return Frame{}, 0, nil
	}
	keyEnd := HeaderLen + int(keyLen)
	f.Key = b[HeaderLen:keyEnd:keyEnd]
	f.Body = b[keyEnd:n:n]
	return f, n, nil
}

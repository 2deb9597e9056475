package gateway

import (
	"errors"
	"fmt"
	"sync"

	"github.com/shardgate/shardgate/pkg/link"
	"github.com/shardgate/shardgate/pkg/protocols/coap"
	"github.com/shardgate/shardgate/pkg/protocols/diameter"
	"github.com/shardgate/shardgate/pkg/ring"
)

// observeBit marks correlation ids chosen by the CoAP endpoint for
// observations, so they never collide with the link client's own request
// counter.
const observeBit = 1 << 63

// forwarder routes a request to the owner of its key's shard over the link.
// It is safe for concurrent use.
type forwarder struct {
	ring  *ring.Ring
	link  *link.Client
	proto link.Proto
}

var (
	_ coap.QueueForwarder     = (*forwarder)(nil)
	_ diameter.QueueForwarder = diameterForwarder{}
)

// The Diameter server rejects keys longer than the link carries; this fails
// to compile if the two limits ever differ.
const _ = uint(diameter.MaxKey-link.MaxKey) + uint(link.MaxKey-diameter.MaxKey)

// Forward implements coap.Forwarder.
func (f *forwarder) Forward(key, msg []byte, observe uint64, r coap.Responder) (string, error) {
	return f.forward(key, msg, observe, r, false)
}

// QueueForward implements coap.QueueForwarder: the frame waits for Flush.
func (f *forwarder) QueueForward(key, msg []byte, observe uint64, r coap.Responder) (string, error) {
	return f.forward(key, msg, observe, r, true)
}

// Flush implements coap.QueueForwarder.
func (f *forwarder) Flush() { f.link.Flush() }

func (f *forwarder) forward(key, msg []byte, observe uint64, r coap.Responder, queued bool) (string, error) {
	if len(key) > link.MaxKey {
		return "", fmt.Errorf("%w: %d bytes, the maximum is %d", coap.ErrBadKey, len(key), link.MaxKey)
	}
	shard, owner, ok := f.ring.Lookup(key)
	if !ok {
		return "", coap.ErrNoOwner
	}
	fr := link.Frame{Proto: f.proto, Shard: shard, Key: key, Body: msg}
	if observe != 0 {
		fr.Flags = link.FlagObserve
		fr.Corr = observe | observeBit
	}
	rcv := receivers.Get().(*coapReceiver)
	rcv.r = r
	var err error
	if queued {
		err = f.link.QueueTo(owner.Addr, &fr, rcv)
	} else {
		err = f.link.SendTo(owner.Addr, &fr, rcv)
	}
	if err != nil {
		rcv.release()
		return "", coapError(err)
	}
	return owner.Addr, nil
}

// coapReceiver passes one link response to the CoAP endpoint. Receivers
// are pooled, so forwarding a request allocates no closure.
type coapReceiver struct{ r coap.Responder }

var receivers = sync.Pool{New: func() any { return new(coapReceiver) }}

func (c *coapReceiver) release() {
	c.r = nil
	receivers.Put(c)
}

// Receive implements link.Receiver. The link calls it once per request.
func (c *coapReceiver) Receive(resp *link.Frame, err error) {
	r := c.r
	c.release()
	if err == nil {
		err = resp.Status.Err()
	}
	if err != nil {
		r.Respond(nil, coapError(err))
		return
	}
	r.Respond(resp.Body, nil)
}

// CancelObserve implements coap.Forwarder.
func (f *forwarder) CancelObserve(worker string, key []byte, id uint64) {
	if worker == "" {
		return
	}
	fr := link.Frame{Type: link.TypeCancel, Proto: f.proto, Corr: id | observeBit, Key: key}
	// A worker that is gone has dropped the observation already.
	_ = f.link.SendCancel(worker, &fr)
}

// coapError maps a link failure onto the errors the CoAP endpoint answers.
func coapError(err error) error {
	switch {
	case errors.Is(err, link.ErrOverloaded):
		return fmt.Errorf("%w: %w", coap.ErrOverloaded, err)
	case errors.Is(err, link.ErrTimeout):
		return fmt.Errorf("%w: %w", coap.ErrTimeout, err)
	}
	return err
}

// diameterForwarder adapts the forwarder to the Diameter server.
type diameterForwarder struct{ f *forwarder }

// Forward implements diameter.Forwarder.
func (d diameterForwarder) Forward(key, msg []byte, done func(answer []byte, err error)) error {
	return d.forward(key, msg, done, false)
}

// QueueForward implements diameter.QueueForwarder: the frame waits for Flush.
func (d diameterForwarder) QueueForward(key, msg []byte, done func(answer []byte, err error)) error {
	return d.forward(key, msg, done, true)
}

// Flush implements diameter.QueueForwarder.
func (d diameterForwarder) Flush() { d.f.link.Flush() }

func (d diameterForwarder) forward(key, msg []byte, done func(answer []byte, err error), queued bool) error {
	shard, owner, ok := d.f.ring.Lookup(key)
	if !ok {
		return errors.New("no active worker owns the session")
	}
	fr := link.Frame{Proto: link.ProtoDiameter, Shard: shard, Key: key, Body: msg}
	cb := link.Callback(func(resp *link.Frame, err error) {
		if err == nil {
			err = resp.Status.Err()
		}
		if err != nil {
			done(nil, diameterError(err))
			return
		}
		done(resp.Body, nil)
	})
	var err error
	if queued {
		err = d.f.link.QueueTo(owner.Addr, &fr, cb)
	} else {
		err = d.f.link.SendTo(owner.Addr, &fr, cb)
	}
	return diameterError(err)
}

func diameterError(err error) error {
	if err != nil && errors.Is(err, link.ErrOverloaded) {
		return fmt.Errorf("%w: %w", diameter.ErrOverloaded, err)
	}
	return err
}

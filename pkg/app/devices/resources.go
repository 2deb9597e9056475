package devices

import (
	"bytes"
	"fmt"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/shardgate/shardgate/pkg/app"
)

// coreLinks is the body of GET /.well-known/core in CoRE link format
// (RFC 6690). Each link has a resource type (rt), a content format (ct,
// RFC 7252 §7.2.1) and, for the state, the observable flag (obs, RFC 7641 §6).
//
// NOTE: {id} is a URI template variable (RFC 6570) standing for any device
// id. Braces are not valid in a URI, so a strict RFC 6690 parser may reject
// these links.
const coreLinks = `</d/{id}/telemetry>;rt="shardgate.telemetry";ct=0,` +
	`</d/{id}/state>;rt="shardgate.state";ct=50;obs,` +
	`</d/{id}/config>;rt="shardgate.config";ct=0`

// serve decodes req and routes it to its resource.
func (a *App) serve(req *app.Request) *response {
	r, err := decodeRequest(req.Message)
	defer r.release()
	if err != nil {
		return r.diagnostic(codes.BadRequest, err.Error())
	}
	if r.pathIs(".well-known", "core") {
		return serveCore(r)
	}
	if r.pathIs("d", "", "telemetry") || r.pathIs("d", "", "state") || r.pathIs("d", "", "config") {
		return a.serveDevice(req, r)
	}
	return r.diagnostic(codes.NotFound, "no such resource; see GET /.well-known/core")
}

// serveCore returns the resource list for GET /.well-known/core.
func serveCore(r *request) *response {
	if r.msg.Code != codes.GET {
		return r.diagnostic(codes.MethodNotAllowed, "/.well-known/core allows only GET")
	}
	if id := r.criticalOption(false); id != 0 {
		return badOption(r, id)
	}
	if !r.accepts(message.AppLinkFormat) {
		return r.diagnostic(codes.NotAcceptable, "/.well-known/core is available only as application/link-format (40)")
	}
	return r.content(message.AppLinkFormat, []byte(coreLinks))
}

// serveDevice checks a request for /d/{id}/{resource} and passes it to the
// resource's method.
func (a *App) serveDevice(req *app.Request, r *request) *response {
	resource := r.path[2]
	want := resourceMethod(resource)
	if r.msg.Code != want {
		return r.diagnostic(codes.MethodNotAllowed, fmt.Sprintf("/d/{id}/%s allows only %v", resource, want))
	}
	if id := r.criticalOption(want == codes.PUT); id != 0 {
		return badOption(r, id)
	}
	if n := len(r.msg.Payload); n > maxPayload {
		p := r.diagnostic(codes.RequestEntityTooLarge,
			fmt.Sprintf("payload of %d bytes exceeds the limit of %d bytes", n, maxPayload))
		p.size1 = maxPayload
		return p
	}
	rawID, err := r.deviceID()
	if err != nil {
		return r.diagnostic(codes.BadRequest, err.Error())
	}

	id := string(rawID)
	key := storeKey(req.Key, id)
	switch want {
	case codes.POST:
		return a.postTelemetry(r, key, id)
	case codes.GET:
		return a.getState(r, key, id, req.Observer)
	default:
		return a.putConfig(r, key, id)
	}
}

// resourceMethod returns the one method that a device resource allows.
func resourceMethod(resource []byte) codes.Code {
	switch string(resource) {
	case "telemetry":
		return codes.POST
	case "state":
		return codes.GET
	}
	return codes.PUT
}

// badOption returns the 4.02 response for an unprocessed critical option
// (RFC 7252 §5.4.1).
func badOption(r *request, id message.OptionID) *response {
	return r.diagnostic(codes.BadOption, fmt.Sprintf("critical option %v (%d) is not supported here", id, id))
}

// storeKey returns the store key of device id reached with session key
// sessionKey. That is the session key itself, which is normally the device
// id. A gateway that keys by source address or by a query parameter may
// send several devices under one session key, so then the id is appended to
// keep their states apart.
func storeKey(sessionKey, id string) string {
	if sessionKey == "" || sessionKey == id {
		return id
	}
	return sessionKey + "\x00" + id
}

// postTelemetry stores the payload as the device's last reading, counts it
// and notifies the device's observers.
func (a *App) postTelemetry(r *request, key, id string) *response {
	last := bytes.Clone(r.msg.Payload)
	now := a.now().UnixNano()
	var snap device
	err := a.store.Update(key, func(d *device, _ bool) bool {
		d.last = last
		d.count++
		d.version++
		d.updated = now
		snap = *d
		return true
	})
	if err != nil {
		return a.storeFailure(r, key, err)
	}
	a.notify(key, id, &snap)
	return r.reply(codes.Changed)
}

// getState returns the device state as JSON and, when the request registers
// an observation, keeps obs to notify.
func (a *App) getState(r *request, key, id string, obs app.Observer) *response {
	if !r.accepts(message.AppJSON) {
		return r.diagnostic(codes.NotAcceptable, "device state is available only as application/json (50)")
	}

	// The observer is added before the state is read, so a telemetry
	// request between the two still reaches it.
	var o *observer
	if obs != nil {
		o = &observer{obs: obs, token: bytes.Clone(r.msg.Token)}
		if !a.observers.add(key, o) {
			o = nil
		}
	}
	d, ok := a.store.Get(key)
	if !ok && o == nil {
		return r.diagnostic(codes.NotFound, fmt.Sprintf("device %q has sent nothing yet", id))
	}
	// An observer of a device with no state yet (one that registers before
	// its first telemetry, or one the gateway moved here after a scaling
	// event) gets the empty state and is notified from the next change.
	body, err := stateBody(id, &d, a.worker)
	if err != nil {
		a.dropObserver(key, o)
		a.log.Error().Err(err).Str("key", key).Msg("device state encoding failed")
		return r.diagnostic(codes.InternalServerError, "device state encoding failed")
	}
	p := r.content(message.AppJSON, body)
	if o != nil {
		p.observe, p.hasObserve = d.version, true
	}
	return p
}

func (a *App) dropObserver(key string, o *observer) {
	if o != nil {
		a.observers.remove(key, o)
	}
}

// putConfig stores the body as the device's config, honouring If-Match and
// If-None-Match (RFC 7252 §5.10.8), and notifies the device's observers.
func (a *App) putConfig(r *request, key, id string) *response {
	config := bytes.Clone(r.msg.Payload)
	if config == nil {
		config = []byte{} // non-nil marks the config as set
	}
	now := a.now().UnixNano()
	var created, failed bool
	var snap device
	err := a.store.Update(key, func(d *device, existed bool) bool {
		if !r.preconditionsHold(d.config != nil) {
			failed = true
			return existed // false would delete an existing device
		}
		created = d.config == nil
		d.config = config
		d.version++
		d.updated = now
		snap = *d
		return true
	})
	switch {
	case err != nil:
		return a.storeFailure(r, key, err)
	case failed:
		return r.diagnostic(codes.PreconditionFailed, "If-Match or If-None-Match condition not met")
	}
	a.notify(key, id, &snap)
	if created {
		return r.reply(codes.Created)
	}
	return r.reply(codes.Changed)
}

// preconditionsHold evaluates If-Match and If-None-Match against a resource
// that exists or not. No representation has an ETag here, so only an empty
// If-Match value (any current representation) can match.
func (r *request) preconditionsHold(exists bool) bool {
	hasIfMatch, matched := false, false
	for _, opt := range r.msg.Options {
		switch opt.ID {
		case message.IfNoneMatch:
			if exists {
				return false
			}
		case message.IfMatch:
			hasIfMatch = true
			matched = matched || exists && len(opt.Value) == 0
		}
	}
	return !hasIfMatch || matched
}

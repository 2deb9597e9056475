// Package creditcontrol is a Diameter Credit-Control server (RFC 4006,
// Auth-Application-Id 4) that grants a fixed quota per request and keeps one
// session per Session-Id on the worker that owns it.
package creditcontrol

import (
	dia "github.com/shardgate/shardgate/pkg/protocols/diameter"
)

// CC-Request-Type values (RFC 4006 §8.3).
const (
	RequestInitial   = 1
	RequestUpdate    = 2
	RequestTerminate = 3
	RequestEvent     = 4
)

// Units is an amount of service: octets and seconds (RFC 4006 §8.17-8.21).
type Units struct {
	Octets  uint64 // CC-Total-Octets, or CC-Input-Octets plus CC-Output-Octets
	Seconds uint32 // CC-Time
}

// request is the part of a CCR the server acts on. Byte slices alias the
// message.
type request struct {
	sessionID []byte
	reqType   uint32
	number    uint32
	hasType   bool
	hasNumber bool
	requested Units // Requested-Service-Unit, top level and inside MSCC
	wantTime  bool  // the RSU asked for CC-Time
	used      Units // Used-Service-Unit, summed over every occurrence
}

// parseRequest reads a CCR body. It returns the framing error of the first
// invalid AVP, if any.
func parseRequest(body []byte) (request, error) {
	var r request
	it := dia.NewAVPIter(body)
	var a dia.AVP
	for it.Next(&a) {
		if a.VendorID != 0 {
			continue
		}
		switch a.Code {
		case dia.AVPSessionID:
			if r.sessionID == nil {
				r.sessionID = a.Data
			}
		case dia.AVPCCRequestType:
			r.reqType, r.hasType = dia.Uint32(a.Data)
		case dia.AVPCCRequestNumber:
			r.number, r.hasNumber = dia.Uint32(a.Data)
		case dia.AVPRequestedServiceUnit:
			r.wantTime = addUnits(&r.requested, a.Data) || r.wantTime
		case dia.AVPUsedServiceUnit:
			addUnits(&r.used, a.Data)
		case dia.AVPMultipleServicesCC:
			r.addMSCC(a.Data)
		}
	}
	return r, it.Err()
}

// addMSCC adds the units of a Multiple-Services-Credit-Control group.
// NOTE: the answer grants at the top level, not per MSCC, which RFC 4006
// clients that rely on per-service grants will not accept.
func (r *request) addMSCC(group []byte) {
	it := dia.NewAVPIter(group)
	var a dia.AVP
	for it.Next(&a) {
		switch {
		case a.VendorID != 0:
		case a.Code == dia.AVPRequestedServiceUnit:
			r.wantTime = addUnits(&r.requested, a.Data) || r.wantTime
		case a.Code == dia.AVPUsedServiceUnit:
			addUnits(&r.used, a.Data)
		}
	}
}

// addUnits adds the units in a service-unit group to u and reports whether
// the group carried CC-Time.
// CC-Total-Octets wins over CC-Input-Octets plus CC-Output-Octets when a
// client sends all three.
func addUnits(u *Units, group []byte) (hasTime bool) {
	var total, inOut uint64
	var hasTotal bool
	defer func() {
		if hasTotal {
			u.Octets += total
		} else {
			u.Octets += inOut
		}
	}()
	it := dia.NewAVPIter(group)
	var a dia.AVP
	for it.Next(&a) {
		if a.VendorID != 0 {
			continue
		}
		switch a.Code {
		case dia.AVPCCTotalOctets:
			if v, ok := dia.Uint64(a.Data); ok {
				total, hasTotal = total+v, true
			}
		case dia.AVPCCInputOctets, dia.AVPCCOutputOctets:
			if v, ok := dia.Uint64(a.Data); ok {
				inOut += v
			}
		case dia.AVPCCTime:
			if v, ok := dia.Uint32(a.Data); ok {
				u.Seconds += v
			}
			hasTime = true
		}
	}
	return hasTime
}

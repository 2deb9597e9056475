package devices

import (
	"encoding/json"
	"fmt"
	"time"
)

// device is the stored state of one device. It is kept small because a
// worker holds up to a million idle devices: 72 bytes plus the two bodies.
// The device id is not stored because every request path carries it, and
// observers live apart, in the registry.
//
// The store hands out copies of a device, so the byte slices are never
// changed in place: an update stores fresh copies, and a copy read earlier
// stays valid.
type device struct {
	// last is the payload of the most recent telemetry request.
	last []byte
	// config is the body of the most recent PUT, or nil before the first.
	config []byte
	// updated is the time of the last change, in Unix nanoseconds.
	updated int64
	// count is the number of telemetry requests received.
	count uint64
	// version grows by one on each change. Its low 24 bits are the Observe
	// sequence number (RFC 7641 §3.4, §4.4).
	version uint32
}

// maxObserve is the largest Observe value: the option holds 24 bits
// (RFC 7641 §2).
const maxObserve = 1<<24 - 1

// stateJSON is the JSON form of a device returned by GET /d/{id}/state.
type stateJSON struct {
	Device  string `json:"device"`
	Count   uint64 `json:"count"`
	Last    string `json:"last"`
	Config  string `json:"config"`
	Worker  string `json:"worker"`
	Updated string `json:"updated"`
}

// stateBody returns the JSON body for d. Bytes of the payload or config that
// are not valid UTF-8 are replaced by U+FFFD, as encoding/json does.
func stateBody(id string, d *device, worker string) ([]byte, error) {
	body, err := json.Marshal(stateJSON{
		Device:  id,
		Count:   d.count,
		Last:    string(d.last),
		Config:  string(d.config),
		Worker:  worker,
		Updated: time.Unix(0, d.updated).UTC().Format(time.RFC3339Nano),
	})
	if err != nil {
		return nil, fmt.Errorf("devices: encode state of device %q: %w", id, err)
	}
	return body, nil
}

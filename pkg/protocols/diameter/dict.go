package diameter

import (
	"fmt"
	"sync"

	"github.com/fiorix/go-diameter/v4/diam/dict"
)

// avpKey packs a vendor and an AVP code into one map key.
func avpKey(vendor, code uint32) uint64 { return uint64(vendor)<<32 | uint64(code) }

// knownAVPs is the set of AVPs the gateway understands: every AVP of
// go-diameter's default dictionaries (base, credit control, Gx, NAS, 3GPP)
// and test_app's Test-AVP. A request carrying any other AVP with the M bit
// gets 5001 (RFC 6733 §4.1). It is built once and only read afterwards.
var knownAVPs = sync.OnceValue(func() map[uint64]struct{} {
	set := make(map[uint64]struct{}, 1024)
	for _, app := range dict.Default.Apps() {
		for _, a := range app.AVP {
			set[avpKey(a.VendorID, a.Code)] = struct{}{}
		}
	}
	set[avpKey(VendorTest, AVPTest)] = struct{}{}
	return set
})

// resolveKeyAVP returns the code and vendor of the AVP named name, looked up
// in the base and credit-control dictionaries or as test_app's "Test-AVP".
func resolveKeyAVP(name string) (code, vendor uint32, err error) {
	if name == "" || name == "Session-Id" {
		return AVPSessionID, 0, nil
	}
	if name == "Test-AVP" {
		return AVPTest, VendorTest, nil
	}
	for _, app := range []uint32{AppCommon, AppCreditControl} {
		a, err := dict.Default.FindAVP(app, name)
		if err == nil && a != nil {
			return a.Code, a.VendorID, nil
		}
	}
	// The message names the gateway's flag, which passes it through as is.
	return 0, 0, fmt.Errorf("invalid --diameter-key %q: unknown AVP name; use an AVP from the base or "+
		"credit-control dictionary, for example Session-Id or User-Name", name)
}

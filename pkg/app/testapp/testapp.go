// Package testapp answers the Test-Request of freeDiameter's test_app
// extension (Application-Id 16777215, vendor 999999, Command-Code 16777214),
// so that freeDiameter's client and benchmark modes can drive a cluster.
package testapp

import (
	"context"
	"fmt"

	"github.com/shardgate/shardgate/pkg/app"
	dia "github.com/shardgate/shardgate/pkg/protocols/diameter"
)

// App answers Test-Requests with 2001, echoing Session-Id first and every
// AVP of vendor 999999 (Test-AVP, and Test-Payload-AVP when the client is
// configured to send it), as test_app's own server mode does. It is
// stateless and safe for concurrent use.
type App struct {
	id dia.Identity
}

var _ app.Handler = (*App)(nil)

// New returns an App answering as id.
func New(id dia.Identity) *App { return &App{id: id} }

// NonBlocking marks the App as safe to run on the link's event loop: Serve
// only works in memory.
func (a *App) NonBlocking() {}

// Serve answers one Test-Request.
func (a *App) Serve(_ context.Context, req *app.Request) ([]byte, error) {
	h, err := dia.ReadHeader(req.Message)
	if err != nil {
		return nil, fmt.Errorf("testapp: %w", err)
	}
	body, err := dia.Body(req.Message)
	if err != nil {
		return nil, fmt.Errorf("testapp: %w", err)
	}
	sessionID, _, err := dia.FindAVP(req.Message, dia.AVPSessionID, 0)
	if err != nil {
		return dia.AppendErrorAnswer(nil, h, nil, dia.ResultInvalidAVPLength, a.id, "invalid AVP length", nil), nil
	}
	if sessionID == nil {
		missing := dia.AppendAVP(nil, dia.AVPSessionID, dia.AVPFlagMandatory, 0, nil)
		return dia.AppendErrorAnswer(nil, h, nil, dia.ResultMissingAVP, a.id, "missing Session-Id", missing), nil
	}

	out := dia.AppendAnswerStart(make([]byte, 0, len(req.Message)+64), h, sessionID, dia.ResultSuccess, a.id)
	it := dia.NewAVPIter(body)
	var avp dia.AVP
	for it.Next(&avp) {
		if avp.VendorID == dia.VendorTest {
			out = append(out, avp.Raw...)
		}
	}
	return dia.SetLength(out), nil
}

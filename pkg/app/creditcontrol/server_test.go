package creditcontrol

import (
	"context"
	"testing"

	"github.com/shardgate/shardgate/pkg/app"
	dia "github.com/shardgate/shardgate/pkg/protocols/diameter"
	"github.com/shardgate/shardgate/pkg/session"
)

func ccr(session string, typ, number uint32, rsuTime bool) []byte {
	h := dia.Header{Flags: dia.FlagRequest | dia.FlagProxiable, CommandCode: dia.CmdCreditControl,
		AppID: dia.AppCreditControl, HopByHop: 9, EndToEnd: 9}
	b := dia.AppendHeader(nil, h)
	b = dia.AppendString(b, dia.AVPSessionID, dia.AVPFlagMandatory, 0, session)
	b = dia.AppendUint32(b, dia.AVPCCRequestType, dia.AVPFlagMandatory, 0, typ)
	b = dia.AppendUint32(b, dia.AVPCCRequestNumber, dia.AVPFlagMandatory, 0, number)
	if rsuTime {
		var g int
		b, g = dia.BeginGroup(b, dia.AVPRequestedServiceUnit, dia.AVPFlagMandatory, 0)
		b = dia.AppendUint32(b, dia.AVPCCTime, dia.AVPFlagMandatory, 0, 60)
		b = dia.EndGroup(b, g)
	}
	var g int
	b, g = dia.BeginGroup(b, dia.AVPUsedServiceUnit, dia.AVPFlagMandatory, 0)
	b = dia.AppendUint64(b, dia.AVPCCTotalOctets, dia.AVPFlagMandatory, 0, 100)
	b = dia.EndGroup(b, g)
	return dia.SetLength(b)
}

func serve(t *testing.T, s *Server, msg []byte) (uint32, []byte) {
	t.Helper()
	ans, err := s.Serve(context.Background(), &app.Request{Proto: app.Diameter, Message: msg})
	if err != nil {
		t.Fatal(err)
	}
	rc, _, err := dia.FindAVP(ans, dia.AVPResultCode, 0)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := dia.Uint32(rc)
	return v, ans
}

func newServer(t *testing.T) *Server {
	s, err := New(Options{Identity: dia.Identity{Host: "w", Realm: "r"}, WorkerName: "w1",
		Store: session.New[Session](session.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSessionLifecycleCountsUsage(t *testing.T) {
	s := newServer(t)
	for i, typ := range []uint32{RequestInitial, RequestUpdate} {
		if rc, _ := serve(t, s, ccr("a", typ, uint32(i), false)); rc != dia.ResultSuccess {
			t.Fatalf("type %d: Result-Code %d", typ, rc)
		}
	}
	st, ok := s.Lookup("a")
	if !ok || st.Worker != "w1" || st.Requests != 2 || st.Used.Octets != 200 || st.Granted.Octets != 2<<20 {
		t.Fatalf("session = %+v %v, want worker w1, 2 requests, 200 used, 2 MiB granted", st, ok)
	}
	if rc, _ := serve(t, s, ccr("a", RequestTerminate, 2, false)); rc != dia.ResultSuccess {
		t.Fatalf("terminate: Result-Code %d", rc)
	}
	if _, ok := s.Lookup("a"); ok {
		t.Fatal("session still stored after CCR-Terminate")
	}
}

func TestGrantMatchesRequestedUnit(t *testing.T) {
	s := newServer(t)
	_, ans := serve(t, s, ccr("t", RequestInitial, 0, true))
	gsu, ok, _ := dia.FindAVP(ans, dia.AVPGrantedServiceUnit, 0)
	if !ok {
		t.Fatal("no Granted-Service-Unit")
	}
	it := dia.NewAVPIter(gsu)
	var a dia.AVP
	if !it.Next(&a) || a.Code != dia.AVPCCTime {
		t.Fatalf("Granted-Service-Unit holds AVP %d, want CC-Time", a.Code)
	}
}

func TestUnknownSessionAndEvent(t *testing.T) {
	s := newServer(t)
	if rc, _ := serve(t, s, ccr("x", RequestUpdate, 1, false)); rc != dia.ResultUnknownSessionID {
		t.Fatalf("update of unknown session: %d, want 5002", rc)
	}
	if rc, _ := serve(t, s, ccr("e", RequestEvent, 0, false)); rc != dia.ResultSuccess {
		t.Fatalf("event: %d, want 2001", rc)
	}
	if _, ok := s.Lookup("e"); ok {
		t.Fatal("CCR-Event left a session")
	}
	if rc, _ := serve(t, s, ccr("bad", 9, 0, false)); rc != dia.ResultInvalidAVPValue {
		t.Fatalf("CC-Request-Type 9: %d, want 5004", rc)
	}
}

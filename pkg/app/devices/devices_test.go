package devices

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/shardgate/shardgate/pkg/app"
)

var token = []byte{0xca, 0xfe, 0x01}

func TestResources(t *testing.T) {
	post := func(path string, payload []byte, opts ...message.Option) reqSpec {
		return reqSpec{code: codes.POST, path: path, token: token, payload: payload, opts: opts}
	}
	get := func(path string, opts ...message.Option) reqSpec {
		return reqSpec{code: codes.GET, path: path, token: token, opts: opts}
	}
	put := func(path string, payload []byte, opts ...message.Option) reqSpec {
		return reqSpec{code: codes.PUT, path: path, token: token, payload: payload, opts: opts}
	}
	seen := []reqSpec{post("/d/a/telemetry", []byte("21.5"))}
	configured := []reqSpec{put("/d/a/config", []byte("rate=5"))}
	etag := message.Option{ID: message.IfMatch, Value: []byte{1, 2}}
	ifMatchAny := message.Option{ID: message.IfMatch}
	ifNoneMatch := message.Option{ID: message.IfNoneMatch}

	tests := []struct {
		name   string
		setup  []reqSpec
		req    reqSpec
		want   codes.Code
		format int // expected Content-Format, or -1 for none
	}{
		{"telemetry new device", nil, post("/d/a/telemetry", []byte("21.5")), codes.Changed, -1},
		{"telemetry empty payload", nil, post("/d/a/telemetry", nil), codes.Changed, -1},
		{"telemetry at limit", nil, post("/d/a/telemetry", make([]byte, maxPayload)), codes.Changed, -1},
		{"telemetry over limit", nil, post("/d/a/telemetry", make([]byte, maxPayload+1)), codes.RequestEntityTooLarge, -1},
		{"telemetry wrong method", nil, get("/d/a/telemetry"), codes.MethodNotAllowed, -1},
		{"telemetry with uri-query", nil, post("/d/a/telemetry", nil, message.Option{ID: message.URIQuery, Value: []byte("ep=a")}), codes.Changed, -1},
		{"telemetry unknown elective option", nil, post("/d/a/telemetry", nil, message.Option{ID: 65000, Value: []byte{1}}), codes.Changed, -1},
		{"telemetry unknown critical option", nil, post("/d/a/telemetry", nil, message.Option{ID: 65001, Value: []byte{1}}), codes.BadOption, -1},
		{"telemetry proxy-uri", nil, post("/d/a/telemetry", nil, message.Option{ID: message.ProxyURI, Value: []byte("coap://x/")}), codes.BadOption, -1},
		{"telemetry if-match", seen, post("/d/a/telemetry", nil, ifMatchAny), codes.BadOption, -1},
		{"telemetry invalid utf-8 id", nil, post("/d/\xff/telemetry", nil), codes.BadRequest, -1},
		{"state unknown device", nil, get("/d/a/state"), codes.NotFound, -1},
		{"state after telemetry", seen, get("/d/a/state"), codes.Content, int(message.AppJSON)},
		{"state after config only", configured, get("/d/a/state"), codes.Content, int(message.AppJSON)},
		{"state accept json", seen, get("/d/a/state", uintOpt(message.Accept, uint32(message.AppJSON))), codes.Content, int(message.AppJSON)},
		{"state accept text", seen, get("/d/a/state", uintOpt(message.Accept, uint32(message.TextPlain))), codes.NotAcceptable, -1},
		{"state with block2", seen, get("/d/a/state", uintOpt(message.Block2, 2)), codes.Content, int(message.AppJSON)},
		{"state wrong method", seen, post("/d/a/state", nil), codes.MethodNotAllowed, -1},
		{"config first", nil, put("/d/a/config", []byte("rate=5")), codes.Created, -1},
		{"config first after telemetry", seen, put("/d/a/config", []byte("rate=5")), codes.Created, -1},
		{"config again", configured, put("/d/a/config", []byte("rate=6")), codes.Changed, -1},
		{"config empty body", nil, put("/d/a/config", nil), codes.Created, -1},
		{"config over limit", nil, put("/d/a/config", make([]byte, maxPayload+1)), codes.RequestEntityTooLarge, -1},
		{"config wrong method", nil, reqSpec{code: codes.DELETE, path: "/d/a/config"}, codes.MethodNotAllowed, -1},
		{"config if-none-match new", nil, put("/d/a/config", nil, ifNoneMatch), codes.Created, -1},
		{"config if-none-match existing", configured, put("/d/a/config", nil, ifNoneMatch), codes.PreconditionFailed, -1},
		{"config if-match any new", seen, put("/d/a/config", nil, ifMatchAny), codes.PreconditionFailed, -1},
		{"config if-match any existing", configured, put("/d/a/config", nil, ifMatchAny), codes.Changed, -1},
		{"config if-match etag", configured, put("/d/a/config", nil, etag), codes.PreconditionFailed, -1},
		{"core", nil, get("/.well-known/core"), codes.Content, int(message.AppLinkFormat)},
		{"core accept json", nil, get("/.well-known/core", uintOpt(message.Accept, uint32(message.AppJSON))), codes.NotAcceptable, -1},
		{"core wrong method", nil, post("/.well-known/core", nil), codes.MethodNotAllowed, -1},
		{"unknown path", nil, get("/x"), codes.NotFound, -1},
		{"empty path", nil, get(""), codes.NotFound, -1},
		{"device without resource", nil, get("/d/a"), codes.NotFound, -1},
		{"unknown device resource", nil, get("/d/a/firmware"), codes.NotFound, -1},
		{"path too long", nil, get("/d/a/state/x"), codes.NotFound, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestApp(t, Options{})
			for _, s := range tt.setup {
				do(t, a, "a", s)
			}
			resp := do(t, a, "a", tt.req)
			if resp.Code != tt.want {
				t.Errorf("code = %v (payload %q), want %v", resp.Code, resp.Payload, tt.want)
			}
			if !bytes.Equal(resp.Token, tt.req.token) {
				t.Errorf("token = %x, want %x", resp.Token, tt.req.token)
			}
			format, err := resp.Options.ContentFormat()
			switch {
			case tt.format < 0 && err == nil:
				t.Errorf("Content-Format = %v, want none", format)
			case tt.format >= 0 && int(format) != tt.format:
				t.Errorf("Content-Format = %v (err %v), want %d", format, err, tt.format)
			}
			if resp.Options.HasOption(message.Observe) {
				t.Errorf("response has Observe without a registration")
			}
		})
	}
}

func TestTooLargeSetsSize1(t *testing.T) {
	a := newTestApp(t, Options{})
	resp := do(t, a, "a", reqSpec{code: codes.POST, path: "/d/a/telemetry", payload: make([]byte, maxPayload+1)})
	size1, err := resp.Options.GetUint32(message.Size1)
	if err != nil {
		t.Fatalf("Size1: %v", err)
	}
	if size1 != maxPayload {
		t.Errorf("Size1 = %d, want %d", size1, maxPayload)
	}
}

func TestMalformedRequests(t *testing.T) {
	tests := []struct {
		name      string
		hex       string
		wantToken string
	}{
		{"empty", "", ""},
		{"short header", "4001", ""},
		{"version 2", "80011234", ""},
		{"token length 9", "49011234010203040506070809", ""},
		{"token truncated", "44011234aabb", ""},
		{"option truncated", "42011234aabbb3", "aabb"},
		{"option extend marker 15", "42011234aabbf0", "aabb"},
		{"payload marker without payload", "42011234aabbff", "aabb"},
		{"response code", "62451234aabb", "aabb"},
		{"empty code", "40001234", ""},
		{"too many options", "42011234aabb" + tooManyOptions(), "aabb"},
	}
	a := newTestApp(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := hex.DecodeString(tt.hex)
			if err != nil {
				t.Fatal(err)
			}
			out, err := a.Serve(context.Background(), &app.Request{Proto: app.CoAP, Key: "a", Message: data})
			if err != nil {
				t.Fatalf("serve: %v", err)
			}
			resp := decodeResponse(t, out)
			if resp.Code != codes.BadRequest {
				t.Errorf("code = %v, want %v", resp.Code, codes.BadRequest)
			}
			if got := hex.EncodeToString(resp.Token); got != tt.wantToken {
				t.Errorf("token = %q, want %q", got, tt.wantToken)
			}
			if len(resp.Payload) == 0 {
				t.Errorf("4.00 response has no diagnostic payload")
			}
		})
	}
}

// tooManyOptions returns maxOptions+1 empty Uri-Query options (delta 15,
// then delta 0) in hex.
func tooManyOptions() string {
	return "d002" + strings.Repeat("00", maxOptions)
}

func TestServeRejectsOtherProtocol(t *testing.T) {
	a := newTestApp(t, Options{})
	_, err := a.Serve(context.Background(), &app.Request{Proto: app.Diameter, Key: "a", Message: []byte{1}})
	if err == nil {
		t.Fatal("Serve of a Diameter request returned no error")
	}
}

func TestStateJSON(t *testing.T) {
	clock := newFakeClock()
	a := newTestApp(t, Options{WorkerName: "w7", Clock: clock})
	do(t, a, "dev-1", reqSpec{code: codes.POST, path: "/d/dev-1/telemetry", payload: []byte("first")})
	clock.Advance(1500 * time.Millisecond)
	do(t, a, "dev-1", reqSpec{code: codes.POST, path: "/d/dev-1/telemetry", payload: []byte(`t="22"`)})
	do(t, a, "dev-1", reqSpec{code: codes.PUT, path: "/d/dev-1/config", payload: []byte("rate=5")})

	resp := do(t, a, "dev-1", reqSpec{code: codes.GET, path: "/d/dev-1/state"})
	var got stateJSON
	if err := json.Unmarshal(resp.Payload, &got); err != nil {
		t.Fatalf("state %q is not JSON: %v", resp.Payload, err)
	}
	want := stateJSON{
		Device:  "dev-1",
		Count:   2,
		Last:    `t="22"`,
		Config:  "rate=5",
		Worker:  "w7",
		Updated: "2026-03-01T12:00:01.5Z",
	}
	if got != want {
		t.Errorf("state = %+v, want %+v", got, want)
	}
	if _, err := time.Parse(time.RFC3339, got.Updated); err != nil {
		t.Errorf("updated %q is not RFC 3339: %v", got.Updated, err)
	}
}

func TestLargeStateAfterLargeConfig(t *testing.T) {
	a := newTestApp(t, Options{})
	config := bytes.Repeat([]byte("k=v;"), 512)
	do(t, a, "a", reqSpec{code: codes.PUT, path: "/d/a/config", payload: config})
	resp := do(t, a, "a", reqSpec{code: codes.GET, path: "/d/a/state"})
	// The gateway must split a state of over 1 KiB into Block2 blocks.
	if len(resp.Payload) <= len(config) {
		t.Errorf("state is %d bytes, want over the %d-byte config", len(resp.Payload), len(config))
	}
	if !bytes.Contains(resp.Payload, config) {
		t.Errorf("state does not contain the config")
	}
}

func TestCoreLinkFormat(t *testing.T) {
	a := newTestApp(t, Options{})
	resp := do(t, a, "", reqSpec{code: codes.GET, path: "/.well-known/core"})
	links := strings.Split(string(resp.Payload), ",")
	want := []string{
		`</d/{id}/telemetry>;rt="shardgate.telemetry";ct=0`,
		`</d/{id}/state>;rt="shardgate.state";ct=50;obs`,
		`</d/{id}/config>;rt="shardgate.config";ct=0`,
	}
	if len(links) != len(want) {
		t.Fatalf("links = %q, want %d links", links, len(want))
	}
	for i := range want {
		if links[i] != want[i] {
			t.Errorf("link %d = %q, want %q", i, links[i], want[i])
		}
	}
}

func TestStoreKeySeparatesDevices(t *testing.T) {
	a := newTestApp(t, Options{})
	// A gateway keyed by source address sends two devices under one key.
	do(t, a, "127.0.0.1:5683", reqSpec{code: codes.POST, path: "/d/a/telemetry", payload: []byte("from a")})
	do(t, a, "127.0.0.1:5683", reqSpec{code: codes.POST, path: "/d/b/telemetry", payload: []byte("from b")})

	resp := do(t, a, "127.0.0.1:5683", reqSpec{code: codes.GET, path: "/d/a/state"})
	var got stateJSON
	if err := json.Unmarshal(resp.Payload, &got); err != nil {
		t.Fatalf("state %q: %v", resp.Payload, err)
	}
	if got.Last != "from a" || got.Count != 1 {
		t.Errorf("device a state = %+v, want last %q and count 1", got, "from a")
	}
	if n := a.Sessions(); n != 2 {
		t.Errorf("Sessions() = %d, want 2", n)
	}
}

func TestStoreFullServiceUnavailable(t *testing.T) {
	a := newTestApp(t, Options{MaxSessions: 1})
	do(t, a, "a", reqSpec{code: codes.POST, path: "/d/a/telemetry"})
	resp := do(t, a, "b", reqSpec{code: codes.POST, path: "/d/b/telemetry"})
	if resp.Code != codes.ServiceUnavailable {
		t.Errorf("code = %v, want %v", resp.Code, codes.ServiceUnavailable)
	}
	resp = do(t, a, "a", reqSpec{code: codes.POST, path: "/d/a/telemetry"})
	if resp.Code != codes.Changed {
		t.Errorf("known device code = %v, want %v", resp.Code, codes.Changed)
	}
}

func TestRunExpiresIdleDevices(t *testing.T) {
	clock := newFakeClock()
	a := newTestApp(t, Options{IdleTimeout: time.Minute, Clock: clock})
	do(t, a, "a", reqSpec{code: codes.POST, path: "/d/a/telemetry"})
	if n := a.Sessions(); n != 1 {
		t.Fatalf("Sessions() = %d, want 1", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		a.Run(ctx)
	}()
	clock.Advance(2 * time.Minute)
	waitFor(t, 10*time.Second, "idle device to expire", func() bool { return a.Sessions() == 0 })
	cancel()
	<-stopped

	resp := do(t, a, "a", reqSpec{code: codes.GET, path: "/d/a/state"})
	if resp.Code != codes.NotFound {
		t.Errorf("state of expired device code = %v, want %v", resp.Code, codes.NotFound)
	}
}

// TestResponseGolden compares encoded responses with hand-assembled bytes
// (RFC 7252 §3): 0x6N is version 1, type ACK, token length N; the Message ID
// is zero.
func TestResponseGolden(t *testing.T) {
	tests := []struct {
		name string
		resp response
		hex  string
	}{
		{"2.04 with token", response{code: codes.Changed, token: []byte{1, 2}}, "624400000102"},
		{"4.04 no token", response{code: codes.NotFound}, "60840000"},
		{
			// Observe 5 (option 6: delta 6, length 1), Content-Format 50
			// (option 12: delta 6, length 1), then 0xff and the payload "{}".
			"2.05 observe json",
			response{code: codes.Content, token: []byte{0xaa}, payload: []byte("{}"),
				format: message.AppJSON, hasFormat: true, observe: 5, hasObserve: true},
			"614500" + "00aa" + "6105" + "6132" + "ff7b7d",
		},
		{
			// Size1 is option 60: delta 13 with extension byte 47, then
			// length 3 for 65536.
			"4.13 size1",
			response{code: codes.RequestEntityTooLarge, size1: maxPayload},
			"608d0000" + "d32f" + "010000",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.resp.encode()
			if err != nil {
				t.Fatal(err)
			}
			if h := hex.EncodeToString(got); h != tt.hex {
				t.Errorf("encoded %s, want %s", h, tt.hex)
			}
			m := decodeResponse(t, got)
			if m.Code != tt.resp.code || !bytes.Equal(m.Token, tt.resp.token) || !bytes.Equal(m.Payload, tt.resp.payload) {
				t.Errorf("decoded %v, want code %v token %x payload %q", &m, tt.resp.code, tt.resp.token, tt.resp.payload)
			}
		})
	}
}

package devices

import (
	"bytes"
	"context"
	"encoding/hex"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/shardgate/shardgate/pkg/app"
)

// FuzzServe feeds arbitrary bytes to Serve. Every input must get a CoAP
// response that decodes, carries a response code and, when the request
// header and token are complete, repeats the token.
func FuzzServe(f *testing.F) {
	seeds := []reqSpec{
		{code: codes.POST, path: "/d/a/telemetry", token: token, payload: []byte("21.5")},
		{code: codes.GET, path: "/d/a/state", token: token, opts: []message.Option{observeReg}},
		{code: codes.PUT, path: "/d/a/config", token: token, payload: []byte("rate=5"),
			opts: []message.Option{{ID: message.IfNoneMatch}}},
		{code: codes.GET, path: "/.well-known/core", opts: []message.Option{uintOpt(message.Accept, 40)}},
		{code: codes.GET, path: "/d/a/state", opts: []message.Option{uintOpt(message.Block2, 6)}},
	}
	for _, s := range seeds {
		f.Add(encodeRequest(f, s))
	}
	for _, h := range []string{"", "4001", "42011234aabbb3", "42011234aabbff", "62451234aabb"} {
		data, err := hex.DecodeString(h)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}

	a := newTestApp(f, Options{MaxSessions: 1000})
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := a.Serve(context.Background(), &app.Request{Proto: app.CoAP, Message: data})
		if err != nil {
			t.Fatalf("serve % x: %v", data, err)
		}
		m := message.Message{Options: make(message.Options, 0, 8)}
		if _, err := coder.DefaultCoder.Decode(out, &m); err != nil {
			t.Fatalf("response % x does not decode: %v", out, err)
		}
		if m.Code < codes.Created {
			t.Errorf("response code %v is not a response", m.Code)
		}
		if tok := rawToken(data); tok != nil && !bytes.Equal(m.Token, tok) {
			t.Errorf("response token %x, want %x", m.Token, tok)
		}
	})
}

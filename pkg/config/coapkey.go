package config

import (
	"fmt"
	"strings"
)

// CoAPKeyKind says where a gateway finds a CoAP request's session key.
type CoAPKeyKind int

// Places a CoAP session key can come from.
const (
	// KeyPath takes one Uri-Path segment, at the position of "{id}" in a
	// template whose other segments must match literally.
	KeyPath CoAPKeyKind = iota + 1
	// KeyQuery takes the value of a Uri-Query parameter (NAME=value), such
	// as LwM2M's "ep".
	KeyQuery
	// KeySource takes the request's source address.
	KeySource
)

// CoAPKey is a parsed --coap-key value.
type CoAPKey struct {
	Kind CoAPKeyKind
	// Prefix holds the literal Uri-Path segments before the key segment.
	Prefix []string
	// Query is the Uri-Query parameter name for KeyQuery.
	Query string
}

// ParseCoAPKey parses path:/d/{id}, query:NAME or source.
func ParseCoAPKey(s string) (CoAPKey, error) {
	kind, arg, _ := strings.Cut(s, ":")
	switch kind {
	case "source":
		if arg != "" {
			return CoAPKey{}, fmt.Errorf("invalid --coap-key %q: source takes no argument", s)
		}
		return CoAPKey{Kind: KeySource}, nil
	case "query":
		if arg == "" || strings.ContainsAny(arg, "=&") {
			return CoAPKey{}, fmt.Errorf("invalid --coap-key %q: want query:NAME, for example query:ep", s)
		}
		return CoAPKey{Kind: KeyQuery, Query: arg}, nil
	case "path":
		segs := strings.Split(strings.Trim(arg, "/"), "/")
		if n := len(segs); n == 0 || segs[n-1] != "{id}" {
			return CoAPKey{}, fmt.Errorf("invalid --coap-key %q: want path:/PREFIX/{id}, for example path:/d/{id}", s)
		}
		prefix := segs[:len(segs)-1]
		for _, p := range prefix {
			if p == "" || p == "{id}" {
				return CoAPKey{}, fmt.Errorf("invalid --coap-key %q: the segments before {id} must be literal and non-empty", s)
			}
		}
		return CoAPKey{Kind: KeyPath, Prefix: prefix}, nil
	}
	return CoAPKey{}, fmt.Errorf("invalid --coap-key %q: want path:/d/{id}, query:NAME or source", s)
}

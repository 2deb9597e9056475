package membership

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// DefaultPort is the Serf gossip port (UDP and TCP) used when BindAddr is
// empty or a Join entry names a host without a port.
const DefaultPort = 7946

// maxNameLength is Serf's limit on node names (serf.MaxNodeNameLength).
const maxNameLength = 128

// validName matches the node names Serf accepts when ValidateNodeNames is set.
var validName = regexp.MustCompile(`^[A-Za-z0-9.\-]+$`)

// Role is the part a process plays in the cluster, carried in the "role" tag.
type Role string

// Roles of cluster members.
const (
	RoleGateway Role = "gateway"
	RoleWorker  Role = "worker"
)

// State is whether a worker takes new sessions, carried in the "state" tag.
type State string

// States of cluster members. A draining worker keeps serving the sessions it
// has but is left out of shard ownership.
const (
	StateActive   State = "active"
	StateDraining State = "draining"
)

// Tag keys in the Serf member metadata. Serf limits the encoded tags to
// 512 bytes (memberlist.MetaMaxSize).
const (
	tagRole  = "role"
	tagLink  = "link"
	tagState = "state"
)

// Config configures a cluster member. Start validates it and reports the
// first invalid field by name and value.
type Config struct {
	// Name is the unique member name, usually the pod or host name. Serf
	// accepts letters, digits, '-' and '.', at most 128 characters.
	Name string

	// Role is RoleGateway or RoleWorker.
	Role Role

	// BindAddr is the host:port to listen on for gossip, default ":7946".
	// The host must be an IP address or empty (all IPv4 addresses). Port 0
	// picks a free port.
	BindAddr string

	// Advertise is the host or host:port peers should dial. A host name is
	// resolved once at start. Empty derives it from BindAddr: the bound IP,
	// or a private interface address when bound to all addresses.
	Advertise string

	// LinkAddr is the worker's link address (host:port) announced to
	// gateways. Gateways leave it empty.
	LinkAddr string

	// Join lists peers as host:port or DNS names. A name without a port
	// uses DefaultPort. A name joins every address it resolves to, so a
	// headless Service joins all of its pods. Empty starts a new cluster.
	Join []string

	// Profile selects timer presets: "lan" (default) or "local", which uses
	// fast timers meant for loopback tests.
	Profile string

	// Logger receives membership changes and Serf's own log lines.
	Logger zerolog.Logger

	// OnChange, if set, is called with the full member list (as Members
	// returns it) after membership changes: join, leave, failure, reap and
	// tag updates. Calls come from one goroutine, one at a time. Changes
	// that arrive while a call runs are folded into the next call. A slow
	// OnChange does not block gossip, but it delays later notifications.
	OnChange func(members []Member)

	// Resolver looks up the addresses of a host name. Default
	// net.DefaultResolver.LookupHost. Tests replace it.
	Resolver func(ctx context.Context, host string) ([]string, error)
}

// endpoint is a validated IP address and port.
type endpoint struct {
	host string // IP literal, or "" for all addresses
	port int
}

func (c *Config) validate() error {
	if c.Name == "" {
		return fmt.Errorf("membership: missing member name: set Config.Name, for example to the pod name")
	}
	if len(c.Name) > maxNameLength || !validName.MatchString(c.Name) {
		return fmt.Errorf("membership: invalid member name %q: use at most %d letters, digits, '-' or '.'",
			c.Name, maxNameLength)
	}
	if c.Role != RoleGateway && c.Role != RoleWorker {
		return fmt.Errorf("membership: invalid role %q: use %q or %q", c.Role, RoleGateway, RoleWorker)
	}
	if c.LinkAddr != "" {
		if _, _, err := splitHostPort(c.LinkAddr); err != nil {
			return fmt.Errorf("membership: invalid link address %q: %w", c.LinkAddr, err)
		}
	}
	if c.Role == RoleWorker && c.LinkAddr == "" {
		return fmt.Errorf("membership: missing link address for worker %q: set Config.LinkAddr", c.Name)
	}
	if _, err := profileByName(c.Profile); err != nil {
		return err
	}
	for _, j := range c.Join {
		if _, _, err := splitJoin(j); err != nil {
			return fmt.Errorf("membership: invalid join address %q: %w", j, err)
		}
	}
	return nil
}

// parseBind parses BindAddr. An empty address means all IPv4 addresses on
// DefaultPort, which is what memberlist calls "0.0.0.0".
func parseBind(addr string) (endpoint, error) {
	if addr == "" {
		return endpoint{host: "0.0.0.0", port: DefaultPort}, nil
	}
	host, port, err := splitHostPort(addr)
	if err != nil {
		return endpoint{}, fmt.Errorf("membership: invalid bind address %q: %w", addr, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if net.ParseIP(host) == nil {
		return endpoint{}, fmt.Errorf("membership: invalid bind address %q: host must be an IP address or empty", addr)
	}
	return endpoint{host: host, port: port}, nil
}

// parseAdvertise resolves Advertise to an IP and port. It returns a zero
// endpoint when Advertise is empty, so memberlist derives the address.
func parseAdvertise(ctx context.Context, addr string, bind endpoint,
	resolve func(context.Context, string) ([]string, error)) (endpoint, error) {
	if addr == "" {
		return endpoint{}, nil
	}
	host, port := addr, bind.port
	if h, p, err := net.SplitHostPort(addr); err == nil {
		host = h
		port, err = parsePort(p)
		if err != nil {
			return endpoint{}, fmt.Errorf("membership: invalid advertise address %q: %w", addr, err)
		}
	}
	if host == "" {
		return endpoint{}, fmt.Errorf("membership: invalid advertise address %q: missing host", addr)
	}
	if net.ParseIP(host) != nil {
		return endpoint{host: host, port: port}, nil
	}
	ips, err := resolve(ctx, host)
	if err != nil {
		return endpoint{}, fmt.Errorf("membership: invalid advertise address %q: lookup: %w", addr, err)
	}
	if len(ips) == 0 {
		return endpoint{}, fmt.Errorf("membership: invalid advertise address %q: host has no addresses", addr)
	}
	return endpoint{host: ips[0], port: port}, nil
}

// splitJoin splits a Join entry into host and port, defaulting the port.
func splitJoin(addr string) (string, int, error) {
	if addr == "" {
		return "", 0, fmt.Errorf("empty address")
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: a bare name or IP. A bare IPv6 literal has colons, so
		// try it as an IP before giving up.
		if ip := net.ParseIP(addr); ip != nil || !strings.Contains(addr, ":") {
			return addr, DefaultPort, nil
		}
		return "", 0, err
	}
	if host == "" {
		return "", 0, fmt.Errorf("missing host")
	}
	port, err := parsePort(portText)
	if err != nil {
		return "", 0, err
	}
	if port == 0 {
		return "", 0, fmt.Errorf("port 0 cannot be dialed")
	}
	return host, port, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := parsePort(portText)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

func parsePort(text string) (int, error) {
	port, err := strconv.ParseUint(text, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("invalid port %q: want a number from 0 to 65535", text)
	}
	return int(port), nil
}

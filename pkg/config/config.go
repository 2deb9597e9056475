// Package config turns command-line flags and SHARDGATE_* environment
// variables into the validated settings of a gateway or a worker.
//
// Every flag has an environment variable named SHARDGATE_ followed by the flag
// name in upper snake case (--coap-addr reads SHARDGATE_COAP_ADDR). A flag
// given on the command line wins over its variable.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// EnvPrefix starts every environment variable the binaries read.
const EnvPrefix = "SHARDGATE_"

// Role names accepted by EnvVars.
const (
	RoleGateway = "gateway"
	RoleWorker  = "worker"
)

// Common holds the settings both binaries share.
type Common struct {
	Name        string
	SerfAddr    string
	Join        []string
	Advertise   string
	AdminAddr   string
	SerfProfile string
	LogFormat   string
	LogLevel    string
}

// Gateway holds a gateway's settings.
type Gateway struct {
	Common
	CoAPAddr      string
	CoAPKey       string
	DiameterAddr  string
	DiameterHost  string
	DiameterRealm string
	DiameterKey   string
	DiameterPeers []string
	// LinkConns is the number of link connections to each worker.
	LinkConns int
}

// Worker holds a worker's settings.
type Worker struct {
	Common
	LinkAddr     string
	SessionIdle  time.Duration
	DrainTimeout time.Duration
}

// ErrHelp is returned when the arguments ask for usage text.
var ErrHelp = flag.ErrHelp

// EnvName returns the environment variable read for a flag name.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// EnvVars returns every environment variable the binary of role reads,
// sorted. It returns nil for an unknown role.
func EnvVars(role string) []string {
	var fs *flag.FlagSet
	switch role {
	case RoleGateway:
		fs, _ = gatewayFlags(io.Discard)
	case RoleWorker:
		fs, _ = workerFlags(io.Discard)
	default:
		return nil
	}
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "version" {
			names = append(names, EnvName(f.Name))
		}
	})
	sort.Strings(names)
	return names
}

// ParseGateway parses a gateway's arguments (without the program name) and
// environment. Usage and errors go to out.
func ParseGateway(args []string, getenv func(string) string, out io.Writer) (Gateway, error) {
	fs, cfg := gatewayFlags(out)
	if err := parse(fs, args, getenv); err != nil {
		return Gateway{}, err
	}
	if err := cfg.validate(); err != nil {
		return Gateway{}, err
	}
	return *cfg, nil
}

// ParseWorker parses a worker's arguments (without the program name) and
// environment. Usage and errors go to out.
func ParseWorker(args []string, getenv func(string) string, out io.Writer) (Worker, error) {
	fs, cfg := workerFlags(out)
	if err := parse(fs, args, getenv); err != nil {
		return Worker{}, err
	}
	if err := cfg.validate(); err != nil {
		return Worker{}, err
	}
	return *cfg, nil
}

// WantsVersion reports whether args ask for the version only.
func WantsVersion(args []string) bool {
	for _, a := range args {
		if a == "-version" || a == "--version" {
			return true
		}
	}
	return false
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "shardgate"
	}
	return h
}

func commonFlags(fs *flag.FlagSet, c *Common, role string, adminAddr string) {
	fs.StringVar(&c.Name, "name", hostname(), "node name, unique in the cluster")
	fs.StringVar(&c.SerfAddr, "serf-addr", ":7946", "Serf gossip listen address (TCP and UDP)")
	fs.Func("join", "comma-separated host:port or DNS names to join; a DNS name joins every address it resolves to", func(s string) error {
		c.Join = splitList(s)
		return nil
	})
	fs.StringVar(&c.Advertise, "advertise", "", "host (IP or name) other members dial when a listen address is not it")
	fs.StringVar(&c.AdminAddr, "admin-addr", adminAddr, "admin HTTP listen address (/healthz, /readyz, /metrics, /debug/...)")
	fs.StringVar(&c.SerfProfile, "serf-profile", "lan", "Serf timer preset: lan, or local for one machine")
	fs.StringVar(&c.LogFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.Bool("version", false, "print the "+role+" version and exit")
}

func gatewayFlags(out io.Writer) (*flag.FlagSet, *Gateway) {
	fs := flag.NewFlagSet(RoleGateway, flag.ContinueOnError)
	fs.SetOutput(out)
	g := &Gateway{}
	commonFlags(fs, &g.Common, RoleGateway, ":8080")
	fs.StringVar(&g.CoAPAddr, "coap-addr", ":5683", "CoAP UDP listen address")
	fs.StringVar(&g.CoAPKey, "coap-key", "path:/d/{id}", "where the CoAP session key is: path:/d/{id} (a Uri-Path segment), query:NAME (a Uri-Query parameter) or source (the source address)")
	fs.StringVar(&g.DiameterAddr, "diameter-addr", ":3868", "Diameter TCP listen address; empty disables Diameter")
	fs.StringVar(&g.DiameterHost, "diameter-host", "", "Diameter Origin-Host (default: the node name)")
	fs.StringVar(&g.DiameterRealm, "diameter-realm", "shardgate.local", "Diameter Origin-Realm")
	fs.StringVar(&g.DiameterKey, "diameter-key", "Session-Id", "AVP whose value is the Diameter session key, for example Session-Id or User-Name")
	fs.IntVar(&g.LinkConns, "link-conns", 1, "link connections to each worker; a worker serves each on one event loop, so more use more of its CPUs")
	fs.Func("diameter-peers", "comma-separated Origin-Hosts allowed to connect; empty allows every peer", func(s string) error {
		g.DiameterPeers = splitList(s)
		if strings.TrimSpace(s) != "" && len(g.DiameterPeers) == 0 {
			// A list of only commas would silently allow every peer.
			return fmt.Errorf("no Origin-Host in %q", s)
		}
		return nil
	})
	return fs, g
}

func workerFlags(out io.Writer) (*flag.FlagSet, *Worker) {
	fs := flag.NewFlagSet(RoleWorker, flag.ContinueOnError)
	fs.SetOutput(out)
	w := &Worker{}
	commonFlags(fs, &w.Common, RoleWorker, ":8081")
	fs.StringVar(&w.LinkAddr, "link-addr", ":9000", "listen address of the link that gateways forward requests over")
	fs.DurationVar(&w.SessionIdle, "session-idle", 10*time.Minute, "idle time after which a session's state is dropped")
	fs.DurationVar(&w.DrainTimeout, "drain-timeout", 10*time.Second, "on SIGTERM, how long to serve as draining before leaving the cluster")
	return fs, w
}

// parse applies environment variables for flags absent from args, then args.
func parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if envErr != nil || f.Name == "version" {
			return
		}
		name := EnvName(f.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = fmt.Errorf("invalid value %q for %s (flag --%s): %w", v, name, f.Name, err)
		}
	})
	if envErr != nil {
		return envErr
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: every setting is a --flag", fs.Arg(0))
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (c *Common) validate() error {
	if c.Name == "" {
		return errors.New("invalid --name: must not be empty")
	}
	if err := checkListen("serf-addr", c.SerfAddr); err != nil {
		return err
	}
	if err := checkListen("admin-addr", c.AdminAddr); err != nil {
		return err
	}
	for _, j := range c.Join {
		if err := checkJoin(j); err != nil {
			return err
		}
	}
	if strings.Contains(c.Advertise, "/") {
		return fmt.Errorf("invalid --advertise %q: want a host name or IP address", c.Advertise)
	}
	if c.SerfProfile != "lan" && c.SerfProfile != "local" {
		return fmt.Errorf("invalid --serf-profile %q: want lan or local", c.SerfProfile)
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		return fmt.Errorf("invalid --log-format %q: want json or console", c.LogFormat)
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	return nil
}

func (g *Gateway) validate() error {
	if err := g.Common.validate(); err != nil {
		return err
	}
	if err := checkListen("coap-addr", g.CoAPAddr); err != nil {
		return err
	}
	if g.DiameterAddr != "" {
		if err := checkListen("diameter-addr", g.DiameterAddr); err != nil {
			return err
		}
	}
	if g.DiameterHost == "" {
		g.DiameterHost = g.Name
	}
	if g.DiameterRealm == "" {
		return errors.New("invalid --diameter-realm: must not be empty")
	}
	if g.DiameterKey == "" {
		return errors.New("invalid --diameter-key: must name an AVP, for example Session-Id")
	}
	if _, err := ParseCoAPKey(g.CoAPKey); err != nil {
		return err
	}
	if g.LinkConns < 1 || g.LinkConns > maxLinkConns {
		return fmt.Errorf("invalid --link-conns %d: want 1 to %d", g.LinkConns, maxLinkConns)
	}
	return nil
}

// maxLinkConns bounds --link-conns: more connections than a worker has CPUs
// only add sockets.
const maxLinkConns = 64

func (w *Worker) validate() error {
	if err := w.Common.validate(); err != nil {
		return err
	}
	if err := checkListen("link-addr", w.LinkAddr); err != nil {
		return err
	}
	if w.SessionIdle <= 0 {
		return fmt.Errorf("invalid --session-idle %s: must be positive", w.SessionIdle)
	}
	if w.DrainTimeout < 0 {
		return fmt.Errorf("invalid --drain-timeout %s: must not be negative", w.DrainTimeout)
	}
	return nil
}

func checkListen(flagName, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid --%s %q: want host:port or :port: %w", flagName, addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid --%s %q: port must be a number from 0 to 65535", flagName, addr)
	}
	return nil
}

func checkJoin(entry string) error {
	host := entry
	if h, port, err := net.SplitHostPort(entry); err == nil {
		host = h
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("invalid --join entry %q: port must be a number from 1 to 65535", entry)
		}
	}
	if host == "" || strings.ContainsAny(host, "/ ") {
		return fmt.Errorf("invalid --join entry %q: want host:port or a DNS name", entry)
	}
	if strings.Contains(host, ":") {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("invalid --join entry %q: write an IPv6 address as [addr]:port", entry)
		}
	}
	return nil
}

// UnknownEnv returns the SHARDGATE_ variables in environ (KEY=value
// entries) that the binary of role does not read, such as misspelt ones.
func UnknownEnv(role string, environ []string) []string {
	known := EnvVars(role)
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix) && !slices.Contains(known, name) {
			unknown = append(unknown, name)
		}
	}
	return unknown
}

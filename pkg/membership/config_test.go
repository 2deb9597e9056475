package membership

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestStartRejectsInvalidConfig(t *testing.T) {
	valid := func() Config {
		return Config{Name: "w1", Role: RoleWorker, LinkAddr: "127.0.0.1:9000",
			BindAddr: "127.0.0.1:0", Profile: ProfileLocal}
	}
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"missing name", func(c *Config) { c.Name = "" }, "missing member name"},
		{"name with space", func(c *Config) { c.Name = "w 1" }, `invalid member name "w 1"`},
		{"name too long", func(c *Config) { c.Name = strings.Repeat("a", 129) }, "invalid member name"},
		{"unknown role", func(c *Config) { c.Role = "proxy" }, `invalid role "proxy"`},
		{"worker without link", func(c *Config) { c.LinkAddr = "" }, `missing link address for worker "w1"`},
		{"link without port", func(c *Config) { c.LinkAddr = "127.0.0.1" }, `invalid link address "127.0.0.1"`},
		{"unknown profile", func(c *Config) { c.Profile = "wan" }, `invalid profile "wan"`},
		{"bind without port", func(c *Config) { c.BindAddr = "x" }, `invalid bind address "x"`},
		{"bind to a name", func(c *Config) { c.BindAddr = "localhost:7946" }, `invalid bind address "localhost:7946"`},
		{"bind port too large", func(c *Config) { c.BindAddr = "127.0.0.1:70000" }, `invalid port "70000"`},
		{"join port not a number", func(c *Config) { c.Join = []string{"gw:http"} }, `invalid join address "gw:http"`},
		{"join empty entry", func(c *Config) { c.Join = []string{""} }, `invalid join address ""`},
		{"join port zero", func(c *Config) { c.Join = []string{"gw:0"} }, `invalid join address "gw:0"`},
		{"advertise port", func(c *Config) { c.Advertise = "127.0.0.1:x" }, `invalid advertise address "127.0.0.1:x"`},
		{"advertise lookup", func(c *Config) {
			c.Advertise = "nowhere.test"
			c.Resolver = func(context.Context, string) ([]string, error) { return nil, errors.New("no such host") }
		}, `invalid advertise address "nowhere.test"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.modify(&cfg)
			m, err := Start(context.Background(), cfg)
			if err == nil {
				_ = m.Shutdown()
				t.Fatalf("Start succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestSplitJoin(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port int
	}{
		{"10.0.0.1:8000", "10.0.0.1", 8000},
		{"10.0.0.1", "10.0.0.1", DefaultPort},
		{"workers.shardgate.svc", "workers.shardgate.svc", DefaultPort},
		{"workers:7000", "workers", 7000},
		{"[::1]:7000", "::1", 7000},
		{"::1", "::1", DefaultPort},
	}
	for _, tt := range tests {
		host, port, err := splitJoin(tt.in)
		if err != nil {
			t.Errorf("splitJoin(%q): %v", tt.in, err)
			continue
		}
		if host != tt.host || port != tt.port {
			t.Errorf("splitJoin(%q) = %q, %d, want %q, %d", tt.in, host, port, tt.host, tt.port)
		}
	}
}

func TestParseAdvertise(t *testing.T) {
	bind := endpoint{host: "0.0.0.0", port: 7000}
	resolve := func(_ context.Context, host string) ([]string, error) {
		if host == "pod-0.workers.test" {
			return []string{"10.1.2.3"}, nil
		}
		return nil, errors.New("no such host")
	}
	tests := []struct {
		in   string
		want endpoint
	}{
		{"", endpoint{}},
		{"10.0.0.5", endpoint{host: "10.0.0.5", port: 7000}},
		{"10.0.0.5:7100", endpoint{host: "10.0.0.5", port: 7100}},
		{"pod-0.workers.test", endpoint{host: "10.1.2.3", port: 7000}},
		{"pod-0.workers.test:7200", endpoint{host: "10.1.2.3", port: 7200}},
	}
	for _, tt := range tests {
		got, err := parseAdvertise(context.Background(), tt.in, bind, resolve)
		if err != nil {
			t.Errorf("parseAdvertise(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("parseAdvertise(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseBindDefaults(t *testing.T) {
	tests := []struct {
		in   string
		want endpoint
	}{
		{"", endpoint{host: "0.0.0.0", port: DefaultPort}},
		{":7000", endpoint{host: "0.0.0.0", port: 7000}},
		{"127.0.0.1:0", endpoint{host: "127.0.0.1", port: 0}},
	}
	for _, tt := range tests {
		got, err := parseBind(tt.in)
		if err != nil {
			t.Errorf("parseBind(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("parseBind(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func FuzzSplitJoin(f *testing.F) {
	for _, seed := range []string{"10.0.0.1:7946", "workers.shardgate.svc", "[::1]:7000", "::1", ":", "[", "gw:0"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		host, port, err := splitJoin(addr)
		if err != nil {
			return
		}
		if host == "" {
			t.Errorf("splitJoin(%q) returned an empty host", addr)
		}
		if port < 1 || port > 65535 {
			t.Errorf("splitJoin(%q) returned port %d", addr, port)
		}
	})
}

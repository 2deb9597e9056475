// Package cli is the start-up sequence both binaries share: parse flags and
// environment, log the version and effective config, build the node and run
// it until SIGINT or SIGTERM.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/internal/procs"
	"github.com/shardgate/shardgate/internal/version"
	"github.com/shardgate/shardgate/pkg/config"
	"github.com/shardgate/shardgate/pkg/logging"
)

// Node is a gateway or worker ready to run.
type Node interface {
	Run(ctx context.Context) error
}

// Binary describes one binary's parts.
type Binary[C any] struct {
	// Role is config.RoleGateway or config.RoleWorker.
	Role string
	// Parse turns arguments and environment into a config.
	Parse func(args []string, getenv func(string) string, out io.Writer) (C, error)
	// Common returns the settings every binary has.
	Common func(cfg C) config.Common
	// New builds the node and binds its sockets.
	New func(cfg C, log zerolog.Logger) (Node, error)
}

// Main runs the binary with args (without the program name) and returns
// the process exit code: 0 after a clean stop, 1 on a runtime error, 2 for
// invalid flags.
func Main[C any](b Binary[C], args []string) int {
	if config.WantsVersion(args) {
		fmt.Println(b.Role, version.Version)
		return 0
	}
	cfg, err := b.Parse(args, os.Getenv, os.Stderr)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", b.Role, err)
		return 2
	}
	common := b.Common(cfg)
	log := logging.New(common.LogFormat, common.LogLevel, os.Stderr).With().Str("node", common.Name).Logger()
	maxprocs := procs.Raise()
	log.Info().Str("version", version.Version).Int("gomaxprocs", maxprocs).Interface("config", cfg).
		Msg(b.Role + " starting")
	for _, name := range config.UnknownEnv(b.Role, os.Environ()) {
		log.Warn().Str("variable", name).Msg("ignoring an environment variable that no flag reads; check its spelling")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	node, err := b.New(cfg, log)
	if err != nil {
		log.Error().Err(err).Msg(b.Role + " failed to start")
		return 1
	}
	if err := node.Run(ctx); err != nil {
		log.Error().Err(err).Msg(b.Role + " stopped with an error")
		return 1
	}
	return 0
}

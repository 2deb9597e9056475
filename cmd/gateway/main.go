// Command gateway runs a shardgate gateway: the CoAP and Diameter entry
// point that routes each session to the worker owning it.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/shardgate/shardgate/internal/procs"
	"github.com/shardgate/shardgate/internal/version"
	"github.com/shardgate/shardgate/pkg/config"
	"github.com/shardgate/shardgate/pkg/gateway"
	"github.com/shardgate/shardgate/pkg/logging"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if config.WantsVersion(args) {
		fmt.Println("gateway", version.Version)
		return 0
	}
	cfg, err := config.ParseGateway(args, os.Getenv, os.Stderr)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 2
	}
	log := logging.New(cfg.LogFormat, cfg.LogLevel, os.Stderr).With().Str("node", cfg.Name).Logger()
	maxprocs := procs.Raise()
	log.Info().Str("version", version.Version).Int("gomaxprocs", maxprocs).Interface("config", cfg).Msg("gateway starting")

	for _, name := range config.UnknownEnv(config.RoleGateway, os.Environ()) {
		log.Warn().Str("variable", name).Msg("ignoring an environment variable that no flag reads; check its spelling")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g, err := gateway.New(cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("gateway failed to start")
		return 1
	}
	if err := g.Run(ctx); err != nil {
		log.Error().Err(err).Msg("gateway stopped with an error")
		return 1
	}
	return 0
}

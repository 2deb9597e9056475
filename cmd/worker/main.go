// Command worker runs a shardgate worker: it holds session state and runs
// the applications for the sessions the ring gives it.
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
	"github.com/shardgate/shardgate/pkg/logging"
	"github.com/shardgate/shardgate/pkg/worker"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if config.WantsVersion(args) {
		fmt.Println("worker", version.Version)
		return 0
	}
	cfg, err := config.ParseWorker(args, os.Getenv, os.Stderr)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 2
	}
	log := logging.New(cfg.LogFormat, cfg.LogLevel, os.Stderr).With().Str("node", cfg.Name).Logger()
	maxprocs := procs.Raise()
	log.Info().Str("version", version.Version).Int("gomaxprocs", maxprocs).Interface("config", cfg).Msg("worker starting")

	for _, name := range config.UnknownEnv(config.RoleWorker, os.Environ()) {
		log.Warn().Str("variable", name).Msg("ignoring an environment variable that no flag reads; check its spelling")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w, err := worker.New(cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("worker failed to start")
		return 1
	}
	if err := w.Run(ctx); err != nil {
		log.Error().Err(err).Msg("worker stopped with an error")
		return 1
	}
	return 0
}

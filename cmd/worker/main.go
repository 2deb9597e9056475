// Command worker runs a shardgate worker: it holds session state and runs
// the applications for the sessions the ring gives it.
package main

import (
	"os"

	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/internal/cli"
	"github.com/shardgate/shardgate/pkg/config"
	"github.com/shardgate/shardgate/pkg/worker"
)

func main() {
	os.Exit(cli.Main(cli.Binary[config.Worker]{
		Role:   config.RoleWorker,
		Parse:  config.ParseWorker,
		Common: func(c config.Worker) config.Common { return c.Common },
		New: func(c config.Worker, log zerolog.Logger) (cli.Node, error) {
			return worker.New(c, log)
		},
	}, os.Args[1:]))
}

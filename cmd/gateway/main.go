// Command gateway runs a shardgate gateway: the CoAP and Diameter entry
// point that routes each session to the worker owning it.
package main

import (
	"os"

	"github.com/rs/zerolog"

	"github.com/shardgate/shardgate/internal/cli"
	"github.com/shardgate/shardgate/pkg/config"
	"github.com/shardgate/shardgate/pkg/gateway"
)

func main() {
	os.Exit(cli.Main(cli.Binary[config.Gateway]{
		Role:   config.RoleGateway,
		Parse:  config.ParseGateway,
		Common: func(c config.Gateway) config.Common { return c.Common },
		New: func(c config.Gateway, log zerolog.Logger) (cli.Node, error) {
			return gateway.New(c, log)
		},
	}, os.Args[1:]))
}

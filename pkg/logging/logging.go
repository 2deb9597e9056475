// Package logging builds the zerolog logger both binaries use.
package logging

import (
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// New returns a logger writing JSON, or human-readable lines when format is
// "console", at level. The level name is checked by config beforehand; an
// unknown name means info.
func New(format, level string, out io.Writer) zerolog.Logger {
	if out == nil {
		out = os.Stderr
	}
	if format == "console" {
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
	}
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || lvl == zerolog.NoLevel {
		lvl = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger()
}

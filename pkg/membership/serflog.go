package membership

import (
	"strings"

	"github.com/rs/zerolog"
)

// logWriter turns the lines that Serf and memberlist print through a
// log.Logger into zerolog events. Their lines look like
// "[WARN] memberlist: Refuting a suspect message (from: a)": the bracketed
// level becomes the event level and the "serf:" or "memberlist:" prefix
// becomes the component field.
//
// NOTE: repeated lines, such as a failed probe every probe interval, are
// not rate-limited.
//
// The log.Logger must have no prefix and no flags, so each Write holds one
// bare line. log.Logger serializes its writes, and zerolog.Logger is safe
// for concurrent use, so logWriter is too.
type logWriter struct {
	logger zerolog.Logger
}

// Write logs one line and always returns len(p) and a nil error.
func (w logWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\r\n")
	level, msg := splitLevel(line)
	component, msg := splitComponent(msg)

	if isDuplicateOrShutdownNoise(component, msg) {
		level = zerolog.DebugLevel
	}

	event := w.logger.WithLevel(level)
	if component != "" {
		event = event.Str("component", component)
	}
	event.Msg(msg)
	return len(p), nil
}

// splitLevel removes a leading "[LEVEL] " and maps it to a zerolog level.
// A line without a known level is logged at info.
func splitLevel(line string) (zerolog.Level, string) {
	if !strings.HasPrefix(line, "[") {
		return zerolog.InfoLevel, line
	}
	end := strings.IndexByte(line, ']')
	if end < 0 {
		return zerolog.InfoLevel, line
	}

	var level zerolog.Level
	switch line[1:end] {
	case "TRACE":
		level = zerolog.TraceLevel
	case "DEBUG":
		level = zerolog.DebugLevel
	case "INFO":
		level = zerolog.InfoLevel
	case "WARN":
		level = zerolog.WarnLevel
	case "ERR", "ERROR":
		level = zerolog.ErrorLevel
	default:
		return zerolog.InfoLevel, line
	}
	return level, strings.TrimLeft(line[end+1:], " ")
}

// splitComponent removes a leading "serf: " or "memberlist: ".
func splitComponent(msg string) (string, string) {
	for _, component := range []string{"serf", "memberlist"} {
		if rest, ok := strings.CutPrefix(msg, component+": "); ok {
			return component, rest
		}
	}
	return "", msg
}

// isDuplicateOrShutdownNoise reports lines that go to debug. Membership
// logs each member event itself at info with the tags, so Serf's notice of
// the same event and memberlist's "Marking x as failed" would repeat it.
// Writes on closed sockets happen only while memberlist shuts down.
func isDuplicateOrShutdownNoise(component, msg string) bool {
	switch {
	case component == "serf" && strings.HasPrefix(msg, "EventMember"):
		return true
	case component == "memberlist" && strings.HasPrefix(msg, "Marking ") && strings.Contains(msg, " as failed"):
		return true
	}
	return strings.Contains(msg, "use of closed network connection")
}

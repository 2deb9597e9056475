// Package version holds the build version, stamped by the Makefile with
// -ldflags "-X github.com/shardgate/shardgate/internal/version.Version=...".
package version

// Version is the release or commit the binary was built from.
var Version = "dev"

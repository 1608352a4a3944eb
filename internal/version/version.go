// Package version carries the build's version, set by the Makefile's ldflags.
package version

import (
	"fmt"
	"runtime"
)

// Version is overwritten at build time with -X.
var Version = "dev"

// String is the one-line version every binary prints.
func String(binary string) string {
	return fmt.Sprintf("%s %s (%s, %s/%s)", binary, Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

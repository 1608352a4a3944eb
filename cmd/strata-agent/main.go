//go:debug multipathtcp=0

// Command strata-agent is the per-node Strata daemon.
package main

import (
	"os"

	"github.com/strata-net/strata/internal/cli"
)

func main() {
	if err := cli.NewAgent().Execute(); err != nil {
		os.Exit(1)
	}
}

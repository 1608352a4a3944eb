// Command strata is the operator's CLI: status, topology and the lab.
package main

import (
	"os"

	"github.com/strata-net/strata/internal/cli/operator"
)

func main() {
	if err := operator.NewStrata().Execute(); err != nil {
		os.Exit(1)
	}
}

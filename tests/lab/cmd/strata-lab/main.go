// Command strata-lab runs Strata's lab: a whole mixed cluster in network
// namespaces on this machine (`make lab` runs `up` then `matrix`).
package main

import (
	"os"

	"github.com/strata-net/strata/tests/lab"
)

func main() { os.Exit(lab.Main(os.Args[1:])) }

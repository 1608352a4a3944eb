// Command strata-cni is the CNI plugin container runtimes call for every pod.
package main

import (
	"fmt"
	"os"

	"github.com/strata-net/strata/internal/version"
)

func main() {
	// Placeholder until cni/ lands its skel-based plugin (issue 7).
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "--help" || os.Args[1] == "-h") {
		fmt.Println(version.String("strata-cni"))
		fmt.Println("strata-cni is a CNI plugin: a container runtime runs it with CNI_COMMAND and a config on stdin.")
		return
	}
	fmt.Fprintln(os.Stderr, "strata-cni: not built yet")
	os.Exit(1)
}

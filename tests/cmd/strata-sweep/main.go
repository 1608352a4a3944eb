// Command strata-sweep removes namespaces and processes that crashed Strata
// tests or labs left behind (`make sweep`), or with --check fails when any
// Strata namespace or daemon is still present (the end of `make test`).
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/strata-net/strata/tests/harness/sweep"
)

func main() {
	check := flag.Bool("check", false, "do not remove anything; exit 1 if Strata namespaces or daemons remain")
	all := flag.Bool("all", false, "remove every Strata namespace, even ones whose creating process still runs")
	flag.Parse()
	if *check {
		// A process killed a moment ago may still be exiting: give
		// leftovers a few seconds to go before calling them left behind.
		left := sweep.Leftovers()
		for deadline := time.Now().Add(10 * time.Second); len(left) > 0 && time.Now().Before(deadline); left = sweep.Leftovers() {
			time.Sleep(200 * time.Millisecond)
		}
		for _, l := range left {
			fmt.Println("left behind:", l)
		}
		if len(left) > 0 {
			fmt.Println("a test did not clean up after itself; `make sweep` removes these")
			os.Exit(1)
		}
		fmt.Println("==> nothing left behind")
		return
	}
	r, err := sweep.Run(*all)
	for _, n := range r.Namespaces {
		fmt.Println("removed netns", n)
	}
	for _, p := range r.Processes {
		fmt.Println("killed orphaned process", p)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "strata-sweep:", err)
		os.Exit(1)
	}
}

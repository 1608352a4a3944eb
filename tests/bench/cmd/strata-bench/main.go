// Command strata-bench runs `make bench`: every benchmark target beside its
// same-run baseline, printed as a table and written as JSON.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/strata-net/strata/tests/bench"
)

func main() {
	only := flag.String("only", "", "run only areas or ids with this prefix (e.g. cni)")
	out := flag.String("out", "_out/bench.json", "where to write the JSON results")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rs, err := bench.Run(ctx, *only, os.Stdout)
	if werr := bench.WriteJSON(*out, rs); werr != nil {
		fmt.Fprintln(os.Stderr, "strata-bench: write results:", werr)
		os.Exit(1)
	}
	fmt.Printf("\nwrote %d results to %s\n", len(rs), *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "strata-bench:", err)
		os.Exit(1)
	}
}

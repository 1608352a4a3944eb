// Command srchash writes (-write) or checks the bpf directory's generated.sum.
// It runs from bpf/gen.go after bpf2go.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/strata-net/strata/bpf/internal/gensum"
)

func main() {
	write := flag.Bool("write", false, "write generated.sum instead of checking it")
	dir := flag.String("dir", ".", "the bpf directory")
	flag.Parse()
	got, err := gensum.Compute(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	path := filepath.Join(*dir, gensum.File)
	if *write {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		v, err := gensum.ClangVersion()
		if err == nil {
			err = os.WriteFile(filepath.Join(*dir, gensum.CompilerFile), []byte(v+"\n"), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil || string(want) != got {
		fmt.Fprintf(os.Stderr, "%s is stale: run `make generate` and commit the result\n", path)
		os.Exit(1)
	}
}

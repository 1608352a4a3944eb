// Package gensum records and checks the hashes that tie the committed bpf2go
// output to the C sources it was built from. `go generate` writes the file;
// a unit test (no clang needed) recomputes it and fails on any difference, so
// editing a .c/.h file (or the generate flags) without regenerating, or
// editing the generated files by hand, is caught in CI.
package gensum

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// File is the committed record, relative to the bpf directory.
const File = "generated.sum"

// CompilerFile records the `clang --version` line the committed object was
// built with: a byte-for-byte rebuild check is only meaningful with the same
// compiler.
const CompilerFile = "generated.clang"

// ClangVersion returns the first line of `clang --version`.
func ClangVersion() (string, error) {
	out, err := exec.Command("clang", "--version").Output()
	if err != nil {
		return "", fmt.Errorf("clang --version: %w", err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line), nil
}

// Inputs are the patterns hashed: the C sources and headers, the generate
// directives (they carry the compiler flags) and bpf2go's output.
var Inputs = []string{"src/*.c", "src/*.h", "gen.go", "*_bpfel.go", "*_bpfel.o"}

// Compute returns the record for the bpf directory dir: one "sha256  name"
// line per file, sorted by name.
func Compute(dir string) (string, error) {
	var names []string
	for _, p := range Inputs {
		m, err := filepath.Glob(filepath.Join(dir, p))
		if err != nil {
			return "", err
		}
		names = append(names, m...)
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no bpf sources under %s", dir)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", n, err)
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(sum[:]), filepath.ToSlash(rel(dir, n)))
	}
	return b.String(), nil
}

func rel(dir, path string) string {
	r, err := filepath.Rel(dir, path)
	if err != nil {
		return filepath.Base(path)
	}
	return r
}

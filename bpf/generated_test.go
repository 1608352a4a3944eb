package bpf

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/strata-net/strata/bpf/internal/gensum"
)

// TestGeneratedOutputMatchesSources fails when the C sources, the generate
// flags or bpf2go's committed output changed without `make generate`.
func TestGeneratedOutputMatchesSources(t *testing.T) {
	got, err := gensum.Compute(".")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(gensum.File)
	if err != nil {
		t.Fatalf("read %s: %v (run `make generate`)", gensum.File, err)
	}
	if got != string(want) {
		t.Fatalf("bpf generated output drifted from its sources: run `make generate` and commit bpf/.\nrecorded:\n%s\nnow:\n%s", want, got)
	}
}

// TestGeneratedObjectRebuildsIdentically reruns bpf2go, with the committed
// //go:generate arguments, into a temporary directory when clang is installed
// and compares its output byte for byte with the committed files (clang's BPF
// output is deterministic for the same input and flags). Without clang the
// hash check above is the guard.
func TestGeneratedObjectRebuildsIdentically(t *testing.T) {
	if _, err := exec.LookPath("clang"); err != nil {
		t.Log("clang not installed: relying on generated.sum only")
		return
	}
	if testing.Short() {
		return
	}
	recorded, err := os.ReadFile(gensum.CompilerFile)
	if err != nil {
		t.Fatalf("read %s: %v (run `make generate`)", gensum.CompilerFile, err)
	}
	have, err := gensum.ClangVersion()
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(recorded)) != have {
		t.Logf("installed %q differs from the recorded %q: a rebuild would not be byte-identical; relying on generated.sum only", have, strings.TrimSpace(string(recorded)))
		return
	}
	args, err := bpf2goArgs("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Flags must precede bpf2go's positional arguments: put ours first.
	argv := append([]string{"run", args[0], "-output-dir", dir}, args[1:]...)
	cmd := exec.Command("go", argv...)
	cmd.Env = append(os.Environ(), "GOPACKAGE=bpf")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rerun bpf2go: %v\n%s", err, out)
	}
	for _, name := range []string{"fastpath_bpfel.o", "fastpath_bpfel.go"} {
		rebuilt, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		committed, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if string(rebuilt) != string(committed) {
			t.Errorf("%s differs from a fresh bpf2go run over src/ (%d vs %d bytes): run `make generate` and commit bpf/", name, len(committed), len(rebuilt))
		}
	}
}

// bpf2goArgs returns the arguments of the bpf2go //go:generate line, from the
// package path on, with double-quoted words unquoted.
func bpf2goArgs(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "//go:generate go run ")
		if !ok || !strings.Contains(rest, "bpf2go") {
			continue
		}
		var out []string
		for _, m := range regexp.MustCompile(`"([^"]*)"|(\S+)`).FindAllStringSubmatch(rest, -1) {
			if m[2] != "" {
				out = append(out, m[2])
			} else {
				out = append(out, m[1])
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s has no bpf2go //go:generate line", file)
}

// TestPathNamesMatchHeader keeps the Go labels in step with enum path_id.
func TestPathNamesMatchHeader(t *testing.T) {
	h, err := os.ReadFile("src/fastpath.h")
	if err != nil {
		t.Fatal(err)
	}
	body := regexp.MustCompile(`(?s)enum path_id \{(.*?)\};`).FindSubmatch(h)
	if body == nil {
		t.Fatal("enum path_id not found in src/fastpath.h")
	}
	var ids []string
	for _, m := range regexp.MustCompile(`\b(PATH_[A-Z0-9_]+)\b`).FindAllSubmatch(body[1], -1) {
		ids = append(ids, string(m[1]))
	}
	if ids[len(ids)-1] != "PATH_MAX_ID" {
		t.Fatalf("enum path_id must end with PATH_MAX_ID, got %v", ids)
	}
	ids = ids[:len(ids)-1]
	if len(ids) != len(pathNames) {
		t.Fatalf("header has %d paths %v, Go has %d %v", len(ids), ids, len(pathNames), pathNames)
	}
	for i, id := range ids {
		want := strings.ToLower(strings.TrimPrefix(id, "PATH_"))
		if pathNames[i] != want {
			t.Errorf("path %d: header %s, Go label %q (want %q)", i, id, pathNames[i], want)
		}
	}
}

package gensum

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestComputeSeesEveryInput(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"src/a.c": "int x;", "src/a.h": "#define A", "gen.go": "package x", "a_bpfel.go": "package x", "a_bpfel.o": "ELF", "other.txt": "ignored"}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	first, err := Compute(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"src/a.c", "src/a.h", "gen.go", "a_bpfel.go", "a_bpfel.o"} {
		if !strings.Contains(first, "  "+n+"\n") {
			t.Errorf("record lacks %s:\n%s", n, first)
		}
	}
	if strings.Contains(first, "other.txt") {
		t.Error("record includes an unrelated file")
	}
	for _, n := range []string{"src/a.h", "a_bpfel.o"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("changed"), 0o644); err != nil {
			t.Fatal(err)
		}
		now, err := Compute(dir)
		if err != nil {
			t.Fatal(err)
		}
		if now == first {
			t.Errorf("changing %s did not change the record", n)
		}
		first = now
	}
	if _, err := Compute(t.TempDir()); err == nil {
		t.Error("empty directory: want an error")
	}
}

// Package testutil holds small helpers shared by Strata's tests.
package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RequireRoot fails the test, loudly, when not running as root. Privileged
// tests never skip silently: a green run must mean they ran.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root (it creates network namespaces and links); run it with `sudo make test-privileged` or as root")
	}
}

// RequireCommand fails the test when a needed program is missing, and says
// how to install it.
func RequireCommand(t testing.TB, name, hint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("this test needs %q on PATH: %s", name, hint)
	}
	return p
}

// ToolsBin is where `make tools` puts the binaries it builds
// ($STRATA_TOOLS_BIN, default ~/.cache/strata/bin).
func ToolsBin() string {
	if d := os.Getenv("STRATA_TOOLS_BIN"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "strata", "bin")
}

// Tool returns the path of a binary built by `make tools` (cnitool, kubectl,
// helm, ...), failing the test with the fix when it is missing.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(ToolsBin(), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not found at %s: run `make tools` first", name, p)
	}
	return p
}

// Run runs a command (argv, e.g. from nsutil.NS.Exec) and returns its
// combined output, failing the test with the command line and the output
// when it fails.
func Run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

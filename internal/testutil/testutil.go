// Package testutil holds small helpers shared by Strata's tests.
package testutil

import (
	"os"
	"os/exec"
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

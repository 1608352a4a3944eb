//go:build integration

package render

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/strata-net/strata/internal/testutil"
)

// The lab's facts render to an SVG that is well-formed XML with an <svg> root.
func TestIntegrationLabSVG(t *testing.T) {
	testutil.RequireCommand(t, "dot", "apt-get install graphviz (make deps installs it)")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, file := range []string{"lab.yaml", "lab-failover.yaml"} {
		base := filepath.Join(t.TempDir(), "topo")
		files, err := WriteFiles(ctx, labPlan(t, file), base, "svg")
		if err != nil {
			t.Fatal(err)
		}
		if len(files) != 2 {
			t.Fatalf("%s: wrote %v", file, files)
		}
		b, err := os.ReadFile(base + ".svg")
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckSVG(b); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
}

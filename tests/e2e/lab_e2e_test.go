//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-net/strata/internal/testutil"
	"github.com/strata-net/strata/tests/lab"
)

func repoRoot() string {
	_, f, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(f), "..", "..")
}

// upLab brings a lab up from a description and tears it down when the test
// ends, pass or fail.
func upLab(t *testing.T, spec string) *lab.Lab {
	t.Helper()
	testutil.RequireRoot(t)
	if os.Getenv("STRATA_BIN") == "" {
		t.Setenv("STRATA_BIN", filepath.Join(repoRoot(), "_out", "bin"))
	}
	for _, b := range []string{"strata-agent", "strata-cni"} {
		if _, err := os.Stat(filepath.Join(os.Getenv("STRATA_BIN"), b)); err != nil {
			t.Fatalf("%s not built in %s: run `make build`", b, os.Getenv("STRATA_BIN"))
		}
	}
	s, err := lab.Load(filepath.Join(repoRoot(), "tests", "lab", spec))
	if err != nil {
		t.Fatal(err)
	}
	l := lab.Open(s, lab.Options{ToolsBin: testutil.ToolsBin(), Progress: testWriter{t}})
	_ = l.Down() // a lab left by an earlier run
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab logs were in /run/strata-lab/logs (removed now)")
		}
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := l.Up(ctx); err != nil {
		t.Fatal(err)
	}
	return l
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// matrixOK waits until every pair reaches (agents converge within seconds)
// and returns the matrix.
func matrixOK(t *testing.T, l *lab.Lab) []lab.Cell {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		cells, err := l.Matrix(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		bad := 0
		for _, c := range cells {
			if !c.OK() {
				bad++
			}
		}
		if bad == 0 {
			return cells
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			lab.PrintMatrix(&b, cells, false)
			t.Fatalf("%d pairs do not reach after 60s:\n%s", bad, b.String())
		}
		time.Sleep(2 * time.Second)
	}
}

// All-overlay lab: every pair reaches over VXLAN, and an agent killed with
// SIGKILL and restarted keeps its pods' addresses and traffic.
func TestE2EOverlayLabMatrixAndAgentRestart(t *testing.T) {
	l := upLab(t, "testdata/overlay.yaml")
	cells := matrixOK(t, l)
	for _, c := range cells {
		same := strings.Split(c.From, "/")[0] == strings.Split(c.To, "/")[0]
		if want := map[bool]string{true: "local", false: "vxlan"}[same]; c.Path != want {
			t.Errorf("%s → %s: path %s, want %s", c.From, c.To, c.Path, want)
		}
	}

	pods, err := l.Pods()
	if err != nil {
		t.Fatal(err)
	}
	var src, dst = pods[0], pods[len(pods)-1] // cloud-1 → edge-b1
	ctx := context.Background()
	var loss int
	var pingErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a continuous stream across the restart: 40 pings, 100 ms apart
		defer wg.Done()
		loss, pingErr = l.Ping(ctx, src, dst.IP, 40, 100*time.Millisecond)
	}()
	time.Sleep(500 * time.Millisecond)
	l.KillAgent(dst.Node)
	if err := l.StartAgent(ctx, dst.Node); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if pingErr != nil || loss != 0 {
		t.Errorf("traffic %s → %s across the agent restart: %d%% loss (%v); the kernel datapath must keep forwarding", src.IP, dst.IP, loss, pingErr)
	}
	after, err := l.Pods()
	if err != nil {
		t.Fatal(err)
	}
	if after[len(after)-1].IP != dst.IP {
		t.Errorf("pod address changed across the restart: %s → %s", dst.IP, after[len(after)-1].IP)
	}
	matrixOK(t, l)
}

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/strata-net/strata/cni/server"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/podipam"
	"github.com/strata-net/strata/internal/role"
)

// The cni area: 200 sequential and 200 four-way parallel ADDs and DELs
// through the real cnitool, for strata-cni with its agent and for Debian's
// bridge + host-local, in the same run and the same node namespace.
func init() {
	Register(Area{Name: "cni", Run: runCNI})
}

const (
	cniPods     = 200
	cniParallel = 4
	cniBaseline = "bridge+host-local (Debian containernetworking-plugins)"
)

type cniSetup struct {
	cnitool, binDir, confDir string
	strataNet                string
	node                     nsutil.NS
	pods                     []nsutil.NS
}

func cniToolPath() (string, error) {
	dir := os.Getenv("STRATA_TOOLS_BIN")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "strata", "bin")
	}
	p := filepath.Join(dir, "cnitool")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("cnitool not found at %s: run hack/build-tools.sh or set STRATA_TOOLS_BIN", p)
	}
	return p, nil
}

func runCNI(ctx context.Context, log io.Writer) (out []Result, err error) {
	s := &cniSetup{}
	if s.cnitool, err = cniToolPath(); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "strata-bench-cni-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	s.binDir, s.confDir = filepath.Join(tmp, "bin"), filepath.Join(tmp, "conf")
	for _, d := range []string{s.binDir, s.confDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if b, err := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(s.binDir, "strata-cni"), "github.com/strata-net/strata/cmd/strata-cni").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build strata-cni: %v: %s", err, b)
	}
	for _, p := range []string{"bridge", "host-local"} {
		if err := os.Symlink(filepath.Join("/usr/lib/cni", p), filepath.Join(s.binDir, p)); err != nil {
			return nil, err
		}
	}

	// The agent: podipam over a fresh store, served in this process.
	// The agent's store sits where the agent keeps it by default
	// (--ipam-dir /run/strata, tmpfs). STRATA_BENCH_CNI_STATE_DIR overrides
	// it (e.g. /var/tmp, on disk) to measure that choice.
	stateRoot := os.Getenv("STRATA_BENCH_CNI_STATE_DIR")
	if stateRoot == "" {
		stateRoot = "/run"
	}
	shm, err := os.MkdirTemp(stateRoot, "strata-bench-cni-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(shm) }()
	store, err := ipamstore.Open(filepath.Join(shm, "ipam.db"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = store.Close() }()
	ipam, err := podipam.New(netip.MustParsePrefix("10.244.0.0/16"), store, podipam.Options{})
	if err != nil {
		return nil, err
	}
	timed := &cniTimedRole{IPAM: ipam}
	sock := filepath.Join(tmp, "cni.sock")
	l, err := server.Listen(sock)
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- server.New(timed, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}).Serve(sctx, l)
	}()
	defer func() {
		stop()
		if err := <-served; err != nil {
			fmt.Fprintf(log, "    cni: agent server: %v\n", err)
		}
	}()

	if s.node, err = nsutil.Create(nsutil.OwnedName("cnib-node")); err != nil {
		return nil, err
	}
	defer func() { _ = nsutil.Delete(s.node.Name) }()
	defer func() {
		for _, p := range s.pods {
			_ = nsutil.Delete(p.Name)
		}
	}()
	for i := range cniPods {
		p, err := nsutil.Create(nsutil.OwnedName(fmt.Sprintf("cnib-p%d", i)))
		if err != nil {
			return nil, err
		}
		s.pods = append(s.pods, p)
	}

	strataNet := fmt.Sprintf("strata-bench-%d", os.Getpid())
	s.strataNet = strataNet
	bridgeNet := fmt.Sprintf("bridge-bench-%d", os.Getpid())
	confs := map[string]any{
		strataNet: map[string]any{"cniVersion": "1.0.0", "name": strataNet, "plugins": []any{
			map[string]any{"type": "strata-cni", "socket": sock},
		}},
		bridgeNet: map[string]any{"cniVersion": "1.0.0", "name": bridgeNet, "plugins": []any{
			map[string]any{"type": "bridge", "bridge": "stcbench0", "isGateway": true, "ipam": map[string]any{
				"type": "host-local", "ranges": [][]map[string]string{{{"subnet": "10.245.0.0/16"}}},
				"dataDir": filepath.Join(tmp, "host-local"),
			}},
		}},
	}
	for name, c := range confs {
		b, _ := json.Marshal(c)
		if err := os.WriteFile(filepath.Join(s.confDir, name+".conflist"), b, 0o644); err != nil {
			return nil, err
		}
	}

	// Warm-up (bridge creation, page cache) for both, not measured.
	for _, n := range []string{bridgeNet, strataNet} {
		if _, err := s.run(ctx, "add", n, s.pods[0]); err != nil {
			return nil, err
		}
		if _, err := s.run(ctx, "del", n, s.pods[0]); err != nil {
			return nil, err
		}
	}

	// Sequential: the two plugins alternate pod by pod (and who goes first),
	// so machine-load drift hits both alike.
	fmt.Fprintf(log, "    cni: %d pods, strata-cni and bridge+host-local interleaved, then %d-way each\n", cniPods, cniParallel)
	type runRes struct {
		seq, seqDels, par []float64 // ms
		podsPS, delPS     float64
	}
	var st, br runRes
	nets := [2]string{strataNet, bridgeNet}
	for _, verb := range []string{"add", "del"} {
		for i, pod := range s.pods {
			for k := range 2 {
				n := nets[(i+k)%2]
				ms, err := s.run(ctx, verb, n, pod)
				if err != nil {
					return nil, err
				}
				r := &br
				if n == strataNet {
					r = &st
				}
				if verb == "add" {
					r.seq = append(r.seq, ms)
				} else {
					r.seqDels = append(r.seqDels, ms)
				}
			}
		}
	}
	for _, n := range []string{bridgeNet, strataNet} {
		r := &br
		if n == strataNet {
			r = &st
		}
		t0 := time.Now()
		if r.par, err = s.phase(ctx, "add", n, cniParallel); err != nil {
			return nil, err
		}
		r.podsPS = cniPods / time.Since(t0).Seconds()
		t0 = time.Now()
		if _, err = s.phase(ctx, "del", n, cniParallel); err != nil {
			return nil, err
		}
		r.delPS = cniPods / time.Since(t0).Seconds()
	}

	sp50, sp99 := cniPct(st.seq, 50), cniPct(st.seq, 99)
	bp50, bp99 := cniPct(br.seq, 50), cniPct(br.seq, 99)
	timed.mu.Lock()
	allocs := slices.Clone(timed.ms)
	timed.mu.Unlock()
	detail := func(p string, sv, bv float64) string {
		return fmt.Sprintf("ADD %s strata %.1f ms, bridge %.1f ms; %d sequential pods via cnitool (agent allocate+persist in %s p50 %.1f ms p99 %.1f ms; DEL p50 strata %.1f ms, bridge %.1f ms)",
			p, sv, bv, cniPods, stateRoot, cniPct(allocs, 50), cniPct(allocs, 99), cniPct(st.seqDels, 50), cniPct(br.seqDels, 50))
	}
	out = append(out,
		New("cni.add_p50_ratio_vs_bridge", sp50/bp50, "ratio", "<= 1.0", detail("p50", sp50, bp50)).WithBaseline(cniBaseline, bp50),
		New("cni.add_p99_ratio_vs_bridge", sp99/bp99, "ratio", "<= 1.0", detail("p99", sp99, bp99)).WithBaseline(cniBaseline, bp99),
		New("cni.pods_per_s_parallel4", st.podsPS, "pods/s", "report",
			fmt.Sprintf("%d ADDs %d-way: strata %.1f/s (ADD p50 %.1f ms), bridge %.1f/s (ADD p50 %.1f ms); DELs strata %.1f/s, bridge %.1f/s",
				cniPods, cniParallel, st.podsPS, cniPct(st.par, 50), br.podsPS, cniPct(br.par, 50), st.delPS, br.delPS)).WithBaseline(cniBaseline, br.podsPS),
	)
	return out, nil
}

// run executes cnitool in the node namespace (the child inherits it from
// the locked thread) and returns its wall time in ms.
func (s *cniSetup) run(ctx context.Context, verb, net string, pod nsutil.NS) (float64, error) {
	// Both networks live in the same pods, so each has its own interface.
	ifName := "eth0"
	if net != s.strataNet {
		ifName = "eth1"
	}
	var ms float64
	err := s.node.Do(func() error {
		cmd := exec.CommandContext(ctx, s.cnitool, verb, net, pod.Path)
		cmd.Env = append(os.Environ(), "NETCONFPATH="+s.confDir, "CNI_PATH="+s.binDir, "CNI_IFNAME="+ifName)
		t0 := time.Now()
		b, err := cmd.CombinedOutput()
		ms = float64(time.Since(t0).Microseconds()) / 1000
		if err != nil {
			return fmt.Errorf("cnitool %s %s %s: %v: %s", verb, net, pod.Name, err, b)
		}
		return nil
	})
	return ms, err
}

// phase runs verb for every pod with the given parallelism and returns the
// per-call latencies.
func (s *cniSetup) phase(ctx context.Context, verb, net string, workers int) ([]float64, error) {
	lat := make([]float64, len(s.pods))
	errs := make([]error, len(s.pods))
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				lat[i], errs[i] = s.run(ctx, verb, net, s.pods[i])
			}
		})
	}
	for i := range s.pods {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return lat, nil
}

// cniPct is the p-th percentile (nearest rank).
func cniPct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// cniTimedRole records how long the agent's allocate-and-persist takes.
type cniTimedRole struct {
	*podipam.IPAM
	mu sync.Mutex
	ms []float64
}

func (r *cniTimedRole) Allocate(ctx context.Context, req role.PodRequest) (role.Allocation, error) {
	t0 := time.Now()
	a, err := r.IPAM.Allocate(ctx, req)
	r.mu.Lock()
	r.ms = append(r.ms, float64(time.Since(t0).Microseconds())/1000)
	r.mu.Unlock()
	return a, err
}

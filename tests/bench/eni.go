package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"time"

	cloudnode "github.com/strata-net/strata/cloud-node"
	"github.com/strata-net/strata/cloud-node/ecsapi"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/tests/ecsemu"
)

// The eni area drives the real cloud-node manager against the ECS emulator
// on loopback, through the real SDK: allocation latency from the warm pool
// (persisted to bbolt on disk, as in production) and cloud calls per pod
// under steady churn.
func init() {
	Register(Area{Name: "eni", Run: runENI})
}

// tunedPool is a pool sized for bursty nodes (what a Terway user does by
// raising min_pool_size); its figure goes in the detail, the shipped
// defaults make the value.
var tunedPool = cloudnode.WarmPool{MinIdle: 20, MaxIdle: 40, WarmUp: 40, IdleReclaimAfter: 10 * time.Minute}

func poolString(p cloudnode.WarmPool) string {
	return fmt.Sprintf("min idle %d / max idle %d / warm-up %d / reclaim after %s", p.MinIdle, p.MaxIdle, p.WarmUp, p.IdleReclaimAfter)
}

func runENI(ctx context.Context, log io.Writer) ([]Result, error) {
	shipped := cloudnode.DefaultWarmPool
	// The store sits where the agent keeps it by default (--ipam-dir
	// /run/strata, tmpfs); the same churn on disk is reported in the detail.
	tmpfsRun := func(prefix string, pool cloudnode.WarmPool, prefixes bool) ([]time.Duration, int64, int, error) {
		dir, err := os.MkdirTemp("/run", prefix)
		if err != nil {
			return nil, 0, 0, err
		}
		defer func() { _ = os.RemoveAll(dir) }()
		return eniChurn(ctx, log, dir, pool, prefixes)
	}
	lat, calls, churn, err := tmpfsRun("strata-bench-eni-", shipped, false)
	if err != nil {
		return nil, err
	}
	tunedDetail := "tuned-pool run unavailable"
	if tl, _, _, err := tmpfsRun("strata-bench-eni-tuned-", tunedPool, false); err == nil {
		tunedDetail = fmt.Sprintf("tuned pool (%s): p50 %d us, p99 %d us over %d warm Allocate calls",
			poolString(tunedPool), pct(tl, 0.5).Microseconds(), pct(tl, 0.99).Microseconds(), len(tl))
	} else {
		tunedDetail = "tuned-pool run failed: " + err.Error()
	}
	prefixDetail := "prefix-mode run unavailable"
	if pl, pc, pn, err := tmpfsRun("strata-bench-eni-pfx-", shipped, true); err == nil {
		prefixDetail = fmt.Sprintf("with /28 prefixes (Config.IPv4Prefixes) the same churn made %d calls (%.4f/pod), warm allocate p99 %d us", pc, float64(pc)/float64(pn), pct(pl, 0.99).Microseconds())
	} else {
		prefixDetail = "prefix-mode run failed: " + err.Error()
	}
	memDetail := "disk run unavailable"
	if disk, err := os.MkdirTemp("/var/tmp", "strata-bench-eni-"); err == nil {
		defer func() { _ = os.RemoveAll(disk) }()
		if dl, _, _, err := eniChurn(ctx, log, disk, shipped, false); err == nil {
			memDetail = fmt.Sprintf("same churn with the store on disk (fsync per claim): p50 %d us, p99 %d us", pct(dl, 0.5).Microseconds(), pct(dl, 0.99).Microseconds())
		}
	}
	return []Result{
		New("eni.pool_alloc_p99_us", float64(pct(lat, 0.99).Microseconds()), "us", "< 1000",
			fmt.Sprintf("shipped pool defaults (cloudnode.DefaultWarmPool: %s): p50 %d us, p99 %d us over %d of %d Allocate calls (the rest found the pool empty and waited for the cloud), bbolt store on tmpfs (the agent's default --ipam-dir), in-process, under the shared machine's load; %s; %s",
				poolString(shipped), pct(lat, 0.5).Microseconds(), pct(lat, 0.99).Microseconds(), len(lat), churn, tunedDetail, memDetail)),
		New("eni.api_calls_per_pod", float64(calls)/float64(churn), "calls/pod", "<= 0.1",
			fmt.Sprintf("%d ECS calls (retries included) for %d pods churned as a random walk between 20 and 60 live, shipped pool (%s), batch 10; %s", calls, churn, poolString(shipped), prefixDetail)),
	}, nil
}

func pct(lat []time.Duration, q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }

// eniChurn runs a manager with the given warm pool against a fresh
// emulator with its store in dir (and /28 prefixes if asked) and returns the sorted Allocate latencies and
// the cloud calls made during churn.
func eniChurn(ctx context.Context, log io.Writer, dir string, pool cloudnode.WarmPool, prefixes bool) ([]time.Duration, int64, int, error) {
	const ak, sk = "LTAI-bench", "bench-secret"
	emu, err := ecsemu.New(ecsemu.Config{
		AccessKeyID: ak, AccessKeySecret: sk, RegionID: "cn-hangzhou", VPCCIDR: "10.0.0.0/16",
		InstanceTypes: []ecsemu.InstanceType{{ID: "ecs.g7.4xlarge", ENIQuantity: 8, IPsPerENI: 20}},
		VSwitches:     []ecsemu.VSwitch{{ID: "vsw-node", CIDR: "10.0.1.0/24"}, {ID: "vsw-pod", CIDR: "10.0.64.0/20"}},
		Instances:     []ecsemu.Instance{{ID: "i-bench", Type: "ecs.g7.4xlarge", VSwitchID: "vsw-node"}},
		AttachDelay:   50 * time.Millisecond,
	})
	if err != nil {
		return nil, 0, 0, err
	}
	srv := httptest.NewServer(emu.Handler())
	defer srv.Close()
	api, err := ecsapi.New(ecsapi.Config{RegionID: "cn-hangzhou", Endpoint: srv.URL,
		Credentials: ecsapi.Credentials{AccessKeyID: ak, AccessKeySecret: sk}})
	if err != nil {
		return nil, 0, 0, err
	}
	st, err := ipamstore.Open(filepath.Join(dir, "ipam.db"))
	if err != nil {
		return nil, 0, 0, err
	}
	m, err := cloudnode.NewManager(cloudnode.Config{ClusterID: "bench", InstanceID: "i-bench", InstanceType: "ecs.g7.4xlarge",
		PodVSwitchIDs: []string{"vsw-pod"}, WarmPool: pool, IPv4Prefixes: prefixes}, api, st, nil)
	if err != nil {
		return nil, 0, 0, err
	}
	defer func() { _ = m.Stop(context.Background()) }()
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := m.Start(sctx); err != nil {
		return nil, 0, 0, fmt.Errorf("start manager: %w", err)
	}

	// Steady churn around 40 live pods: release a random one, add a new one.
	rng := rand.New(rand.NewPCG(1, 2))
	var live []role.PodRequest
	id := 0
	next := func() role.PodRequest {
		id++
		return role.PodRequest{ContainerID: fmt.Sprintf("bench%06d", id), IfName: "eth0"}
	}
	for range 40 {
		r := next()
		if _, err := m.Allocate(sctx, r); err != nil {
			return nil, 0, 0, err
		}
		live = append(live, r)
	}
	// let the refill after the ramp finish before counting
	deadline := time.Now().Add(30 * time.Second)
	for m.Idle() < pool.MinIdle && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	const churn = 2000
	calls0 := api.Calls()
	var lat []time.Duration
	// a random walk between 20 and 60 live pods: each step ends one pod or
	// starts one (a churned pod is one allocation)
	pods, cold := 0, 0
	for pods < churn {
		if len(live) >= 60 || (len(live) > 20 && rng.IntN(2) == 0) {
			i := rng.IntN(len(live))
			if err := m.Release(sctx, live[i].ContainerID, live[i].IfName); err != nil {
				return nil, 0, 0, err
			}
			live = slices.Delete(live, i, i+1)
			continue
		}
		r := next()
		warm := m.Idle() > 0 // an empty pool waits for the cloud: not a warm-pool allocation
		t0 := time.Now()
		if _, err := m.Allocate(sctx, r); err != nil {
			return nil, 0, 0, err
		}
		if warm {
			lat = append(lat, time.Since(t0))
		} else {
			cold++
		}
		pods++
		live = append(live, r)
	}
	calls := api.Calls() - calls0
	slices.Sort(lat)
	fmt.Fprintf(log, "    store in %s, pool %s, prefixes %v: warm allocate p50 %v p99 %v max %v over %d (%d waited for the cloud); %d cloud calls for %d pods\n",
		dir, poolString(pool), prefixes, pct(lat, 0.5), pct(lat, 0.99), lat[len(lat)-1], len(lat), cold, calls, churn)
	return lat, calls, pods, nil
}

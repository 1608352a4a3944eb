package cloudnode_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cloudnode "github.com/strata-net/strata/cloud-node"
	"github.com/strata-net/strata/cloud-node/ecsapi"
	"github.com/strata-net/strata/cloud-node/metadata"
	"github.com/strata-net/strata/cni/plugin"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/tests/ecsemu"
)

const ak, sk = "LTAI-node", "node-secret"

type env struct {
	emu   *ecsemu.Emulator
	url   string
	api   *ecsapi.Client
	state string
}

func newEnv(t *testing.T, mut func(*ecsemu.Config)) *env {
	t.Helper()
	cfg := ecsemu.Config{
		AccessKeyID: ak, AccessKeySecret: sk, RegionID: "cn-hangzhou", VPCCIDR: "10.0.0.0/16",
		InstanceTypes: []ecsemu.InstanceType{{ID: "ecs.g7.xlarge", ENIQuantity: 5, IPsPerENI: 15}},
		VSwitches:     []ecsemu.VSwitch{{ID: "vsw-node", CIDR: "10.0.1.0/24"}, {ID: "vsw-pod", CIDR: "10.0.64.0/20"}},
		Instances:     []ecsemu.Instance{{ID: "i-node1", Type: "ecs.g7.xlarge", VSwitchID: "vsw-node", PrimaryIP: "10.0.1.11"}},
		AttachDelay:   20 * time.Millisecond, Seed: 42,
	}
	if mut != nil {
		mut(&cfg)
	}
	emu, err := ecsemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu.Handler())
	t.Cleanup(func() { emu.Wait(); srv.Close() })
	return &env{emu: emu, url: srv.URL, api: newAPI(t, srv.URL, 10*time.Second), state: filepath.Join(t.TempDir(), "ipam.db")}
}

func newAPI(t *testing.T, url string, timeout time.Duration) *ecsapi.Client {
	limits := map[string]ecsapi.Limit{}
	for a := range ecsapi.DefaultLimits {
		limits[a] = ecsapi.Limit{QPS: 1000, Burst: 100}
	}
	c, err := ecsapi.New(ecsapi.Config{RegionID: "cn-hangzhou", Endpoint: url,
		Credentials: ecsapi.Credentials{AccessKeyID: ak, AccessKeySecret: sk},
		Timeout:     timeout, MaxAttempts: 10, BackoffBase: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func managerConfig() cloudnode.Config {
	return cloudnode.Config{ClusterID: "c1", InstanceID: "i-node1", InstanceType: "ecs.g7.xlarge",
		PodVSwitchIDs: []string{"vsw-pod"}, WarmPool: cloudnode.WarmPool{MinIdle: 5, MaxIdle: 15, WarmUp: 10, IdleReclaimAfter: time.Hour},
		PollInterval: 10 * time.Millisecond, AttachTimeout: 30 * time.Second}
}

func (e *env) manager(t *testing.T, cfg cloudnode.Config, api *ecsapi.Client) *cloudnode.Manager {
	t.Helper()
	st, err := ipamstore.Open(e.state)
	if err != nil {
		t.Fatal(err)
	}
	if api == nil {
		api = e.api
	}
	m, err := cloudnode.NewManager(cfg, api, st, nil)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		m.Stop(context.Background())
		t.Fatal(err)
	}
	return m
}

func req(i int) role.PodRequest {
	return role.PodRequest{ContainerID: fmt.Sprintf("c%04d", i), IfName: "eth0", PodNamespace: "default", PodName: fmt.Sprintf("p%d", i)}
}

// account checks cloud IPs on this node's ENIs == store + pool, disjoint,
// with every ENI InUse (no orphans).
func account(t *testing.T, e *env, m *cloudnode.Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// quiesce: no cloud call in flight, then one reconcile from the cloud
	m.Kill()
	if err := m.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	e.emu.Wait()
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	cloud := map[netip.Addr]string{}
	for _, x := range e.emu.ENIs() {
		if x.Type == "Primary" {
			continue
		}
		if x.Status != ecsemu.StatusInUse || x.InstanceID != "i-node1" {
			t.Errorf("ENI %s is %s on %q: an orphan the manager did not collect", x.ID, x.Status, x.InstanceID)
		}
		for _, ip := range x.Secondary {
			cloud[ip] = x.ID
		}
		for _, p := range x.Prefixes {
			for a := p.Addr(); p.Contains(a); a = a.Next() {
				cloud[a] = x.ID
			}
		}
	}
	local := map[netip.Addr]int{}
	for _, ip := range snap.Store {
		local[ip]++
	}
	for _, ip := range snap.Free {
		local[ip]++
	}
	dups, leaks, ghosts := 0, 0, 0
	for ip, n := range local {
		if n > 1 {
			dups++
			t.Errorf("duplicate: %s is both allocated and free", ip)
		}
		if _, ok := cloud[ip]; !ok {
			ghosts++
			t.Errorf("ghost: %s is in the store or pool but not on any ENI", ip)
		}
	}
	for ip := range cloud {
		if local[ip] == 0 {
			leaks++
			t.Errorf("leak: %s is on an ENI but neither allocated nor free", ip)
		}
	}
	t.Logf("accounting: cloud %d = store %d + pool %d; leaks %d, duplicates %d, ghosts %d",
		len(cloud), len(snap.Store), len(snap.Free), leaks, dups, ghosts)
}

func TestConfigValidation(t *testing.T) {
	_, err := cloudnode.NewManager(cloudnode.Config{BatchSize: 11, WarmPool: cloudnode.WarmPool{MinIdle: 5, MaxIdle: 1}}, nil, nil, nil)
	if err == nil {
		t.Fatal("want an error")
	}
	for _, field := range []string{"ClusterID", "InstanceID", "PodVSwitchIDs", "BatchSize", "MinIdle"} {
		if !contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestAllocateFromWarmPoolNeverCallsCloud(t *testing.T) {
	e := newEnv(t, nil)
	m := e.manager(t, managerConfig(), nil)
	defer m.Stop(context.Background())
	if m.Idle() < 10 {
		t.Fatalf("warm-up left %d idle IPs, want 10", m.Idle())
	}
	if !m.NodeAddr().IsValid() {
		t.Fatal("no node address reserved")
	}
	before := e.emu.Calls("")
	ctx := context.Background()
	for i := range 4 { // stays above MinIdle: no refill
		a, err := m.Allocate(ctx, req(i))
		if err != nil {
			t.Fatal(err)
		}
		if a.Datapath != role.DatapathVethRouted || a.Gateway != cloudnode.PodGateway || a.Addr.Bits() != 32 {
			t.Fatalf("allocation: %+v", a)
		}
		again, err := m.Allocate(ctx, req(i))
		if err != nil || again.Addr != a.Addr {
			t.Fatalf("retried ADD got %v (%v), want %v", again.Addr, err, a.Addr)
		}
	}
	if n := e.emu.Calls("") - before; n != 0 {
		t.Fatalf("allocating from a warm pool made %d cloud calls", n)
	}
	if len(m.OwnedPrefixes()) != 5 { // 4 pods + the node's own address
		t.Fatalf("owned prefixes: %v", m.OwnedPrefixes())
	}
	account(t, e, m)
}

func TestFortyPodsAndRefill(t *testing.T) {
	e := newEnv(t, nil)
	cfg := managerConfig()
	cfg.IdleReclaimAfter = 50 * time.Millisecond
	m := e.manager(t, cfg, nil)
	defer m.Stop(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	allocateDistinct(ctx, t, m, 40)
	// refill: back to MinIdle after the burst
	waitFor(t, func() bool { return m.Idle() >= cfg.MinIdle }, "pool refilled to MinIdle")
	enis := 0
	for _, x := range e.emu.ENIs() {
		if x.Type == "Secondary" {
			enis++
		}
	}
	if enis < 4 {
		t.Fatalf("40 pods + 5 idle on 14-IP ENIs need 4 ENIs, have %d", enis)
	}
	for i := range 40 {
		if err := m.Release(ctx, req(i).ContainerID, "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Release(ctx, "unknown", "eth0"); err != nil {
		t.Fatalf("releasing an unknown attachment: %v", err)
	}
	// idle IPs above MaxIdle go back to the cloud
	waitFor(t, func() bool { return m.Idle() <= cfg.MaxIdle }, "idle IPs released down to MaxIdle")
	account(t, e, m)
}

// allocateDistinct allocates pods 0..n-1 and fails on an error or an
// address handed out twice; it returns the addresses.
func allocateDistinct(ctx context.Context, t *testing.T, m *cloudnode.Manager, n int) map[netip.Prefix]bool {
	t.Helper()
	seen := map[netip.Prefix]bool{}
	for i := range n {
		a, err := m.Allocate(ctx, req(i))
		if err != nil {
			t.Fatal(err)
		}
		if seen[a.Addr] {
			t.Fatalf("duplicate address %s", a.Addr)
		}
		seen[a.Addr] = true
	}
	return seen
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFaultsNoLeaksNoDuplicates(t *testing.T) { faultCycles(t, false) }

// The same with /28 prefixes: whole prefixes are assigned and given back
// under the same faults.
func TestFaultsNoLeaksNoDuplicatesPrefixes(t *testing.T) { faultCycles(t, true) }

func faultCycles(t *testing.T, prefixes bool) {
	e := newEnv(t, func(c *ecsemu.Config) {
		c.Faults = ecsemu.Faults{ThrottleRate: 0.3, TimeoutRate: 0.05, Timeout: 2 * time.Second}
	})
	api := newAPI(t, e.url, 300*time.Millisecond)
	cfg := managerConfig()
	// a tiny pool with a short idle time makes the cycles churn the cloud
	// too: assigns and unassigns under throttling and time-outs
	cfg.MinIdle, cfg.MaxIdle, cfg.WarmUp, cfg.BatchSize = 1, 2, 1, 2
	cfg.IdleReclaimAfter = time.Millisecond
	cfg.IPv4Prefixes = prefixes
	m := e.manager(t, cfg, api)
	defer m.Stop(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	live := map[netip.Prefix]string{}
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// waves of 5 held at once: 4 workers x 10 waves x 5 = 200 cycles,
			// up to 20 live pods, so the pool grows and shrinks in the cloud
			for wave := range 10 {
				var held []role.PodRequest
				for i := range 5 {
					r := req(w*1000 + wave*10 + i)
					a, err := m.Allocate(ctx, r)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					if other, dup := live[a.Addr]; dup {
						mu.Unlock()
						errs <- fmt.Errorf("%s handed to %s and %s", a.Addr, other, r.ContainerID)
						return
					}
					live[a.Addr] = r.ContainerID
					mu.Unlock()
					held = append(held, r)
					_ = a
				}
				for _, r := range held {
					a, _ := m.Allocate(ctx, r) // idempotent: the same address
					mu.Lock()
					delete(live, a.Addr)
					mu.Unlock()
					if err := m.Release(ctx, r.ContainerID, r.IfName); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	e.emu.SetFaults(ecsemu.Faults{})
	account(t, e, m)
	t.Logf("cloud calls: %d (with retries), of which %d assign and %d unassign", e.emu.Calls(""), e.emu.Calls("AssignPrivateIpAddresses"), e.emu.Calls("UnassignPrivateIpAddresses"))
}

func TestKillMidOperationAndRestart(t *testing.T) {
	e := newEnv(t, func(c *ecsemu.Config) { c.Faults = ecsemu.Faults{Latency: 30 * time.Millisecond} })
	cfg := managerConfig()
	cfg.MinIdle, cfg.MaxIdle, cfg.WarmUp, cfg.BatchSize = 2, 4, 2, 2
	for round := range 6 {
		st, err := ipamstore.Open(e.state)
		if err != nil {
			t.Fatal(err)
		}
		m, err := cloudnode.NewManager(cfg, e.api, st, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if err := m.Start(ctx); err != nil {
			t.Fatalf("round %d start: %v", round, err)
		}
		// keep some pods, drive the pool into create/assign, then kill at a
		// different moment each round
		for i := range 4 + round {
			if _, err := m.Allocate(ctx, req(round*100+i)); err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 {
				_ = m.Release(ctx, req(round*100+i).ContainerID, "eth0")
			}
		}
		time.Sleep(time.Duration(round*17) * time.Millisecond)
		m.Kill()
		cancel()
		st.Close()
	}
	// the last incarnation reconciles and accounts for everything
	e.emu.SetFaults(ecsemu.Faults{})
	m := e.manager(t, cfg, nil)
	defer m.Stop(context.Background())
	recs, _ := m.Allocations(context.Background())
	for _, r := range recs {
		if r.ContainerID == cloudnode.NodeContainerID {
			t.Fatal("the node's own address is listed as a pod allocation")
		}
	}
	if len(recs) == 0 {
		t.Fatal("allocations lost across restarts")
	}
	account(t, e, m)
}

func TestStartAdoptsOwnENIsAndCollectsOrphans(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	mine := map[string]string{cloudnode.TagCluster: "c1", cloudnode.TagNode: "i-node1"}
	adopted, err := e.api.CreateENI(ctx, "vsw-pod", "", 4, mine, ecsapi.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.api.AttachENI(ctx, adopted.ID, "i-node1"); err != nil {
		t.Fatal(err)
	}
	e.emu.Wait()
	orphan, err := e.api.CreateENI(ctx, "vsw-pod", "", 2, mine, ecsapi.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.api.CreateENI(ctx, "vsw-pod", "", 0, map[string]string{cloudnode.TagCluster: "other", cloudnode.TagNode: "i-node1"}, ecsapi.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	cfg := managerConfig()
	cfg.WarmUp, cfg.MinIdle = 3, 1 // the adopted ENI's 4 IPs cover it: no new ENI
	m := e.manager(t, cfg, nil)
	defer m.Stop(ctx)
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.ENIs[adopted.ID]) != 4 || len(snap.ENIs) != 1 {
		t.Fatalf("want the tagged InUse ENI adopted with its 4 IPs and no other, have %v", snap.ENIs)
	}
	ids := map[string]bool{}
	for _, x := range e.emu.ENIs() {
		ids[x.ID] = true
	}
	if ids[orphan.ID] {
		t.Errorf("orphan ENI %s (ours, never attached) was not deleted", orphan.ID)
	}
	if !ids[other.ID] {
		t.Errorf("ENI %s of another cluster was deleted", other.ID)
	}
}

func TestConcurrentSameAttachmentGetsOneAddress(t *testing.T) {
	e := newEnv(t, nil)
	m := e.manager(t, managerConfig(), nil)
	defer m.Stop(context.Background())
	ctx := context.Background()
	before := m.Idle()
	var wg sync.WaitGroup
	addrs := make([]netip.Prefix, 8)
	for i := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := m.Allocate(ctx, req(1))
			if err != nil {
				t.Error(err)
			}
			addrs[i] = a.Addr
		}()
	}
	wg.Wait()
	for _, a := range addrs {
		if a != addrs[0] {
			t.Fatalf("one attachment got several addresses: %v", addrs)
		}
	}
	if after := m.Idle(); after != before-1 {
		t.Fatalf("idle went %d -> %d: picked addresses leaked", before, after)
	}
}

// fakeDatapath names every ENI's link and table as the kernel side would.
type fakeDatapath struct{}

func (fakeDatapath) ENIUp(_ context.Context, e cloudnode.ENIInfo) (string, int, error) {
	return "eth-" + e.ID[len(e.ID)-4:], 1007, nil
}
func (fakeDatapath) ENIDown(context.Context, cloudnode.ENIInfo) error { return nil }
func (fakeDatapath) Prune(context.Context, map[netip.Addr]bool) error { return nil }

// With ipvlan the pod is a slave of its ENI: the vSwitch gateway is its
// default, the ENI's primary IP its way to the host for host-bound CIDRs;
// the plugin's plan (cni/plugin) consumes exactly these fields. The gateway
// is what the metadata service says, as on ECS the .253 of the vSwitch
// (10.0.79.253 of 10.0.64.0/20), not its first host.
func TestIPVlanAllocationNamesENIGatewayAndHost(t *testing.T) {
	e := newEnv(t, nil)
	hostBound := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("10.0.1.0/24")}
	for _, ipvlan := range []bool{false, true} {
		cfg := managerConfig()
		cfg.IPVlan, cfg.HostBound, cfg.VPCCIDR = ipvlan, hostBound, netip.MustParsePrefix("10.0.0.0/16")
		cfg.ENIGateway = metadata.New(e.url + "/i/i-node1").Gateway
		st, err := ipamstore.Open(e.state)
		if err != nil {
			t.Fatal(err)
		}
		m, err := cloudnode.NewManager(cfg, e.api, st, fakeDatapath{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		a, err := m.Allocate(ctx, req(1))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var eni ecsemu.ENI
		for _, x := range e.emu.ENIs() {
			for _, ip := range x.Secondary {
				if ip == a.Addr.Addr() {
					eni = x
				}
			}
		}
		if a.ENILink == "" || a.Table != 1007 || a.ENIMAC != eni.MAC {
			t.Fatalf("ipvlan=%v: allocation %+v lacks its ENI (%s, %s)", ipvlan, a, eni.ID, eni.MAC)
		}
		if ipvlan {
			if a.Datapath != role.DatapathIPVlan || a.Gateway != netip.MustParseAddr("10.0.79.253") || a.HostVia != eni.PrimaryIP ||
				fmt.Sprint(a.Routes) != fmt.Sprint(hostBound) || fmt.Sprint(a.Direct) != "[10.0.0.0/16]" {
				t.Fatalf("ipvlan allocation %+v: want gateway 10.0.79.253 (from metadata), host via %s, routes %v, the VPC direct", a, eni.PrimaryIP, hostBound)
			}
		} else if a.Datapath != role.DatapathVethRouted || a.Gateway != cloudnode.PodGateway || a.HostVia.IsValid() || a.Routes != nil || a.Direct != nil {
			t.Fatalf("veth allocation %+v", a)
		}
		_ = m.Stop(context.Background())
	}
}

// A metadata service that gives no gateway for an ENI is an error naming the
// MAC and the fix, and the manager keeps no guessed gateway: it does not
// start on it, and a manager that needs one cannot be built without a way to
// read it.
func TestENIGatewayMissingFromMetadataIsAnError(t *testing.T) {
	e := newEnv(t, nil)
	e.emu.SetFaults(ecsemu.Faults{OmitENIMetadata: []string{"gateway"}})
	cfg := managerConfig()
	cfg.IPVlan = true
	if _, err := cloudnode.NewManager(cfg, e.api, nil, fakeDatapath{}); err == nil || !strings.Contains(err.Error(), "ENIGateway") {
		t.Fatalf("a manager with a datapath and no ENIGateway: %v, want an error naming ENIGateway", err)
	}
	cfg.ENIGateway = metadata.New(e.url + "/i/i-node1").Gateway
	st, err := ipamstore.Open(e.state)
	if err != nil {
		t.Fatal(err)
	}
	m, err := cloudnode.NewManager(cfg, e.api, st, fakeDatapath{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = m.Start(ctx)
	var mac string
	n := 0
	for _, x := range e.emu.ENIs() {
		if x.Type == "Secondary" {
			mac = x.MAC
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d ENIs created: an ENI that cannot be adopted must stop the pool creating more", n)
	}
	if err == nil || mac == "" || !strings.Contains(err.Error(), mac) || !strings.Contains(err.Error(), "gateway") || !strings.Contains(err.Error(), "--metadata-url") {
		t.Fatalf("start with no gateway in metadata: %v; want an error naming the gateway, MAC %s and --metadata-url", err, mac)
	}
	t.Logf("start: %v", err)
	if snap, _ := m.Snapshot(); len(snap.Free) != 0 {
		t.Fatalf("pool filled from an ENI with no known gateway: %v", snap.Free)
	}
}

// The plugin's per-pod veth fallback must use the gateway veth pods get here.
func TestPluginFallbackGatewayIsPodGateway(t *testing.T) {
	if plugin.VethGateway != cloudnode.PodGateway {
		t.Fatalf("cni/plugin.VethGateway %s != cloudnode.PodGateway %s", plugin.VethGateway, cloudnode.PodGateway)
	}
}

// The pool in prefix mode against the emulator and the real SDK: only /28s
// are asked for, every pod address lies in one of this node's prefixes, and
// idle prefixes go back whole.
func TestPrefixPool(t *testing.T) {
	e := newEnv(t, nil)
	cfg := managerConfig()
	cfg.IPv4Prefixes, cfg.IdleReclaimAfter, cfg.MaxIdle = true, 50*time.Millisecond, 16
	m := e.manager(t, cfg, nil)
	defer m.Stop(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	assigns := e.emu.Calls("AssignPrivateIpAddresses")
	seen := allocateDistinct(ctx, t, m, 40)
	waitFor(t, func() bool { return m.Idle() >= cfg.MinIdle }, "pool refilled to MinIdle")
	prefixes := func() (n int) {
		for _, x := range e.emu.ENIs() {
			if x.Type != "Primary" {
				if len(x.Secondary) != 0 {
					t.Fatalf("ENI %s holds single secondaries %v in prefix mode", x.ID, x.Secondary)
				}
				n += len(x.Prefixes)
			}
		}
		return n
	}
	for a := range seen {
		in := false
		for _, x := range e.emu.ENIs() {
			for _, p := range x.Prefixes {
				in = in || p.Contains(a.Addr())
			}
		}
		if !in {
			t.Fatalf("pod address %s is in none of the node's prefixes", a)
		}
	}
	// 41 addresses (40 pods, the node) + MinIdle: 3 prefixes, one call each
	if n, calls := prefixes(), e.emu.Calls("AssignPrivateIpAddresses")-assigns; n < 3 || calls > n {
		t.Fatalf("%d prefixes in %d assign calls: want >= 3 prefixes, one call each at most", n, calls)
	}
	// peers route the prefixes, not 40 /32s
	owned := m.OwnedPrefixes()
	if len(owned) != prefixes() {
		t.Fatalf("owned prefixes %v: want exactly the node's %d /28s", owned, prefixes())
	}
	for _, p := range owned {
		if p.Bits() != 28 {
			t.Fatalf("owned prefixes %v: want /28s only", owned)
		}
	}
	for i := range 40 {
		if err := m.Release(ctx, req(i).ContainerID, "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	// 47 free: idle prefixes go back whole until one more would leave the
	// pool under MinIdle (or at most MaxIdle are idle)
	waitFor(t, func() bool { return prefixes() <= 1 || m.Idle() <= cfg.MaxIdle }, "idle prefixes given back")
	account(t, e, m)
}

// One DescribeNetworkInterfaces reply that omits an ENI frees nothing: the
// pod's allocation stays, and when the ENI is listed again its address is
// not back in the pool (before, the record was dropped and the next
// resync handed the live address out again).
func TestOmittedENIFreesNothing(t *testing.T) {
	e := newEnv(t, nil)
	m := e.manager(t, managerConfig(), nil)
	defer m.Stop(context.Background())
	ctx := context.Background()
	a, err := m.Allocate(ctx, req(1))
	if err != nil {
		t.Fatal(err)
	}
	var eni string
	for _, x := range e.emu.ENIs() {
		for _, ip := range x.Secondary {
			if ip == a.Addr.Addr() {
				eni = x.ID
			}
		}
	}
	creates := e.emu.Calls("CreateNetworkInterface")
	before, _ := m.Snapshot()
	e.emu.SetFaults(ecsemu.Faults{OmitENIs: []string{eni}})
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Reconcile(ctx); err != nil { // and the pool pass after it
		t.Fatal(err)
	}
	during, _ := m.Snapshot()
	if !slices.Equal(during.ENIs[eni], before.ENIs[eni]) || !slices.Equal(during.Free, before.Free) {
		t.Errorf("after a listing that omitted ENI %s the manager holds %v free %v; before it held %v free %v", eni, during.ENIs[eni], during.Free, before.ENIs[eni], before.Free)
	}
	if n := e.emu.Calls("CreateNetworkInterface") - creates; n > 0 {
		t.Errorf("a listing that omitted ENI %s made the pool create %d more ENIs", eni, n)
	}
	e.emu.SetFaults(ecsemu.Faults{})
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(snap.Store, a.Addr.Addr()) {
		t.Fatalf("pod's %s dropped from the store after one reply omitted ENI %s", a.Addr, eni)
	}
	if slices.Contains(snap.Free, a.Addr.Addr()) {
		t.Fatalf("live pod address %s is back in the free pool: a duplicate IP", a.Addr)
	}
}

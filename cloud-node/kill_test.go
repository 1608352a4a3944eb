package cloudnode_test

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cloudnode "github.com/strata-net/strata/cloud-node"
	"github.com/strata-net/strata/internal/ipamstore"
)

// The manager as its own process, for TestSIGKILLMidOperationAndRestart:
// the test binary re-executed with these variables set.
const (
	envKillHelper = "STRATA_CLOUDNODE_KILL_HELPER" // the emulator's URL
	envKillState  = "STRATA_CLOUDNODE_KILL_STATE"  // the bbolt store
	envKillWork   = "STRATA_CLOUDNODE_KILL_WORK"   // "<first pod>,<pods>,<release: 0|1>"
)

func killConfig() cloudnode.Config {
	cfg := managerConfig()
	// a small pool that churns: refills and idle releases at every step
	cfg.MinIdle, cfg.MaxIdle, cfg.WarmUp, cfg.BatchSize = 2, 4, 2, 2
	cfg.IdleReclaimAfter = time.Millisecond
	return cfg
}

// TestKillHelperProcess is the helper: it starts a manager on the store and
// the emulator, allocates (and maybe releases) pods, printing each answered
// call, then waits to be killed. Run alone it does nothing.
func TestKillHelperProcess(t *testing.T) {
	url := os.Getenv(envKillHelper)
	if url == "" {
		t.Skip("helper process for TestSIGKILLMidOperationAndRestart")
	}
	fail := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", a...)
		os.Exit(2)
	}
	var first, pods, release int
	if _, err := fmt.Sscanf(os.Getenv(envKillWork), "%d,%d,%d", &first, &pods, &release); err != nil {
		fail("bad %s: %v", envKillWork, err)
	}
	st, err := ipamstore.Open(os.Getenv(envKillState))
	if err != nil {
		fail("open store: %v", err)
	}
	m, err := cloudnode.NewManager(killConfig(), newAPI(t, url, 10*time.Second), st, nil)
	if err != nil {
		fail("manager: %v", err)
	}
	ctx := context.Background()
	if err := m.Start(ctx); err != nil {
		fail("start: %v", err)
	}
	fmt.Println("started")
	for i := first; i < first+pods; i++ {
		a, err := m.Allocate(ctx, req(i))
		if err != nil {
			fail("allocate: %v", err)
		}
		fmt.Printf("alloc %s %s\n", req(i).ContainerID, a.Addr.Addr())
	}
	for i := first; release == 1 && i < first+pods; i++ {
		fmt.Printf("releasing %s\n", req(i).ContainerID) // unanswered when killed: either outcome is right
		if err := m.Release(ctx, req(i).ContainerID, "eth0"); err != nil {
			fail("release: %v", err)
		}
		fmt.Printf("release %s\n", req(i).ContainerID)
	}
	fmt.Println("idle")
	select {} // until SIGKILL
}

// helper is one run of the manager process.
type helper struct {
	cmd   *exec.Cmd
	lines chan string
	exit  chan error
	mu    sync.Mutex
	out   []string
	errb  strings.Builder
}

func startHelper(t *testing.T, e *env, work string) *helper {
	t.Helper()
	h := &helper{lines: make(chan string, 1024), exit: make(chan error, 1)}
	h.cmd = exec.Command(os.Args[0], "-test.run=^TestKillHelperProcess$", "-test.count=1")
	h.cmd.Env = append(os.Environ(), envKillHelper+"="+e.url, envKillState+"="+e.state, envKillWork+"="+work)
	h.cmd.Stderr = &h.errb
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.mu.Lock()
			h.out = append(h.out, sc.Text())
			h.mu.Unlock()
		}
		h.exit <- h.cmd.Wait()
	}()
	t.Cleanup(func() { _ = h.cmd.Process.Kill() })
	return h
}

// kill SIGKILLs the process and waits until it is gone.
func (h *helper) kill(t *testing.T) []string {
	t.Helper()
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL the manager: %v", err)
	}
	err := <-h.exit
	if ws, ok := h.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the manager ended with %v, not by SIGKILL; stderr:\n%s", err, h.errb.String())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.out
}

// The acceptance's "kill the manager in the middle of an operation and
// restart it", with a real process: each round gates one cloud call in the
// emulator, SIGKILLs the manager process while the emulator holds it, and
// restarts on the same bbolt store and cloud. At the end, every answered
// allocation is still held with its address, none is held twice, and the
// cloud's IPs are exactly the store plus the pool.
func TestSIGKILLMidOperationAndRestart(t *testing.T) {
	if os.Getenv(envKillHelper) != "" {
		t.Skip("inside the helper")
	}
	e := newEnv(t, nil)
	rounds := []struct {
		action    string
		afterWork bool
		work      string // first pod, pods, release
		what      string
	}{
		{"CreateNetworkInterface", true, "0,0,0", "ENI created, never attached: an orphan"},
		{"AttachNetworkInterface", true, "0,0,0", "attach accepted, never waited for"},
		{"AssignPrivateIpAddresses", true, "0,0,0", "IPs assigned, never pooled"},
		{"AssignPrivateIpAddresses", false, "300,10,0", "assign in flight while pods wait"},
		{"UnassignPrivateIpAddresses", true, "400,6,1", "idle IPs unassigned, pool not told"},
		{"CreateNetworkInterface", false, "500,20,0", "a second ENI in flight while pods wait"},
	}
	live := map[string]netip.Addr{} // answered and not released, over all rounds
	for i, r := range rounds {
		held, release := e.emu.Gate(r.action, r.afterWork)
		h := startHelper(t, e, r.work)
		select {
		case <-held:
		case err := <-h.exit:
			t.Fatalf("round %d (%s): the manager exited before calling %s: %v\n%s", i, r.what, r.action, err, h.errb.String())
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d (%s): %s was never called", i, r.what, r.action)
		}
		out := h.kill(t)
		release(false) // held before its work: never done; after: done, unanswered
		e.emu.Wait()
		for _, l := range out {
			f := strings.Fields(l)
			switch {
			case len(f) == 3 && f[0] == "alloc":
				live[f[1]] = netip.MustParseAddr(f[2])
			case len(f) == 2 && f[0] == "releasing":
				// a release the kill cut short may or may not have happened
				delete(live, f[1])
			}
		}
		t.Logf("round %d: killed during %s (%s) after %d output lines", i, r.action, r.what, len(out))
	}

	// the last incarnation, in-process, reconciles and accounts for all
	m := e.manager(t, killConfig(), nil)
	defer m.Stop(context.Background())
	recs, err := m.Allocations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	byIP := map[netip.Addr]string{}
	stored := map[string]netip.Addr{}
	for _, a := range recs {
		if other, dup := byIP[a.Addr.Addr()]; dup {
			t.Errorf("duplicate: %s held by %s and %s", a.Addr.Addr(), other, a.ContainerID)
		}
		byIP[a.Addr.Addr()] = a.ContainerID
		stored[a.ContainerID] = a.Addr.Addr()
	}
	for id, ip := range live {
		if got, ok := stored[id]; !ok || got != ip {
			t.Errorf("answered allocation %s=%s lost or moved across SIGKILL (store has %v)", id, ip, got)
		}
	}
	if len(live) == 0 {
		t.Fatal("no allocation was answered in any round: the rounds exercised nothing")
	}
	t.Logf("%d answered allocations survived %d SIGKILLs; store holds %d", len(live), len(rounds), len(recs))
	account(t, e, m)
}

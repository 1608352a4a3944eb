// Package routerd starts BIRD 2 and FRR inside test namespaces without
// systemd: it writes their configuration, runs the daemons with
// `ip netns exec`, waits for sessions, queries RIB and kernel, and stops them
// by PID when the test ends.
package routerd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/nsutil"
)

// Neighbor is one BGP session of a daemon.
type Neighbor struct {
	Name     string // BIRD protocol name; ignored by FRR
	Address  string
	ASN      uint32
	Port     int // the neighbour's port when it is not 179
	Password string
	// HoldTime in seconds (0: daemon default). Keepalive is a third.
	HoldTime        int
	GracefulRestart bool
	// RestartTime is the GR restart time in seconds BIRD waits in helper
	// mode (0: default 120).
	RestartTime int
}

// KernelRoutes dumps the routes of protocol proto (0: all) in the main table
// of ns.
func KernelRoutes(ns nsutil.NS, proto netlink.RouteProtocol) ([]netlink.Route, error) {
	var out []netlink.Route
	err := ns.Do(func() error {
		var err error
		mask := uint64(netlink.RT_FILTER_TABLE)
		if proto != 0 {
			mask |= netlink.RT_FILTER_PROTOCOL
		}
		out, err = nlretry.Dump(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: proto, Table: syscall.RT_TABLE_MAIN}, mask)
		})
		return err
	})
	return out, err
}

// KernelRoute finds the main-table route for prefix in ns, or nil.
func KernelRoute(ns nsutil.NS, prefix netip.Prefix) (*netlink.Route, error) {
	rs, err := KernelRoutes(ns, 0)
	if err != nil {
		return nil, err
	}
	for _, r := range rs {
		if r.Dst != nil && r.Dst.String() == prefix.String() {
			return &r, nil
		}
	}
	return nil, nil
}

// Eventually polls cond until it returns nil or timeout passes, then fails
// the test with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := Wait(context.Background(), timeout, cond); err != nil {
		t.Fatalf("%s: not true after %s: %v", what, timeout, err)
	}
}

// Wait polls cond every 100 ms until it returns nil or timeout passes.
func Wait(ctx context.Context, timeout time.Duration, cond func() error) error {
	return WaitEvery(ctx, timeout, 100*time.Millisecond, cond)
}

// WaitEvery polls cond every interval until it returns nil or timeout
// passes, and then returns cond's last error.
func WaitEvery(ctx context.Context, timeout, interval time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(interval):
		}
	}
}

func run(argv ...string) (string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// daemonDir makes a directory other users (FRR drops to user frr) can reach.
func daemonDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("make daemon dir: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("chmod daemon dir: %v", err)
	}
	return dir
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// stopPID sends SIGTERM, waits, then SIGKILL.
func stopPID(pid int) {
	if pid <= 0 {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 50; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

func waitPIDFile(path string) (int, error) {
	var pid int
	err := Wait(context.Background(), 20*time.Second, func() error {
		p, err := readPID(path)
		if err != nil {
			return err
		}
		if p <= 0 || syscall.Kill(p, 0) != nil {
			return errors.New("process not running")
		}
		pid = p
		return nil
	})
	return pid, err
}

func logTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func dirJoin(dir, name string) string { return filepath.Join(dir, name) }

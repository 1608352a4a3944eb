package routerd

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/testutil"
)

// BIRDConfig describes a BIRD 2 instance.
type BIRDConfig struct {
	RouterID  string
	ASN       uint32
	Neighbors []Neighbor
	// Announce are IPv4 prefixes BIRD originates (as static blackholes).
	Announce []string
	// Kernel exports BGP-learned routes into the namespace's main table.
	Kernel bool
	// Extra is appended to the global part of the configuration.
	Extra string
	// Transit re-advertises routes learned from one neighbour to the others
	// (a router in the path, like the lab's IDC vSwitch), not only the
	// static Announce prefixes.
	Transit bool
}

// BIRD is a running BIRD daemon.
type BIRD struct {
	NS  nsutil.NS
	Dir string
	Ctl string
	pid int
	cfg BIRDConfig
}

// KernelProto is the route protocol number BIRD stamps on kernel routes.
const BIRDKernelProto = 12

func birdConf(c BIRDConfig, dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "router id %s;\nlog \"%s/bird.log\" all;\n", c.RouterID, dir)
	b.WriteString("protocol device { scan time 10; }\n")
	if c.Kernel {
		// merge paths: equal BGP paths become one ECMP kernel route.
		b.WriteString("protocol kernel k4 { merge paths on; ipv4 { import none; export where source = RTS_BGP; }; }\n")
	}
	if c.Extra != "" {
		b.WriteString(c.Extra + "\n")
	}
	b.WriteString("protocol static s4 { ipv4;\n")
	for _, p := range c.Announce {
		fmt.Fprintf(&b, "  route %s blackhole;\n", p)
	}
	b.WriteString("}\n")
	for i, n := range c.Neighbors {
		name := n.Name
		if name == "" {
			name = fmt.Sprintf("peer%d", i)
		}
		fmt.Fprintf(&b, "protocol bgp %s {\n  local as %d;\n  neighbor %s", name, c.ASN, n.Address)
		if n.Port != 0 {
			fmt.Fprintf(&b, " port %d", n.Port)
		}
		fmt.Fprintf(&b, " as %d;\n", n.ASN)
		// BIRD's default timers are tuned for production, not tests.
		b.WriteString("  connect delay time 1;\n  connect retry time 1;\n  error wait time 1, 2;\n")
		if n.HoldTime > 0 {
			fmt.Fprintf(&b, "  hold time %d;\n  keepalive time %d;\n", n.HoldTime, max(n.HoldTime/3, 1))
		}
		if n.Password != "" {
			fmt.Fprintf(&b, "  password %q;\n", n.Password)
		}
		if n.GracefulRestart {
			b.WriteString("  graceful restart on;\n")
			if n.RestartTime > 0 {
				fmt.Fprintf(&b, "  graceful restart time %d;\n", n.RestartTime)
			}
		}
		export := "source = RTS_STATIC"
		if c.Transit {
			export = "source = RTS_STATIC || source = RTS_BGP"
		}
		fmt.Fprintf(&b, "  ipv4 { import all; export where %s; next hop self; };\n}\n", export)
	}
	return b.String()
}

// StartBIRD writes the configuration and starts BIRD inside ns. It is
// stopped when the test ends.
func StartBIRD(t testing.TB, ns nsutil.NS, c BIRDConfig) *BIRD {
	t.Helper()
	testutil.RequireCommand(t, "bird", "apt-get install bird2 (or `make deps`)")
	b, err := LaunchBIRD(ns, c)
	if b != nil {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("bird log (%s):\n%s", ns.Name, b.Log())
			}
			b.Close()
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// LaunchBIRD is StartBIRD for code without a testing.TB (benchmarks): the
// caller must Close it. On error the returned BIRD (if any) still needs Close.
func LaunchBIRD(ns nsutil.NS, c BIRDConfig) (*BIRD, error) {
	dir, err := os.MkdirTemp("", "strata-bird-")
	if err != nil {
		return nil, fmt.Errorf("make bird dir: %w", err)
	}
	b := &BIRD{NS: ns, Dir: dir, Ctl: dir + "/bird.ctl", cfg: c}
	return b, b.Start()
}

// Close stops the daemon and removes its directory.
func (b *BIRD) Close() {
	b.Stop()
	_ = os.RemoveAll(b.Dir)
}

// Log returns the tail of BIRD's log.
func (b *BIRD) Log() string { return logTail(b.Dir + "/bird.log") }

// NewBIRD prepares a BIRD whose files live in dir, for callers that manage
// its lifetime themselves (the lab); tests use StartBIRD.
func NewBIRD(ns nsutil.NS, dir string, c BIRDConfig) *BIRD {
	return &BIRD{NS: ns, Dir: dir, Ctl: dir + "/bird.ctl", cfg: c}
}

// Start (re)starts the daemon with its configuration.
func (b *BIRD) Start() error {
	conf := dirJoin(b.Dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(birdConf(b.cfg, b.Dir)), 0o644); err != nil {
		return fmt.Errorf("write bird config: %w", err)
	}
	pidf := dirJoin(b.Dir, "bird.pid")
	_ = os.Remove(pidf)
	if _, err := run(b.NS.Exec("bird", "-c", conf, "-s", b.Ctl, "-P", pidf)...); err != nil {
		return fmt.Errorf("start bird in %s: %w", b.NS.Name, err)
	}
	pid, err := waitPIDFile(pidf)
	if err != nil {
		return fmt.Errorf("bird in %s did not start: %w\n%s", b.NS.Name, err, logTail(dirJoin(b.Dir, "bird.log")))
	}
	b.pid = pid
	return nil
}

// PID is the daemon's process id.
func (b *BIRD) PID() int { return b.pid }

// Stop ends the daemon by PID.
func (b *BIRD) Stop() {
	if b.pid > 0 {
		_ = syscall.Kill(b.pid, syscall.SIGCONT) // in case a test paused it
		stopPID(b.pid)
		b.pid = 0
	}
}

// Birdc runs a birdc command.
func (b *BIRD) Birdc(args ...string) (string, error) {
	return run(append([]string{"birdc", "-s", b.Ctl}, args...)...)
}

// ProtocolState returns the BGP protocol's state line info, e.g.
// "Established" or "Active", and the full `show protocols all` text.
func (b *BIRD) ProtocolState(name string) (string, string, error) {
	out, err := b.Birdc("show", "protocols", "all", name)
	if err != nil {
		return "", out, err
	}
	m := regexp.MustCompile(`BGP state:\s+(\S+)`).FindStringSubmatch(out)
	if m == nil {
		return "", out, fmt.Errorf("no BGP state in: %s", out)
	}
	return m[1], out, nil
}

// WaitEstablished waits for the named session.
func (b *BIRD) WaitEstablished(t testing.TB, name string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, "bird session "+name+" established", func() error {
		st, out, err := b.ProtocolState(name)
		if err != nil {
			return err
		}
		if st != "Established" {
			return fmt.Errorf("state %s:\n%s", st, out)
		}
		return nil
	})
}

var routeCountRE = regexp.MustCompile(`(\d+) of (\d+) routes`)

// RouteCount is the number of routes in BIRD's IPv4 table (`show route count`).
func (b *BIRD) RouteCount() (int, error) {
	out, err := b.Birdc("show", "route", "count")
	if err != nil {
		return 0, err
	}
	m := routeCountRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("unexpected `show route count` output: %s", out)
	}
	return strconv.Atoi(m[1])
}

// HasRoute reports whether BIRD has prefix in its table, with the output.
func (b *BIRD) HasRoute(prefix string) (bool, string, error) {
	out, err := b.Birdc("show", "route", "for", prefix, "all")
	if strings.Contains(out, "Network not found") {
		return false, out, nil
	}
	if err != nil {
		return false, out, err
	}
	return strings.Contains(out, prefix), out, nil
}

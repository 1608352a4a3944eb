package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/bpf"
	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/tests/harness/netlab"
)

// The bpf area: the eBPF fast path against plain kernel routing, in the same
// namespaces and the same run. Two nodes on a veth underlay; node 1 has pods
// A and B, node 2 has pod C. "local" is A -> B, "cross" is A -> C. Each round
// measures both modes back to back (routing = no program attached at all),
// and the figures are medians over rounds.
func init() {
	Register(Area{Name: "bpf", Run: runBPF})
}

const (
	bpfIperfSeconds = 2
	bpfRounds       = 9
	bpfRRCount      = 3000
)

type bpfBenchPod struct {
	name, node, hostIf string
	ip                 netip.Addr
	mac                string
}

var bpfBenchPods = []bpfBenchPod{
	{"bfA", "bfN1", "vpa", netip.MustParseAddr("10.245.1.10"), "02:00:00:45:01:10"},
	{"bfB", "bfN1", "vpb", netip.MustParseAddr("10.245.1.11"), "02:00:00:45:01:11"},
	{"bfC", "bfN2", "vpc", netip.MustParseAddr("10.245.2.10"), "02:00:00:45:02:10"},
}

type bpfBenchLab struct {
	lab *netlab.Lab
	fps map[string]*bpf.Fastpath // node -> fast path
}

func runBPF(ctx context.Context, log io.Writer) ([]Result, error) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return nil, errors.New("iperf3 not installed (apt-get install iperf3; `make deps` does it)")
	}
	if err := bpf.Supported(); err != nil {
		return nil, err
	}
	l, err := newBPFBenchLab()
	if err != nil {
		return nil, err
	}
	defer l.close()

	type sample struct{ fastBps, routeBps, fastRR, routeRR, fastGo, routeGo, fastEff, routeEff []float64 }
	scen := map[string]*sample{"local": {}, "cross": {}}
	dst := map[string]bpfBenchPod{"local": bpfBenchPods[1], "cross": bpfBenchPods[2]}
	src := bpfBenchPods[0]
	for round := 0; round < bpfRounds; round++ {
		for _, name := range []string{"local", "cross"} {
			s := scen[name]
			for _, fast := range []bool{round%2 == 0, round%2 != 0} { // alternate which mode goes first
				if err := l.setFast(fast); err != nil {
					return nil, err
				}
				bps, cpu, err := l.iperf(ctx, src, dst[name])
				if err != nil {
					return nil, fmt.Errorf("%s iperf (fast=%v): %w", name, fast, err)
				}
				rr, err := bpfRR(ctx, l.lab.NS(src.name), l.lab.NS(dst[name].name), dst[name].ip, bpfRRCount)
				if err != nil {
					return nil, fmt.Errorf("%s request/response (fast=%v): %w", name, fast, err)
				}
				rrGo, err := bpfRRGo(ctx, l.lab.NS(src.name), l.lab.NS(dst[name].name), dst[name].ip, bpfRRCount)
				if err != nil {
					return nil, fmt.Errorf("%s Go request/response (fast=%v): %w", name, fast, err)
				}
				if fast {
					s.fastGo = append(s.fastGo, rrGo)
					s.fastBps, s.fastRR = append(s.fastBps, bps), append(s.fastRR, rr)
					s.fastEff = append(s.fastEff, bps/cpu)
				} else {
					s.routeGo = append(s.routeGo, rrGo)
					s.routeBps, s.routeRR = append(s.routeBps, bps), append(s.routeRR, rr)
					s.routeEff = append(s.routeEff, bps/cpu)
				}
				fmt.Fprintf(log, "    round %d %-5s fast=%-5v %.2f Gbit/s, RR p50 %.1f us (Go client/server %.1f us)\n", round, name, fast, bps/1e9, rr, rrGo)
			}
		}
	}
	// Prove the fast path carried the fast-mode traffic.
	c, err := l.fps["bfN1"].Counters()
	if err != nil {
		return nil, err
	}
	if c.Paths["local"].Packets == 0 || c.Paths["remote"].Packets == 0 {
		return nil, fmt.Errorf("fast path counters stayed empty (local %d, remote %d packets): the measurement did not exercise it", c.Paths["local"].Packets, c.Paths["remote"].Packets)
	}

	med := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	// The value is the median of per-round ratios: both modes of a round run
	// back to back, so a ratio pairs them under the same machine load, which
	// on a shared machine drifts far more than the effect being measured.
	ratios := func(a, b []float64) float64 {
		r := make([]float64, len(a))
		for i := range a {
			r[i] = a[i] / b[i]
		}
		return med(r)
	}
	list := func(xs []float64, scale float64) string {
		parts := make([]string, len(xs))
		for i, x := range xs {
			parts[i] = fmt.Sprintf("%.1f", x/scale)
		}
		return strings.Join(parts, " ")
	}
	lo, cr := scen["local"], scen["cross"]
	mode := l.fps["bfN1"].Mode()
	thr := New("bpf.local_throughput_ratio_vs_routing", ratios(lo.fastBps, lo.routeBps), "ratio", ">= 1.1",
		fmt.Sprintf("median of %d paired per-round ratios, iperf3 TCP %ds; local Gbit/s fast [%s] routing [%s]; cross-node ratio %.2f, Gbit/s fast [%s] routing [%s]; throughput per iperf3 CPU (less load-sensitive) ratio local %.2f, cross-node %.2f; attach %s",
			bpfRounds, bpfIperfSeconds, list(lo.fastBps, 1e9), list(lo.routeBps, 1e9), ratios(cr.fastBps, cr.routeBps), list(cr.fastBps, 1e9), list(cr.routeBps, 1e9),
			ratios(lo.fastEff, lo.routeEff), ratios(cr.fastEff, cr.routeEff), mode)).
		WithBaseline("plain kernel routing (no program attached), same pods", med(lo.routeBps))
	lat := New("bpf.rr_latency_ratio_vs_routing", ratios(lo.fastRR, lo.routeRR), "ratio", "<= 0.9",
		fmt.Sprintf("median of %d paired per-round ratios of the p50 of %d TCP 1-byte request/responses, one thread driving both sockets with blocking syscalls (no scheduler wake-up in the timing); local us fast [%s] routing [%s]; cross-node ratio %.2f, us fast [%s] routing [%s]; classic Go client and server goroutines (wake-ups included): local ratio %.2f, us fast [%s] routing [%s], cross-node ratio %.2f",
			bpfRounds, bpfRRCount, list(lo.fastRR, 1), list(lo.routeRR, 1), ratios(cr.fastRR, cr.routeRR), list(cr.fastRR, 1), list(cr.routeRR, 1),
			ratios(lo.fastGo, lo.routeGo), list(lo.fastGo, 1), list(lo.routeGo, 1), ratios(cr.fastGo, cr.routeGo))).
		WithBaseline("plain kernel routing (no program attached), same pods", med(lo.routeRR))
	return []Result{thr, lat}, nil
}

func newBPFBenchLab() (*bpfBenchLab, error) {
	spec := netlab.Spec{
		Hosts: []netlab.Host{
			{Name: "bfN1", Forward: true, Routes: []netlab.Route{{Dst: "10.245.2.0/24", Via: "192.168.245.2"}}},
			{Name: "bfN2", Forward: true, Routes: []netlab.Route{{Dst: "10.245.1.0/24", Via: "192.168.245.1"}}},
		},
		Links: []netlab.Link{{A: netlab.Port{Host: "bfN1", Ifname: "eth0", Addr: "192.168.245.1/24"}, B: netlab.Port{Host: "bfN2", Ifname: "eth0", Addr: "192.168.245.2/24"}}},
	}
	hostMAC := func(p bpfBenchPod) string { return "0a" + p.mac[2:] }
	for _, p := range bpfBenchPods {
		spec.Hosts = append(spec.Hosts, netlab.Host{Name: p.name})
		spec.Links = append(spec.Links, netlab.Link{
			A: netlab.Port{Host: p.node, Ifname: p.hostIf, MAC: hostMAC(p)},
			B: netlab.Port{Host: p.name, Ifname: "eth0", MAC: p.mac, Addr: p.ip.String() + "/32"},
		})
	}
	lab, err := netlab.Build(spec)
	if err != nil {
		return nil, fmt.Errorf("bpf bench lab: %w", err)
	}
	l := &bpfBenchLab{lab: lab, fps: map[string]*bpf.Fastpath{}}
	for _, p := range bpfBenchPods {
		for _, c := range [][]string{
			{p.name, "ip", "neigh", "replace", "169.254.1.1", "lladdr", hostMAC(p), "dev", "eth0", "nud", "permanent"},
			{p.name, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink"},
			{p.node, "ip", "route", "add", p.ip.String() + "/32", "dev", p.hostIf, "scope", "link"},
			{p.node, "ip", "neigh", "replace", p.ip.String(), "lladdr", p.mac, "dev", p.hostIf, "nud", "permanent"},
		} {
			if err := l.run(c[0], c[1:]...); err != nil {
				l.close()
				return nil, err
			}
		}
	}
	for _, node := range []string{"bfN1", "bfN2"} {
		ns := lab.NS(node)
		fp, err := bpf.Load(bpf.Options{NS: &ns, Disabled: true})
		if err != nil {
			l.close()
			return nil, err
		}
		l.fps[node] = fp
		if err := fp.SetPodPrefixes([]netip.Prefix{netip.MustParsePrefix("10.245.0.0/16")}); err != nil {
			l.close()
			return nil, err
		}
		for _, p := range bpfBenchPods {
			if p.node != node {
				continue
			}
			mac, _ := net.ParseMAC(p.mac)
			if err := fp.AddPod(bpf.Pod{HostIfname: p.hostIf, PodMAC: mac, IPs: []netip.Addr{p.ip}}); err != nil {
				l.close()
				return nil, err
			}
		}
	}
	return l, nil
}

func (l *bpfBenchLab) close() {
	for _, fp := range l.fps {
		_ = fp.Close()
	}
	_ = l.lab.Close()
}

func (l *bpfBenchLab) run(host string, argv ...string) error {
	full := l.lab.NS(host).Exec(argv...)
	out, err := exec.Command(full[0], full[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %s: %w: %s", host, strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setFast attaches (fast) or fully detaches (routing) the programs on both
// nodes: the baseline runs with no program in the path at all.
func (l *bpfBenchLab) setFast(fast bool) error {
	for node, fp := range l.fps {
		ifs := []string{"eth0"}
		for _, p := range bpfBenchPods {
			if p.node == node {
				ifs = append(ifs, p.hostIf)
			}
		}
		if err := fp.SetEnabled(fast); err != nil {
			return err
		}
		for _, ifn := range ifs {
			var err error
			switch {
			case !fast:
				err = fp.Detach(ifn)
			case ifn == "eth0":
				err = fp.AttachUplink(ifn)
			default:
				err = fp.AttachPod(ifn)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// iperf runs iperf3 from pod src to pod dst: received bits per second and
// the CPU both ends used.
func (l *bpfBenchLab) iperf(ctx context.Context, src, dst bpfBenchPod) (float64, float64, error) {
	return Iperf(ctx, l.lab.NS(dst.name), l.lab.NS(src.name), dst.ip.String(), bpfIperfSeconds)
}

// bpfRR measures the datapath's request/response latency between two pods:
// one OS thread drives both ends of a TCP connection with blocking raw
// syscalls: write a byte on the client socket, read it on the server
// socket, write it back, read it on the client. Sending runs the whole
// datapath (veth, fast path or forwarding, the peer's TCP receive) inside
// the write syscall's softirq, so a transaction is two full traversals plus
// four syscalls, with no scheduler wake-up in it. Wake-ups cost the same in
// both modes and, on a shared 2-vCPU machine, are larger and noisier than
// the datapath itself (bpfRRGo keeps that classic two-thread figure). The
// sockets are created inside the pods' namespaces (a socket keeps its
// namespace); n transactions are timed after 100 warm-up ones. It returns
// the p50 in microseconds.
func bpfRR(ctx context.Context, from, to nsutil.NS, addr netip.Addr, n int) (float64, error) {
	// A lost packet must not hang the bench: every blocking call times out.
	timeout := unix.Timeval{Sec: 10}
	newSocket := func() (int, error) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("socket: %w", err)
		}
		for _, o := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, o, &timeout); err != nil {
				_ = unix.Close(fd)
				return -1, fmt.Errorf("set socket timeout: %w", err)
			}
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			_ = unix.Close(fd)
			return -1, fmt.Errorf("set TCP_NODELAY: %w", err)
		}
		return fd, nil
	}
	sa := &unix.SockaddrInet4{Addr: addr.As4()}
	lfd, cfd, sfd := -1, -1, -1
	defer func() {
		for _, fd := range []int{lfd, cfd, sfd} {
			if fd >= 0 {
				_ = unix.Close(fd)
			}
		}
	}()
	if err := to.Do(func() error {
		var err error
		if lfd, err = newSocket(); err != nil {
			return err
		}
		if err := unix.Bind(lfd, sa); err != nil {
			return fmt.Errorf("bind %s: %w", addr, err)
		}
		if err := unix.Listen(lfd, 1); err != nil {
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		bound, err := unix.Getsockname(lfd)
		if err != nil {
			return fmt.Errorf("getsockname: %w", err)
		}
		sa.Port = bound.(*unix.SockaddrInet4).Port
		return nil
	}); err != nil {
		return 0, err
	}
	if err := from.Do(func() error {
		var err error
		if cfd, err = newSocket(); err != nil {
			return err
		}
		if err := unix.Connect(cfd, sa); err != nil {
			return fmt.Errorf("connect to %s:%d: %w", addr, sa.Port, err)
		}
		return nil
	}); err != nil {
		return 0, err
	}
	var err error
	if sfd, _, err = unix.Accept4(lfd, unix.SOCK_CLOEXEC); err != nil {
		return 0, fmt.Errorf("accept: %w", err)
	}
	_ = unix.SetsockoptInt(sfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b := []byte{1}
	step := func(fd int, write bool) error {
		var k int
		var err error
		if write {
			k, err = unix.Write(fd, b)
		} else {
			k, err = unix.Read(fd, b)
		}
		if k != 1 || err != nil {
			return fmt.Errorf("request/response (write %v): %d bytes: %w", write, k, err)
		}
		return nil
	}
	lat := make([]float64, 0, n)
	for i := 0; i < n+100; i++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		t0 := time.Now()
		for _, s := range []struct {
			fd    int
			write bool
		}{{cfd, true}, {sfd, false}, {sfd, true}, {cfd, false}} {
			if err := step(s.fd, s.write); err != nil {
				return 0, err
			}
		}
		if i >= 100 {
			lat = append(lat, float64(time.Since(t0).Nanoseconds())/1e3)
		}
	}
	slices.Sort(lat)
	return lat[len(lat)/2], nil
}

// bpfRRGo measures TCP request/response latency between two pods with Go
// sockets, a client and a server goroutine:
// sockets are created inside the pods' namespaces (a socket keeps its
// namespace), then n one-byte ping-pongs are timed. It returns the p50 in
// microseconds.
func bpfRRGo(ctx context.Context, from, to nsutil.NS, addr netip.Addr, n int) (float64, error) {
	var ln net.Listener
	if err := to.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(addr.String(), "0"))
		return err
	}); err != nil {
		return 0, err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 1)
		for {
			if _, err := io.ReadFull(c, b); err != nil {
				return
			}
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	}()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	conn, err := from.DialContext(dctx, "tcp", ln.Addr().String())
	cancel()
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	b := []byte{1}
	lat := make([]float64, 0, n)
	for i := 0; i < n+100; i++ { // the first 100 warm up
		t0 := time.Now()
		if _, err := conn.Write(b); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(conn, b); err != nil {
			return 0, err
		}
		if i >= 100 {
			lat = append(lat, float64(time.Since(t0).Nanoseconds())/1e3)
		}
	}
	slices.Sort(lat)
	return lat[len(lat)/2], nil
}

package bpf

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sort"

	"github.com/cilium/ebpf"
)

// Path names, indexed by enum path_id in fastpath.h. "local" and "remote" are
// the fast path proper; every "stack_*" path is a packet handed to the kernel.
var pathNames = [...]string{
	"local",
	"remote",
	"stack_not_ip",
	"stack_fragment",
	"stack_ttl",
	"stack_unknown_source",
	"stack_no_route",
	"stack_link_local",
	"stack_hairpin",
	"stack_not_local",
	"stack_malformed",
	"disabled",
	"stack_not_pod",
	"stack_nat",
	"stack_ipv6_ext",
	"stack_other_host",
}

// PathNames lists every path label, in the programs' order.
func PathNames() []string { return slices.Clone(pathNames[:]) }

// Counter is a packet and byte count.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// PodCounters are one pod address's outgoing packets by where they went.
type PodCounters struct {
	Local  Counter // redirected to a pod on this node
	Remote Counter // forwarded by FIB lookup to the uplink or overlay
	Stack  Counter // handed to the kernel stack
}

// Counters are the summed per-CPU counters of the fast path.
type Counters struct {
	Paths map[string]Counter
	Pods  map[netip.Addr]PodCounters
}

// Counters reads and sums the per-CPU counters.
func (f *Fastpath) Counters() (Counters, error) {
	c := Counters{Paths: map[string]Counter{}, Pods: map[netip.Addr]PodCounters{}}
	for i, name := range pathNames {
		var per []fastpathCounter
		if err := f.objs.PathCounters.Lookup(uint32(i), &per); err != nil {
			return Counters{}, fmt.Errorf("bpf: read path counter %s: %w", name, err)
		}
		var sum Counter
		for _, p := range per {
			sum.Packets += p.Packets
			sum.Bytes += p.Bytes
		}
		c.Paths[name] = sum
	}
	var k fastpathEndpointKey
	var per []fastpathPodStats
	it := f.objs.PodCounters.Iterate()
	for it.Next(&k, &per) {
		var pc PodCounters
		for _, p := range per {
			pc.Local.Packets += p.C[0].Packets
			pc.Local.Bytes += p.C[0].Bytes
			pc.Remote.Packets += p.C[1].Packets
			pc.Remote.Bytes += p.C[1].Bytes
			pc.Stack.Packets += p.C[2].Packets
			pc.Stack.Bytes += p.C[2].Bytes
		}
		c.Pods[keyAddr(k)] = pc
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return Counters{}, fmt.Errorf("bpf: read pod counters: %w", err)
	}
	return c, nil
}

// Status is what `strata status` and the plan show about the fast path.
type Status struct {
	// Supported is nil when the kernel can run the fast path.
	Supported error
	Active    bool
	// Reason says why the fast path is or is not forwarding (the agent's
	// decision, or the run-time switch).
	Reason    string
	Mode      AttachMode
	Attached  []string
	Endpoints int
	Counters  Counters
}

// Status gathers the fast path's state.
func (f *Fastpath) Status() (Status, error) {
	on, err := f.Enabled()
	if err != nil {
		return Status{}, err
	}
	eps, err := f.Endpoints()
	if err != nil {
		return Status{}, err
	}
	c, err := f.Counters()
	if err != nil {
		return Status{}, err
	}
	return Status{Active: on, Mode: f.Mode(), Attached: f.Attached(), Endpoints: len(eps), Counters: c}, nil
}

// WriteText prints the status for humans (used by `strata status`).
func (s Status) WriteText(w io.Writer) {
	state := "off"
	if s.Active {
		state = "on"
	}
	if s.Supported != nil {
		state = "unsupported: " + s.Supported.Error()
	}
	if s.Reason != "" {
		state += " (" + s.Reason + ")"
	}
	fmt.Fprintf(w, "bpf fast path: %s; attach %s, %d interfaces, %d endpoints\n", state, orDash(string(s.Mode)), len(s.Attached), s.Endpoints)
	for _, name := range pathNames {
		c := s.Counters.Paths[name]
		if c.Packets == 0 {
			continue
		}
		fmt.Fprintf(w, "  path %-22s %12d pkts %14d bytes\n", name, c.Packets, c.Bytes)
	}
	ips := make([]netip.Addr, 0, len(s.Counters.Pods))
	for ip := range s.Counters.Pods {
		ips = append(ips, ip)
	}
	sort.Slice(ips, func(i, j int) bool { return ips[i].Less(ips[j]) })
	for _, ip := range ips {
		p := s.Counters.Pods[ip]
		fmt.Fprintf(w, "  pod  %-22s local %d/%dB remote %d/%dB stack %d/%dB\n", ip,
			p.Local.Packets, p.Local.Bytes, p.Remote.Packets, p.Remote.Bytes, p.Stack.Packets, p.Stack.Bytes)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

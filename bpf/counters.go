package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/strata-net/strata/api"
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

// The counters' types are the agent API's, which `strata status` reads.
type (
	Counter     = api.Counter
	PodCounters = api.PodCounters
	Counters    = api.FastPathCounters
)

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

// Status is the loaded fast path's state (the agent serves it as api.FastPath).
type Status struct {
	Active bool
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

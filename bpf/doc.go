// Package bpf is Strata's eBPF pod fast path. The C programs in src/ are
// compiled by bpf2go; the output (fastpath_bpfel.go/.o) is committed, so
// building needs no clang. `make generate` rebuilds it and tests catch drift.
//
// The from-pod program (host-side veth ingress) redirects traffic to a pod on
// the same node with bpf_redirect_peer, and forwards traffic to the cluster's
// other pod prefixes after bpf_fib_lookup with bpf_redirect_neigh (uplink or
// VXLAN device). The from-netdev program (uplink/VXLAN ingress) delivers
// straight into local pods. Anything else (non-IP, fragments, TTL expiry,
// NATed flows, unknown sources, no route) is handed to the kernel stack:
// the programs never drop. See docs/bpf.md.
//
// Load gives a Fastpath for one node namespace; AddPod/RemovePod follow CNI
// ADD/DEL; SetEnabled switches it at run time; Counters, Status and
// NewCollector expose per-pod and per-path counters.
package bpf

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Types shared by fastpath.c and, through bpf2go, the Go loader. Keep the
// layouts explicit (no implicit padding): Go reads and writes them raw.
#ifndef STRATA_FASTPATH_H
#define STRATA_FASTPATH_H

#include <linux/types.h>

// endpoint_key is a pod address; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d)
// so one map serves both families.
struct endpoint_key {
	__u32 addr[4];
};

// endpoint is a pod on this node: the host side of its veth and the MACs to
// write when delivering into it.
struct endpoint {
	__u32 ifindex;   // host-side veth, in the node's namespace
	__u8 pod_mac[6]; // the pod's interface
	__u8 host_mac[6]; // the host-side veth (the pod's gateway)
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

// Where a packet went. Keep in sync with pathNames in counters.go.
enum path_id {
	PATH_LOCAL = 0,             // redirected into a local pod (bpf_redirect_peer)
	PATH_REMOTE,                // forwarded after FIB lookup (bpf_redirect_neigh)
	PATH_STACK_NOT_IP,          // ARP and other non-IP frames
	PATH_STACK_FRAGMENT,        // IPv4 or IPv6 fragments
	PATH_STACK_TTL,             // TTL / hop limit would expire
	PATH_STACK_UNKNOWN_SOURCE,  // source not a registered pod on this veth
	PATH_STACK_NO_ROUTE,        // FIB lookup did not give a forwardable route
	PATH_STACK_LINK_LOCAL,      // IPv6 link-local or multicast destination
	PATH_STACK_HAIRPIN,         // would leave where it came in
	PATH_STACK_NOT_LOCAL,       // arrived on an uplink, not for a local pod
	PATH_STACK_MALFORMED,       // truncated headers or a failed rewrite
	PATH_DISABLED,              // fast path switched off at run time
	PATH_STACK_NOT_POD,         // destination outside the cluster's pod prefixes (e.g. a ClusterIP)
	PATH_STACK_NAT,             // the flow has NAT state in conntrack (service replies)
	PATH_STACK_IPV6_EXT,        // IPv6 with extension headers (ports not found)
	PATH_STACK_OTHER_HOST,      // frame not addressed to this host's MAC
	PATH_MAX_ID,
};

// Per-pod counters, by where the pod's outgoing packets went.
enum pod_slot {
	POD_SLOT_LOCAL = 0,
	POD_SLOT_REMOTE,
	POD_SLOT_STACK,
	POD_SLOTS,
};

struct pod_stats {
	struct counter c[POD_SLOTS];
};

// pod_prefix is an LPM trie key: prefixlen bits of addr (IPv4-mapped for
// IPv4, so an IPv4 /N is stored as /(96+N)).
struct pod_prefix {
	__u32 prefixlen;
	__u32 addr[4];
};

struct config {
	__u32 enabled;
	__u32 _pad;
};

#endif

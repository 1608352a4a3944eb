// Package topology is Strata's brain, and it is pure: node facts in, a plan
// out, no I/O. It models each node's facts (location, pool, underlay and WAN
// addresses, WAN keys and public endpoints, capabilities, pod addresses,
// probe results), decides a role and datapath per node and a path (native,
// vxlan, wan or unreachable, with the reason) per node pair, applies
// hysteresis, and diffs plans so datapaths reconcile only the peers that
// changed. Probing lives in topology/probe and only reports facts.
package topology

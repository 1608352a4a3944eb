// Package nodepool is a node's NodePool: its profile (location and
// interconnect when the node's labels omit them; VXLAN VNI and port and the
// BGP local ASN, with a documented precedence) and its pod CIDR block,
// allocated with the API server as the arbiter (one PodCIDRClaim per block).
package nodepool

// Package topotest builds synthetic clusters for topology benchmarks and
// tests: deterministic, no I/O.
package topotest

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/strata-net/strata/topology"
)

// Cluster returns nodes spread over pools. Pool 0..pools/2-1 are cloud
// (VPC) pools, the next quarter leased-line IDC pools with BGP, the rest
// L3-only internet sites: every rule is exercised at scale.
func Cluster(nodes, pools int) []topology.NodeFacts {
	out := make([]topology.NodeFacts, nodes)
	for i := range out {
		pi := i % pools
		f := topology.NodeFacts{
			Name:        fmt.Sprintf("node-%05d", i),
			Pool:        fmt.Sprintf("pool-%03d", pi),
			UnderlayIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, byte(pi), byte(i >> 8), byte(i)})},
			VTEPMAC:     fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(pi), byte(i>>16), byte(i>>8), byte(i)),
			VTEPPort:    4789,
			PodCIDR:     netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(64 + i>>8), byte(i), 0}), 24), // distinct up to 48k nodes
		}
		f.ProbeIP = f.PodCIDR.Addr().Next()
		switch {
		case pi < pools/2:
			f.Location, f.Capabilities = topology.LocationCloud, topology.Capabilities{ENI: true, ENIQuota: 8}
		case pi < pools*3/4:
			f.Location, f.Interconnect, f.Capabilities = topology.LocationIDC, topology.InterconnectLeasedLine, topology.Capabilities{BGPPeers: 1}
		default:
			f.Location, f.Interconnect = topology.LocationIDC, topology.InterconnectInternet
		}
		out[i] = f
	}
	return out
}

// PoolOf is the pool index Cluster gave node i.
func PoolOf(i, pools int) int { return i % pools }

// WANCluster is Cluster with WAN facts: every node publishes a WireGuard
// key; cloud nodes have public endpoints and the first gateways of them are
// WAN gateways; leased-line and internet nodes are behind NAT, so pairs
// between internet pools are relayed.
func WANCluster(nodes, pools, gateways int) []topology.NodeFacts {
	out := Cluster(nodes, pools)
	g := 0
	for i := range out {
		var key [topology.WANKeyLen]byte
		binary.BigEndian.PutUint64(key[:], uint64(i)+1)
		out[i].WANPublicKey = base64.StdEncoding.EncodeToString(key[:])
		if out[i].Location == topology.LocationCloud {
			out[i].PublicEndpoint = netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}), 51871)
			if g < gateways {
				out[i].WANGateway = true
				g++
			}
		}
	}
	return out
}

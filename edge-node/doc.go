// Package edgenode is the edge role: it takes the node's pod CIDR
// (Node.spec.podCIDR, which the node's NodePool allocation in package
// nodepool fills when nothing else does), runs pod IPAM from it, and asks bgp to advertise the CIDR and accept the routes the
// node should learn. It holds no BGP code of its own.
package edgenode

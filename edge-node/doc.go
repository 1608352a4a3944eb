// Package edgenode is the edge role: it claims the node's pod CIDR, runs pod
// IPAM from it, and asks bgp to advertise the CIDR and accept the routes the
// node should learn. It holds no BGP code of its own.
package edgenode

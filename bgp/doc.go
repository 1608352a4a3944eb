// Package bgp is a small Speaker facade over an embedded gobgp v3 server:
// peers (ASN, address, MD5, timers, graceful restart, multihop), advertise and
// withdraw, a watch of learned best paths, and kernel route installation under
// Strata's own route protocol number. No gobgp or protobuf type leaves it.
package bgp

// Package rtproto names the kernel route protocol numbers Strata stamps on the
// routes it installs. Each datapath owns one number, so reconcilers can dump
// and flush exactly their own routes and never touch anyone else's (BIRD uses
// 12, zebra 11, the kernel 2, static routes 4).
package rtproto

import "github.com/vishvananda/netlink"

const (
	// VXLAN marks onlink routes to overlay peers' pod addresses.
	VXLAN netlink.RouteProtocol = 201
	// BGP marks routes learned over BGP and installed by bgp.Speaker.
	BGP netlink.RouteProtocol = 202
	// Pod marks host routes to local pods (the host side of a pod veth).
	Pod netlink.RouteProtocol = 203
	// ENI marks routes in ENI policy-routing tables.
	ENI netlink.RouteProtocol = 204
	// Native marks routes to peers' pod addresses over the native underlay.
	Native netlink.RouteProtocol = 205
	// WAN marks routes into the WireGuard WAN device (wan.Transport): a WAN
	// peer's allowed prefixes, dev strata-wan.
	WAN netlink.RouteProtocol = 206
)

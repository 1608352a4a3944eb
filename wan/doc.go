// Package wan is the WAN transport: one routed WireGuard device per node
// (DeviceName) that carries pod prefixes between sites whose path crosses
// the internet. The kernel's WireGuard is used where the kernel has it,
// else wireguard-go over TUN; the choice is Transport.Impl. Keys are made
// on the node and never leave it. See docs/wan.md.
package wan

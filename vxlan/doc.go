// Package vxlan owns the overlay device (VNI, UDP port, MTU = underlay - 50)
// and its per-peer state: FDB entries, permanent neighbours and onlink routes
// for the peers' pod addresses. Reconcile is idempotent, re-checked
// periodically, and resyncs fully when the device is recreated. It never
// decides which peers are overlay peers: topology does.
package vxlan

// Package bpf holds Strata's eBPF programs (C sources) and their committed
// bpf2go output: the pod fast path (redirect between local pods and to the
// uplink or overlay), counters, and later policy and QoS. Building needs no
// clang; `make generate` rebuilds the objects and a test checks for drift.
package bpf

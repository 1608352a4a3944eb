// Package foundation proves the test harness itself against the real parts:
// a real kube-apiserver + etcd, the real CNI runtime path (cnitool driving
// Debian's plugins), and the sweep that removes what crashed runs leave.
package foundation

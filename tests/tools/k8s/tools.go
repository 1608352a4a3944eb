//go:build tools

// Package tools pins the Kubernetes binaries Strata's integration tests run:
// kube-apiserver and kubectl, built from k8s.io/kubernetes with every staging
// module mapped to its published tag (see go.mod). It lives in its own module so
// k8s.io/kubernetes never enters the product's dependency graph.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)

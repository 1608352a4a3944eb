// Command etcd is etcd 3.6+ built from the module proxy for Strata's tests.
// Debian's etcd 3.4 breaks kube-apiserver watches ("Too large resource version").
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }

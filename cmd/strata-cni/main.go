// Command strata-cni is the CNI plugin container runtimes call for every pod.
package main

import "github.com/strata-net/strata/cni/plugin"

func main() { plugin.Main() }

// Package sweep removes what crashed tests and labs leave behind: network
// namespaces named by nsutil whose owner is gone (with every process inside),
// and processes tagged by internal/owner whose owner is gone. A live run is
// never touched. Check lists anything Strata-made that is still present.
package sweep

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/owner"
)

// Report says what a sweep removed.
type Report struct {
	Namespaces []string
	Processes  []int
}

// Run sweeps leftovers of dead runs; with all, every Strata namespace goes.
func Run(all bool) (Report, error) {
	var r Report
	ns, err := nsutil.Sweep(all)
	r.Namespaces = ns
	for _, pid := range owner.Orphans() {
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			r.Processes = append(r.Processes, pid)
		}
	}
	return r, err
}

// Daemons are the process names a Strata test or lab may start.
var Daemons = []string{"bird", "bgpd", "zebra", "etcd", "kube-apiserver", "strata-agent", "iperf3", "strata-ecs-emul"}

// Leftovers lists Strata namespaces and daemon processes still present.
func Leftovers() []string {
	var out []string
	entries, _ := os.ReadDir(nsutil.RunDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), nsutil.Prefix) {
			out = append(out, "netns "+e.Name())
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(comm))
		for _, d := range Daemons {
			if name == d {
				out = append(out, fmt.Sprintf("process %s (pid %d)", name, pid))
			}
		}
	}
	return out
}

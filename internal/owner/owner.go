// Package owner tags the processes Strata's tests and lab start, so a sweep
// can tell a leftover of a dead run from a live one. A harness calls Mark
// once; every child started afterwards inherits STRATA_OWNER=<pid>, and
// Orphans finds processes whose owner is gone.
package owner

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/strata-net/strata/internal/nsutil"
)

// Env is the environment variable carrying the owner's PID.
const Env = "STRATA_OWNER"

// MarkLab tags children as the lab's: they live while the lab's state exists.
func MarkLab() { _ = os.Setenv(Env, nsutil.LabOwner) }

// Mark makes this process the owner of every child it starts from now on.
func Mark() { _ = os.Setenv(Env, strconv.Itoa(os.Getpid())) }

// Alive reports whether pid runs.
func Alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// Orphans lists processes tagged by an owner that no longer runs.
func Orphans() []int {
	var out []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", p.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			v, ok := bytes.CutPrefix(kv, []byte(Env+"="))
			if !ok {
				continue
			}
			if string(v) == nsutil.LabOwner {
				if !nsutil.OwnerAlive(nsutil.LabOwner) {
					out = append(out, pid)
				}
			} else if o, err := strconv.Atoi(string(v)); err == nil && o != pid && !Alive(o) {
				out = append(out, pid)
			}
			break
		}
	}
	return out
}

//go:build privileged

package sweep

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/owner"
	"github.com/strata-net/strata/internal/testutil"
)

// crashChild is run in a child process: it makes a namespace with a daemon
// inside and an owner-tagged orphan, prints their names, and dies without
// cleaning up, as a crashed test would.
const crashChildEnv = "STRATA_SWEEP_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) == "1" {
		crashChild()
		return
	}
	os.Exit(m.Run())
}

func crashChild() {
	owner.Mark()
	ns, err := nsutil.Create(nsutil.OwnedName("crash"))
	if err != nil {
		os.Exit(2)
	}
	inside := exec.Command("ip", ns.Exec("sleep", "600")[1:]...)
	inside.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	orphan := exec.Command("sleep", "601")
	orphan.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if inside.Start() != nil || orphan.Start() != nil {
		os.Exit(3)
	}
	// Die only once the daemon is really inside the namespace (`ip netns
	// exec` enters it, then execs), as a crashed test's daemon would be.
	var want syscall.Stat_t
	_ = syscall.Stat(ns.Path, &want)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+strconv.Itoa(inside.Process.Pid)+"/ns/net", &st) == nil && st.Ino == want.Ino {
			if b, _ := os.ReadFile("/proc/" + strconv.Itoa(inside.Process.Pid) + "/comm"); strings.TrimSpace(string(b)) == "sleep" {
				break
			}
		}
	}
	// Print what we made, then die without cleanup (no defers run on Exit).
	os.Stdout.WriteString(ns.Name + " " + strconv.Itoa(inside.Process.Pid) + " " + strconv.Itoa(orphan.Process.Pid) + "\n")
	os.Exit(0)
}

func TestPrivilegedSweepRemovesLeftoversOfACrashedRun(t *testing.T) {
	testutil.RequireRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("crash child: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 3 {
		t.Fatalf("crash child printed %q", out)
	}
	nsName := f[0]
	insidePID, _ := strconv.Atoi(f[1])
	orphanPID, _ := strconv.Atoi(f[2])
	t.Cleanup(func() { // belt and braces if the sweep under test is broken
		_ = nsutil.Delete(nsName)
		_ = syscall.Kill(orphanPID, syscall.SIGKILL)
	})
	if _, err := os.Stat(filepath.Join(nsutil.RunDir, nsName)); err != nil {
		t.Fatalf("child's namespace missing before the sweep: %v", err)
	}

	// A live run's namespace must survive the sweep.
	live, err := nsutil.Create(nsutil.OwnedName("live"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(live.Name) })

	r, err := Run(false)
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	t.Logf("sweep removed %v, killed %v", r.Namespaces, r.Processes)
	if _, err := os.Stat(filepath.Join(nsutil.RunDir, nsName)); !os.IsNotExist(err) {
		t.Errorf("crashed run's namespace %s still present", nsName)
	}
	if _, err := os.Stat(live.Path); err != nil {
		t.Errorf("the sweep removed a live run's namespace %s", live.Name)
	}
	for _, pid := range []int{insidePID, orphanPID} {
		deadline := time.Now().Add(10 * time.Second)
		for !gone(pid) {
			if time.Now().After(deadline) {
				t.Errorf("process %d from the crashed run still alive after the sweep", pid)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// gone reports whether pid has exited (a zombie counts: it holds nothing).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// Package nsutil is Strata's one network-namespace helper. Code that must run
// inside a namespace goes through NS.Do, which runs it on a locked OS thread and
// puts the thread back (or lets it die) afterwards, as containernetworking's
// ns.NetNS.Do does; this package builds on that implementation.
//
// Namespaces made for tests and the lab are named "<prefix><owner>-<name>",
// where owner is the creating process's PID in base 36. Sweep removes those
// whose owner is gone, so a crashed run never leaves namespaces behind and a
// sweep never touches a run that is still alive.
package nsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	cnins "github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netns"
)

// RunDir is where named namespaces are bind-mounted; it is the directory
// `ip netns` uses, so `ip netns exec` works on every namespace made here.
const RunDir = "/var/run/netns"

// Prefix starts the name of every namespace Strata's tests and lab create.
const Prefix = "st"

// NS is a named network namespace.
type NS struct {
	Name string
	Path string
}

// Do runs fn inside the namespace on a locked OS thread.
func (n NS) Do(fn func() error) error {
	err := cnins.WithNetNSPath(n.Path, func(cnins.NetNS) error { return fn() })
	if err != nil {
		return fmt.Errorf("in netns %s: %w", n.Name, err)
	}
	return nil
}

// Exec returns the argv that runs argv inside the namespace via `ip netns exec`.
func (n NS) Exec(argv ...string) []string {
	return append([]string{"ip", "netns", "exec", n.Name}, argv...)
}

// OwnedName returns the namespace name for name, owned by this process.
func OwnedName(name string) string {
	return fmt.Sprintf("%s%s-%s", Prefix, strconv.FormatInt(int64(os.Getpid()), 36), name)
}

// Create makes a new named namespace without moving the calling goroutine.
// It fails if the name is taken.
func Create(name string) (NS, error) {
	path := filepath.Join(RunDir, name)
	if _, err := os.Stat(path); err == nil {
		return NS{}, fmt.Errorf("create netns %s: already exists (run `strata lab down` or `make sweep` to remove leftovers)", name)
	}
	errc := make(chan error, 1)
	go func() {
		// netns.NewNamed moves the current thread into the new namespace; we
		// move it back, and if that fails we never unlock so the thread dies
		// with this goroutine instead of running other code in the wrong netns.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("read current netns: %w", err)
			return
		}
		defer func() { _ = orig.Close() }()
		h, err := netns.NewNamed(name)
		if err != nil {
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			errc <- fmt.Errorf("create netns %s: %w", name, err)
			return
		}
		_ = h.Close()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("restore netns after creating %s: %w", name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		return NS{}, err
	}
	n := NS{Name: name, Path: path}
	// Loopback up: nearly everything run inside expects it.
	if err := n.Do(func() error { return LinkUp("lo") }); err != nil {
		_ = Delete(name)
		return NS{}, err
	}
	return n, nil
}

// Open returns an existing named namespace.
func Open(name string) (NS, error) {
	path := filepath.Join(RunDir, name)
	if err := cnins.IsNSorErr(path); err != nil {
		return NS{}, fmt.Errorf("open netns %s: %w", name, err)
	}
	return NS{Name: name, Path: path}, nil
}

// Delete kills every process still inside the namespace, then unmounts and
// removes it. Deleting a namespace that does not exist is not an error.
func Delete(name string) error {
	path := filepath.Join(RunDir, name)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	KillProcessesIn(path)
	if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		// An unmounted but present file (crash mid-create) can only be removed.
		if rmErr := os.Remove(path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			return fmt.Errorf("delete netns %s: %w", name, err)
		}
	}
	return nil
}

// KillProcessesIn sends SIGKILL to every process whose network namespace is the
// one at nsPath (daemons started with `ip netns exec`, e.g. BIRD or FRR).
func KillProcessesIn(nsPath string) {
	var want syscall.Stat_t
	if err := syscall.Stat(nsPath, &want); err != nil {
		return
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", p.Name(), "ns", "net"), &st) != nil {
			continue
		}
		if st.Ino == want.Ino && st.Dev == want.Dev {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// LabOwner owns the lab's namespaces ("stlab-<name>"). They outlive the
// `strata-lab up` process, so they count as alive while LabStateDir exists;
// `strata-lab down` removes both.
const LabOwner = "lab"

// LabStateDir holds the running lab's state (PIDs, logs, kubeconfig).
const LabStateDir = "/run/strata-lab"

// LabName returns the namespace name of a lab host.
func LabName(host string) string { return Prefix + LabOwner + "-" + host }

// OwnerAlive reports whether an owner tag (a base-36 PID, or LabOwner) is
// still live.
func OwnerAlive(owner string) bool {
	if owner == LabOwner {
		_, err := os.Stat(LabStateDir)
		return err == nil
	}
	pid, err := strconv.ParseInt(owner, 36, 64)
	if err != nil || pid <= 0 {
		return false
	}
	if pid == int64(os.Getpid()) {
		return true
	}
	return syscall.Kill(int(pid), 0) == nil
}

// ownerAlive reports whether the owner encoded in a namespace name still runs.
func ownerAlive(name string) bool {
	rest := strings.TrimPrefix(name, Prefix)
	owner, _, ok := strings.Cut(rest, "-")
	return ok && OwnerAlive(owner)
}

// Sweep deletes namespaces named with Prefix whose owning process is gone, or
// all of them when all is true. It returns the names it removed.
func Sweep(all bool) ([]string, error) {
	entries, err := os.ReadDir(RunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sweep: list %s: %w", RunDir, err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, Prefix) || (!all && ownerAlive(name)) {
			continue
		}
		if err := Delete(name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/strata-net/strata/internal/nsutil"
)

// procs starts the lab's long-lived processes detached from the `up` process,
// tagged as the lab's (internal/owner), with a log and a PID file each in the
// state dir, so `down` (or a sweep) can stop them later by PID.
type procs struct{ dir string }

func (p *procs) logPath(name string) string { return filepath.Join(p.dir, "logs", name+".log") }
func (p *procs) pidPath(name string) string { return filepath.Join(p.dir, "pids", name+".pid") }

func (p *procs) start(name string, argv []string, env ...string) error {
	if pid := p.pid(name); pid > 0 && alive(pid) {
		return nil // idempotent `up`
	}
	for _, d := range []string{"logs", "pids"} {
		if err := os.MkdirAll(filepath.Join(p.dir, d), 0o755); err != nil {
			return err
		}
	}
	logf, err := os.OpenFile(p.logPath(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), append([]string{"STRATA_OWNER=" + nsutil.LabOwner}, env...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	if err := os.WriteFile(p.pidPath(name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }() // reap if it exits while we still run
	// A process that dies at once (bad flag, port taken) is reported now, with its log.
	time.Sleep(150 * time.Millisecond)
	if !alive(cmd.Process.Pid) {
		return fmt.Errorf("%s exited at start; see %s:\n%s", name, p.logPath(name), tail(p.logPath(name), 15))
	}
	return nil
}

func (p *procs) pid(name string) int {
	b, err := os.ReadFile(p.pidPath(name))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// stop ends a process: SIGTERM, then SIGKILL after grace.
func (p *procs) stop(name string, grace time.Duration) error {
	pid := p.pid(name)
	if pid <= 0 {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for deadline := time.Now().Add(5 * time.Second); alive(pid) && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
	}
	err := os.Remove(p.pidPath(name))
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return err
}

// kill sends SIGKILL at once (the e2e test's agent crash) and waits until
// the process is gone: a busy process can take seconds to exit on a loaded
// machine, and its successor must not find its listeners still bound.
func (p *procs) kill(name string) {
	pid := p.pid(name)
	if pid <= 0 {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(30 * time.Second); !gone(pid) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}

// gone reports whether a process has fully exited. A killed multi-threaded
// process shows its leader as a zombie while other threads still tear
// down and hold its sockets, so a zombie counts as gone only once it is
// the last thread.
func gone(pid int) bool {
	if alive(pid) {
		return false
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	return err != nil || len(tasks) <= 1
}

// names lists the processes with PID files.
func (p *procs) names() []string {
	es, _ := os.ReadDir(filepath.Join(p.dir, "pids"))
	var out []string
	for _, e := range es {
		out = append(out, strings.TrimSuffix(e.Name(), ".pid"))
	}
	return out
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i <= 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/owner"
)

// Lab is a lab described by a Spec, with its state in nsutil.LabStateDir.
type Lab struct {
	spec   *Spec
	dir    string
	binDir string // kube-apiserver, etcd (make tools)
	out    io.Writer
	procs  *procs
	cp     *controlPlane
}

// Options locate the lab's inputs.
type Options struct {
	ToolsBin string    // kube-apiserver, etcd, cnitool (`make tools`)
	Progress io.Writer // step-by-step progress
}

// Open prepares a lab for spec; nothing is created until Up.
func Open(spec *Spec, opts Options) *Lab {
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	dir := nsutil.LabStateDir
	l := &Lab{spec: spec, dir: dir, binDir: opts.ToolsBin, out: opts.Progress, procs: &procs{dir: dir}}
	ctl := l.ns(ctlHost)
	l.cp = &controlPlane{dir: filepath.Join(dir, "controlplane"), addr: spec.MgmtAddr(0).String(), port: 6443,
		binDir: opts.ToolsBin, procs: l.procs, ctlExec: ctl.Exec, dial: ctl.DialContext}
	return l
}

type step struct {
	name string
	run  func(context.Context) error
}

// Up builds the lab; it is idempotent: steps already done are skipped.
func (l *Lab) Up(ctx context.Context) error {
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return fmt.Errorf("create lab state dir: %w", err)
	}
	owner.MarkLab()
	steps := []step{
		{"network namespaces, links and switches", func(context.Context) error { return l.buildNetwork() }},
		{"kube-apiserver + etcd on the management network", l.cp.start},
	}
	steps = append(steps, l.extraSteps()...)
	for i, s := range steps {
		t0 := time.Now()
		fmt.Fprintf(l.out, "[%d/%d] %s ...", i+1, len(steps), s.name)
		if err := s.run(ctx); err != nil {
			fmt.Fprintln(l.out, " failed")
			return fmt.Errorf("lab up, step %d (%s): %w\nlogs are in %s/logs; `strata-lab down` removes the half-built lab", i+1, s.name, err, l.dir)
		}
		fmt.Fprintf(l.out, " done (%s)\n", time.Since(t0).Round(10*time.Millisecond))
	}
	return nil
}

// extraSteps is where the datapath steps join (BGP routers, ECS emulator,
// agents, pods); kept separate so Up reads as the list of steps.
func (l *Lab) extraSteps() []step {
	return []step{
		{"ECS OpenAPI + metadata emulator", l.startECS},
		{"Node objects with their declared labels", l.createNodes},
		{"one strata-agent per node", l.startAgents},
		{"pods through strata-cni (cnitool, as a runtime)", l.createPods},
	}
}

// Down removes everything the lab made: processes by PID, namespaces (with
// anything still running inside), and the state dir.
func (l *Lab) Down() error {
	var errs []error
	for _, n := range l.procs.names() {
		errs = append(errs, l.procs.stop(n, 5*time.Second))
	}
	if pods, err := l.pods(); err == nil {
		for _, p := range pods {
			errs = append(errs, nsutil.Delete(nsutil.LabName(p.host())))
		}
	}
	for _, h := range l.hosts() {
		errs = append(errs, nsutil.Delete(nsutil.LabName(h)))
	}
	errs = append(errs, os.RemoveAll(l.dir))
	return errors.Join(errs...)
}

// Fail cuts a named link; Heal restores it.
func (l *Lab) Fail(link string) error { return l.setLink(link, false) }

// Heal restores a link cut by Fail.
func (l *Lab) Heal(link string) error { return l.setLink(link, true) }

// Kubeconfig returns the admin kubeconfig's contents.
func (l *Lab) Kubeconfig() string { return l.cp.kubeconfig() }

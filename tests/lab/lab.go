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
	repo   string // the source tree: deploy/crds
}

// Options locate the lab's inputs.
type Options struct {
	ToolsBin string    // kube-apiserver, etcd, cnitool (`make tools`)
	Repo     string    // the source tree (for deploy/crds); default: found from the spec file
	Progress io.Writer // step-by-step progress
}

// Open prepares a lab for spec; nothing is created until Up.
func Open(spec *Spec, opts Options) *Lab {
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	dir := nsutil.LabStateDir
	l := &Lab{spec: spec, dir: dir, binDir: opts.ToolsBin, out: opts.Progress, procs: &procs{dir: dir}, repo: opts.Repo}
	if l.repo == "" {
		l.repo = findRepo(spec.path)
	}
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
		{"BIRD on the VBR and the IDC vSwitch", l.startRouters},
		{"ECS OpenAPI + metadata emulator", l.startECS},
		{"Strata's CRDs", l.installCRDs},
		{"NodePools, Node objects with their declared labels, BGPPeers for the edge nodes", func(ctx context.Context) error {
			if err := l.createPools(ctx); err != nil {
				return err
			}
			if err := l.createNodes(ctx); err != nil {
				return err
			}
			return l.createBGPPeers(ctx)
		}},
		{"one strata-agent per node", l.startAgents},
		{"pods through strata-cni (cnitool, as a runtime)", l.createPods},
		{"paths settle (BGP converged, hold-downs passed)", l.settle},
	}
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

// Fail cuts a named link: both ends lose carrier, so the routers' BGP
// withdraws at once.
func (l *Lab) Fail(link string) error { return l.setLink(link, false) }

// FailSilent cuts a named link silently: every packet is dropped while both
// ends keep carrier, so BGP holds the routes until its hold time expires.
func (l *Lab) FailSilent(link string) error { return l.silenceLink(link, true) }

// Heal restores a link cut by Fail or FailSilent.
func (l *Lab) Heal(link string) error {
	if err := l.silenceLink(link, false); err != nil {
		return err
	}
	return l.setLink(link, true)
}

// Kubeconfig returns the admin kubeconfig's contents.
func (l *Lab) Kubeconfig() string { return l.cp.kubeconfig() }

// findRepo walks up from a file to the directory holding go.mod.
func findRepo(from string) string {
	dir, _ := filepath.Abs(filepath.Dir(from))
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return "."
}

package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/strata-net/strata/tests/harness/routerd"
)

// startRouters runs BIRD on every router that speaks BGP: the VBR in the VPC
// and the IDC vSwitch, which re-advertises what it learns (edge pod CIDRs to
// the VBR, the VPC's CIDR to the edge nodes) and installs it in its kernel.
func (l *Lab) startRouters(context.Context) error {
	for _, r := range l.spec.Routers {
		if r.BGP == nil {
			continue
		}
		dir := filepath.Join(l.dir, "bird", r.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		cfg := routerd.BIRDConfig{RouterID: r.BGP.RouterID.String(), ASN: r.BGP.ASN, Kernel: true, Transit: true}
		for _, p := range r.BGP.Announce {
			cfg.Announce = append(cfg.Announce, p.String())
		}
		for _, p := range r.BGP.Peers {
			cfg.Neighbors = append(cfg.Neighbors, routerd.Neighbor{Name: p.Name, Address: p.Address.String(), ASN: p.ASN,
				HoldTime: 9, GracefulRestart: true, RestartTime: 60})
		}
		b := routerd.NewBIRD(l.ns(r.Name), dir, cfg)
		if pid := l.procs.pid("bird-" + r.Name); pid > 0 && alive(pid) {
			continue // idempotent up
		}
		if err := b.Start(); err != nil {
			return fmt.Errorf("BIRD on %s: %w", r.Name, err)
		}
		_ = os.MkdirAll(filepath.Dir(l.procs.pidPath("bird-"+r.Name)), 0o755)
		if err := os.WriteFile(l.procs.pidPath("bird-"+r.Name), []byte(fmt.Sprint(b.PID())), 0o644); err != nil {
			return err
		}
	}
	return nil
}

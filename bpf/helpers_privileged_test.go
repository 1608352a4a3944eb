//go:build privileged

package bpf

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/nsutil"
)

// addAddr adds a second address (e.g. IPv6 beside netlab's IPv4) to ifname in
// the current namespace, without duplicate address detection.
func addAddr(ifname, cidr string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	a.Flags |= 0x80 // IFA_F_NODAD
	if err := netlink.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add %s to %s: %w", cidr, ifname, err)
	}
	return nil
}

// sh runs argv inside ns and returns combined output.
func sh(ns nsutil.NS, argv ...string) (string, error) {
	full := ns.Exec(argv...)
	out, err := exec.Command(full[0], full[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
	}
	return string(out), nil
}

package nsutil

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// LinkUp sets the named link up in the current namespace.
func LinkUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set link %s up: %w", name, err)
	}
	return nil
}

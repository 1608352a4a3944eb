package ecsemu

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/internal/nsutil"
)

// VethAttacher makes an attached ENI a real link: a veth pair whose bridge
// end is a port of the vSwitch bridge (its own namespace) and whose other
// end appears in the instance's node namespace as eth<DeviceIndex> with the
// ENI's MAC. Detach deletes the pair.
type VethAttacher struct {
	Bridge     nsutil.NS
	BridgeName string               // default "br0" (netlab's switch bridge)
	Nodes      map[string]nsutil.NS // instance ID -> node namespace

	mu sync.Mutex
}

func portName(eniID string) string {
	// "e" + the last 14 characters of the ID fits IFNAMSIZ
	if len(eniID) > 14 {
		eniID = eniID[len(eniID)-14:]
	}
	return "e" + eniID
}

// AttachLink implements LinkAttacher.
func (v *VethAttacher) AttachLink(ctx context.Context, instanceID string, eni ENILink) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	node, ok := v.Nodes[instanceID]
	if !ok {
		return fmt.Errorf("VethAttacher: no node namespace for instance %s", instanceID)
	}
	f, err := os.Open(node.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := v.BridgeName
	if br == "" {
		br = "br0"
	}
	return v.Bridge.Do(func() error {
		port := portName(eni.ID)
		if l, err := netlink.LinkByName(port); err == nil {
			_ = netlink.LinkDel(l) // a leftover from an earlier attach
		}
		ve := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port}, PeerName: fmt.Sprintf("eth%d", eni.DeviceIndex),
			PeerHardwareAddr: eni.MAC, PeerNamespace: netlink.NsFd(int(f.Fd()))}
		if err := netlink.LinkAdd(ve); err != nil {
			return fmt.Errorf("add veth for ENI %s: %w", eni.ID, err)
		}
		l, err := netlink.LinkByName(port)
		if err != nil {
			return err
		}
		b, err := netlink.LinkByName(br)
		if err != nil {
			return fmt.Errorf("vSwitch bridge %s: %w", br, err)
		}
		if err := netlink.LinkSetMaster(l, b); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
}

// DetachLink implements LinkAttacher.
func (v *VethAttacher) DetachLink(ctx context.Context, instanceID string, eni ENILink) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.Bridge.Do(func() error {
		l, err := netlink.LinkByName(portName(eni.ID))
		if err != nil {
			return nil // already gone
		}
		return netlink.LinkDel(l)
	})
}

package vxlan

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
)

// ensureDevice creates the device, or adopts an existing one: attributes that
// can change in place (MTU, MAC, up) are fixed in place, the rest (VNI, port,
// source address, underlay link, learning) by recreating it. Either way what
// changed is logged. Recreation drops every entry on the device, and the sync
// that follows re-adds them all: that is the full resync.
func (d *Datapath) ensureDevice() (netlink.Link, error) {
	if d.closed {
		return nil, errors.New("vxlan: datapath is closed; create a new one with New")
	}
	underIdx, mtu, err := d.underlay()
	if err != nil {
		return nil, err
	}
	link, err := d.nl.LinkByName(d.cfg.Name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return d.createDevice(underIdx, mtu, "device missing")
	case err != nil:
		return nil, fmt.Errorf("vxlan: look up device %s: %w", d.cfg.Name, err)
	}
	vx, ok := link.(*netlink.Vxlan)
	if !ok {
		return nil, fmt.Errorf("vxlan: a %s link named %s exists and is not a VXLAN device; it is not ours, so remove it by hand or set DeviceConfig.Name to another name", link.Type(), d.cfg.Name)
	}
	if wrong := d.immutableDiffs(vx, underIdx); len(wrong) > 0 {
		d.log.Warn("vxlan device has wrong attributes; recreating it", "wrong", strings.Join(wrong, ", "))
		if err := d.nl.LinkDel(vx); err != nil {
			return nil, fmt.Errorf("vxlan: delete misconfigured device %s (%s): %w", d.cfg.Name, strings.Join(wrong, ", "), err)
		}
		return d.createDevice(underIdx, mtu, "recreated: "+strings.Join(wrong, ", "))
	}
	if vx.MTU != mtu {
		d.log.Info("fixing vxlan device MTU", "from", vx.MTU, "to", mtu)
		if err := d.nl.LinkSetMTU(vx, mtu); err != nil {
			return nil, fmt.Errorf("vxlan: set MTU %d on %s: %w", mtu, d.cfg.Name, err)
		}
		vx.MTU = mtu
	}
	if !hwEqual(vx.HardwareAddr, d.cfg.MAC) {
		d.log.Info("fixing vxlan device MAC", "from", vx.HardwareAddr.String(), "to", d.cfg.MAC.String())
		if err := d.nl.LinkSetHardwareAddr(vx, d.cfg.MAC); err != nil {
			return nil, fmt.Errorf("vxlan: set MAC %s on %s: %w", d.cfg.MAC, d.cfg.Name, err)
		}
	}
	if vx.Flags&net.FlagUp == 0 {
		d.log.Info("vxlan device was down; bringing it up")
		if err := d.nl.LinkSetUp(vx); err != nil {
			return nil, fmt.Errorf("vxlan: set %s up: %w", d.cfg.Name, err)
		}
	}
	return vx, nil
}

// underlay resolves the underlay link index (0 when not bound) and the
// device MTU.
func (d *Datapath) underlay() (int, int, error) {
	mtu := d.cfg.MTU
	if d.cfg.UnderlayLink == "" {
		return 0, mtu, nil
	}
	ul, err := d.nl.LinkByName(d.cfg.UnderlayLink)
	if err != nil {
		return 0, 0, fmt.Errorf("vxlan: underlay link %s (DeviceConfig.UnderlayLink): %w", d.cfg.UnderlayLink, err)
	}
	if mtu == 0 {
		mtu = ul.Attrs().MTU - Overhead
		if mtu < 576 {
			return 0, 0, fmt.Errorf("vxlan: underlay link %s has MTU %d, too small for VXLAN (device MTU would be %d); raise it or set DeviceConfig.MTU", d.cfg.UnderlayLink, ul.Attrs().MTU, mtu)
		}
	}
	return ul.Attrs().Index, mtu, nil
}

// immutableDiffs lists the attributes of vx that differ from the config and
// cannot be changed without recreating the device.
func (d *Datapath) immutableDiffs(vx *netlink.Vxlan, underIdx int) []string {
	var wrong []string
	if uint32(vx.VxlanId) != d.cfg.VNI {
		wrong = append(wrong, fmt.Sprintf("VNI %d, want %d", vx.VxlanId, d.cfg.VNI))
	}
	if vx.Port != int(d.cfg.Port) {
		wrong = append(wrong, fmt.Sprintf("port %d, want %d", vx.Port, d.cfg.Port))
	}
	if src, _ := addrOf(vx.SrcAddr); src != d.cfg.LocalIP.Unmap() {
		wrong = append(wrong, fmt.Sprintf("local %s, want %s", vx.SrcAddr, d.cfg.LocalIP))
	}
	if vx.Learning {
		wrong = append(wrong, "learning on, want off")
	}
	if vx.FlowBased {
		wrong = append(wrong, "external (flow-based), want not")
	}
	if len(vx.Group) > 0 && !vx.Group.IsUnspecified() {
		wrong = append(wrong, fmt.Sprintf("group %s, want none", vx.Group))
	}
	if underIdx != 0 && vx.VtepDevIndex != underIdx {
		wrong = append(wrong, fmt.Sprintf("underlay ifindex %d, want %d (%s)", vx.VtepDevIndex, underIdx, d.cfg.UnderlayLink))
	}
	return wrong
}

func (d *Datapath) createDevice(underIdx, mtu int, why string) (netlink.Link, error) {
	vx := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: d.cfg.Name, MTU: mtu, HardwareAddr: d.cfg.MAC},
		VxlanId:      int(d.cfg.VNI),
		VtepDevIndex: underIdx,
		SrcAddr:      d.cfg.LocalIP.Unmap().AsSlice(),
		Port:         int(d.cfg.Port),
		Learning:     false,
	}
	if err := d.nl.LinkAdd(vx); err != nil {
		return nil, fmt.Errorf("vxlan: create device %s (VNI %d, port %d, local %s): %w", d.cfg.Name, d.cfg.VNI, d.cfg.Port, d.cfg.LocalIP, err)
	}
	link, err := d.nl.LinkByName(d.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("vxlan: read back new device %s: %w", d.cfg.Name, err)
	}
	if err := d.nl.LinkSetUp(link); err != nil {
		_ = d.nl.LinkDel(link)
		return nil, fmt.Errorf("vxlan: set new device %s up: %w", d.cfg.Name, err)
	}
	d.status.Recreations++
	d.metrics.recreations.Inc()
	d.log.Info("vxlan device created", "why", why, "vni", d.cfg.VNI, "port", d.cfg.Port, "local", d.cfg.LocalIP, "mtu", mtu, "mac", d.cfg.MAC.String())
	return link, nil
}

package wan

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// kernel is the kernel's WireGuard, driven over generic netlink. The device
// outlives the agent, so a restarting agent adopts it and traffic never stops.
type kernel struct {
	name string
	c    *wgctrl.Client
}

func openKernel(name string) (*kernel, error) {
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("wan: open the WireGuard netlink control: %w", err)
	}
	return &kernel{name: name, c: c}, nil
}

func (k *kernel) impl() Impl { return ImplKernel }

func (k *kernel) setup(priv wgtypes.Key, port int, mark uint32) error {
	fwmark := int(mark)
	if err := k.c.ConfigureDevice(k.name, wgtypes.Config{PrivateKey: &priv, ListenPort: &port, FirewallMark: &fwmark}); err != nil {
		return fmt.Errorf("wan: configure kernel WireGuard %s (key, port %d): %w", k.name, port, err)
	}
	return nil
}

func (k *kernel) setKey(priv wgtypes.Key) error {
	return k.c.ConfigureDevice(k.name, wgtypes.Config{PrivateKey: &priv})
}

func (k *kernel) configure(pc peerConf) error {
	return k.c.ConfigureDevice(k.name, wgtypes.Config{Peers: []wgtypes.PeerConfig{kernelPeerConfig(pc)}})
}

func (k *kernel) peers() ([]devPeer, error) {
	d, err := k.c.Device(k.name)
	if err != nil {
		return nil, fmt.Errorf("wan: read kernel WireGuard %s: %w", k.name, err)
	}
	out := make([]devPeer, len(d.Peers))
	for i, p := range d.Peers {
		out[i] = kernelPeer(p)
	}
	return out, nil
}

func (k *kernel) close() error { return k.c.Close() } // the device stays for the next agent

// choose decides the implementation from what is asked, what link of that
// name exists already (its type, "" for none), and, when none exists, the
// result of trying to create a kernel WireGuard link. It is pure so every
// branch is unit-tested; the kernel path cannot run on kernels without
// WireGuard.
func choose(want Impl, existing string, addErr error) (Impl, string, error) {
	switch existing {
	case "wireguard":
		if want == ImplUserspace {
			return "", "", errors.New("a kernel WireGuard link of that name exists but impl=userspace was asked: delete it (`ip link del`) or drop the impl override")
		}
		return ImplKernel, "adopted the existing kernel WireGuard device", nil
	case "tun":
		// A userspace TUN disappears with the process that holds it, so one
		// that exists belongs to a live process: another agent.
		return "", "", errors.New("a TUN link of that name exists: another process (a second agent, or wireguard-go) holds it; stop it first")
	case "":
	default:
		return "", "", fmt.Errorf("a %s link of that name exists and is not WireGuard: it is not ours, so remove it by hand or set another device name", existing)
	}
	if want == ImplUserspace {
		return ImplUserspace, "userspace asked for", nil
	}
	if addErr == nil {
		return ImplKernel, "the kernel has WireGuard", nil
	}
	if kernelMissing(addErr) {
		if want == ImplKernel {
			return "", "", fmt.Errorf("impl=kernel asked but this kernel has no WireGuard (%w): load the wireguard module or leave impl to auto", addErr)
		}
		return ImplUserspace, "the kernel has no WireGuard (" + addErr.Error() + "): wireguard-go over TUN", nil
	}
	return "", "", fmt.Errorf("create a kernel WireGuard link: %w", addErr)
}

// kernelMissing reports the rtnetlink answer for an unknown link kind.
func kernelMissing(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.ENODEV)
}

// probeKernelLink looks up name and, when absent and the kernel may be used,
// tries to create it as a kernel WireGuard link. It returns the existing
// link's type ("" when none), the creation error, and a lookup failure.
func probeKernelLink(h *netlink.Handle, name string, mtu int, want Impl) (existing string, addErr, err error) {
	l, err := h.LinkByName(name)
	if err == nil {
		return l.Type(), nil, nil
	}
	var nf netlink.LinkNotFoundError
	if !errors.As(err, &nf) {
		return "", nil, fmt.Errorf("look up link %s: %w", name, err)
	}
	if want == ImplUserspace {
		return "", nil, nil
	}
	return "", h.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}), nil
}

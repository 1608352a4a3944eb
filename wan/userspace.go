package wan

import (
	"fmt"
	"log/slog"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// userspace is wireguard-go over a TUN device, configured in-process through
// its UAPI (no control socket: nothing else on the node can reconfigure it).
// The TUN and the UDP sockets are opened in the network namespace of the
// calling thread, and the tunnel lives exactly as long as this process.
type userspace struct {
	dev *device.Device
}

func openUserspace(name string, mtu int, log *slog.Logger) (*userspace, error) {
	t, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("wan: create TUN device %s for userspace WireGuard (is /dev/net/tun present? `modprobe tun`): %w", name, err)
	}
	l := &device.Logger{
		Verbosef: func(string, ...any) {},
		Errorf:   func(f string, a ...any) { log.Warn("wireguard-go: " + fmt.Sprintf(f, a...)) },
	}
	return &userspace{dev: device.NewDevice(t, conn.NewDefaultBind(), l)}, nil
}

func (u *userspace) impl() Impl { return ImplUserspace }

func (u *userspace) setup(priv wgtypes.Key, port int, mark uint32) error {
	// Listen port and mark before Up, so the sockets open once, here, in
	// this thread's namespace.
	if err := u.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\nfwmark=%d\n", hexKey(priv), port, mark)); err != nil {
		return fmt.Errorf("wan: configure userspace WireGuard (key, port %d): %w", port, err)
	}
	if err := u.dev.Up(); err != nil {
		return fmt.Errorf("wan: bring userspace WireGuard up on UDP port %d (port in use?): %w", port, err)
	}
	return nil
}

func (u *userspace) setKey(priv wgtypes.Key) error {
	return u.dev.IpcSet("private_key=" + hexKey(priv) + "\n")
}

func (u *userspace) configure(pc peerConf) error { return u.dev.IpcSet(uapiSet(pc)) }

func (u *userspace) peers() ([]devPeer, error) {
	s, err := u.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("wan: read userspace WireGuard state: %w", err)
	}
	return uapiPeers(s)
}

func (u *userspace) close() error {
	u.dev.Close() // closes the TUN too, which removes the link
	return nil
}

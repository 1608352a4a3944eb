package wan

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// backend is one WireGuard implementation. Both speak the same neutral
// types, so Reconcile is written once.
type backend interface {
	impl() Impl
	// setup sets the private key, listen port and the outer packets' mark
	// (once, at New).
	setup(priv wgtypes.Key, port int, mark uint32) error
	// configure adds, updates or removes one peer; its allowed IPs are
	// replaced, never merged.
	configure(pc peerConf) error
	peers() ([]devPeer, error)
	// setKey replaces the private key (rotation) without touching peers.
	setKey(priv wgtypes.Key) error
	close() error
}

// peerConf is one peer's wanted state on the device.
type peerConf struct {
	key        wgtypes.Key
	remove     bool
	endpoint   netip.AddrPort // zero: leave whatever the device has (learned)
	keepalive  time.Duration
	allowedIPs []netip.Prefix
	routes     []netip.Prefix // kernel routes into the device; not device state
}

// devPeer is one peer as the device reports it.
type devPeer struct {
	key           wgtypes.Key
	endpoint      netip.AddrPort
	allowedIPs    []netip.Prefix
	keepalive     time.Duration
	lastHandshake time.Time
	rx, tx        int64
}

func hexKey(k wgtypes.Key) string { return hex.EncodeToString(k[:]) }

// uapiSet renders a peer change in the WireGuard cross-platform UAPI
// ("set=1" body, https://www.wireguard.com/xplatform/).
func uapiSet(pc peerConf) string {
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\n", hexKey(pc.key))
	if pc.remove {
		b.WriteString("remove=true\n")
		return b.String()
	}
	if pc.endpoint.IsValid() {
		fmt.Fprintf(&b, "endpoint=%s\n", pc.endpoint)
	}
	fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(pc.keepalive/time.Second))
	b.WriteString("replace_allowed_ips=true\n")
	for _, p := range pc.allowedIPs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", p)
	}
	return b.String()
}

// uapiPeers parses a UAPI "get=1" answer into its peers.
func uapiPeers(s string) ([]devPeer, error) {
	var out []devPeer
	var cur *devPeer
	var hsSec, hsNsec int64
	flush := func() {
		if cur != nil {
			if hsSec != 0 || hsNsec != 0 {
				cur.lastHandshake = time.Unix(hsSec, hsNsec)
			}
			out = append(out, *cur)
		}
		hsSec, hsNsec = 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("uapi: line %q has no '='", line)
		}
		if k == "public_key" {
			flush()
			raw, err := hex.DecodeString(v)
			if err != nil || len(raw) != wgtypes.KeyLen {
				return nil, fmt.Errorf("uapi: public_key %q is not a 32-byte hex key", v)
			}
			cur = &devPeer{}
			copy(cur.key[:], raw)
			continue
		}
		if cur == nil {
			continue // device-level keys (private_key, listen_port, fwmark)
		}
		var err error
		switch k {
		case "endpoint":
			cur.endpoint, err = netip.ParseAddrPort(v)
		case "allowed_ip":
			var p netip.Prefix
			if p, err = netip.ParsePrefix(v); err == nil {
				cur.allowedIPs = append(cur.allowedIPs, p)
			}
		case "persistent_keepalive_interval":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 16)
			cur.keepalive = time.Duration(n) * time.Second
		case "last_handshake_time_sec":
			hsSec, err = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			hsNsec, err = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			cur.rx, err = strconv.ParseInt(v, 10, 64)
		case "tx_bytes":
			cur.tx, err = strconv.ParseInt(v, 10, 64)
		}
		if err != nil {
			return nil, fmt.Errorf("uapi: %s=%q: %w", k, v, err)
		}
	}
	flush()
	return out, sc.Err()
}

// kernelPeerConfig is pc in wgctrl's form.
func kernelPeerConfig(pc peerConf) wgtypes.PeerConfig {
	c := wgtypes.PeerConfig{PublicKey: pc.key, Remove: pc.remove}
	if pc.remove {
		return c
	}
	if pc.endpoint.IsValid() {
		c.Endpoint = net.UDPAddrFromAddrPort(pc.endpoint)
	}
	ka := pc.keepalive
	c.PersistentKeepaliveInterval = &ka
	c.ReplaceAllowedIPs = true
	for _, p := range pc.allowedIPs {
		c.AllowedIPs = append(c.AllowedIPs, net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	return c
}

// kernelPeer is a wgctrl peer in the neutral form.
func kernelPeer(p wgtypes.Peer) devPeer {
	d := devPeer{key: p.PublicKey, keepalive: p.PersistentKeepaliveInterval, lastHandshake: p.LastHandshakeTime, rx: p.ReceiveBytes, tx: p.TransmitBytes}
	if p.Endpoint != nil {
		d.endpoint = p.Endpoint.AddrPort()
		d.endpoint = netip.AddrPortFrom(d.endpoint.Addr().Unmap(), d.endpoint.Port())
	}
	for _, n := range p.AllowedIPs {
		a, _ := netip.AddrFromSlice(n.IP)
		ones, _ := n.Mask.Size()
		d.allowedIPs = append(d.allowedIPs, netip.PrefixFrom(a.Unmap(), ones))
	}
	return d
}

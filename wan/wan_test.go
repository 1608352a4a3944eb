package wan

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestKeyCreatedOnce0600AndReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	k1, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o, want 0600", st.Mode().Perm())
	}
	k2, err := LoadOrCreateKey(dir)
	if err != nil || k1 != k2 {
		t.Fatalf("second load: %v, same key %v", err, k1 == k2)
	}
}

func TestKeyReadableByOthersRefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreateKey(dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, KeyFile)
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreateKey(dir)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("mode %04o: err %v, want a refusal naming chmod 600", mode, err)
		}
	}
}

func TestKeyCorruptRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("err %v, want corrupt", err)
	}
}

func TestChooseImpl(t *testing.T) {
	missing := unix.EOPNOTSUPP
	cases := []struct {
		want     Impl
		existing string
		addErr   error
		impl     Impl
		fails    bool
	}{
		{ImplAuto, "", nil, ImplKernel, false},
		{ImplAuto, "", missing, ImplUserspace, false},
		{ImplAuto, "wireguard", nil, ImplKernel, false},
		{ImplKernel, "", missing, "", true},
		{ImplUserspace, "", nil, ImplUserspace, false},
		{ImplUserspace, "wireguard", nil, "", true},
		{ImplAuto, "tun", nil, "", true},
		{ImplAuto, "veth", nil, "", true},
		{ImplAuto, "", unix.EPERM, "", true},
	}
	for _, c := range cases {
		impl, _, err := choose(c.want, c.existing, c.addErr)
		if (err != nil) != c.fails || impl != c.impl {
			t.Errorf("choose(%q, %q, %v) = %q, %v; want %q, fails=%v", c.want, c.existing, c.addErr, impl, err, c.impl, c.fails)
		}
	}
}

func key(t *testing.T) string {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}

func TestValidatePeersIsolatesBadOnes(t *testing.T) {
	self, ka, kb := key(t), key(t), key(t)
	pfx := netip.MustParsePrefix
	peers := []Peer{
		{Name: "b", PublicKey: kb, AllowedIPs: []netip.Prefix{pfx("10.244.2.0/24")}},
		{Name: "a", PublicKey: ka, AllowedIPs: []netip.Prefix{pfx("10.244.1.0/24")}, Endpoint: netip.MustParseAddrPort("203.0.113.2:51871")},
		{Name: "bad-key", PublicKey: "xyz"},
		{Name: "self", PublicKey: self},
		{Name: "c-dup-prefix", PublicKey: key(t), AllowedIPs: []netip.Prefix{pfx("10.244.1.0/24")}},
		{Name: "d-dup-key", PublicKey: ka},
		{Name: "e-keepalive", PublicKey: key(t), Keepalive: 1500 * time.Millisecond},
	}
	ok, errs := validatePeers(peers, self)
	if len(ok) != 2 || ok[0].Name != "a" || ok[1].Name != "b" {
		t.Fatalf("valid = %+v, want a and b", ok)
	}
	bad := map[string]bool{}
	for _, e := range errs {
		var pe *PeerError
		if !errors.As(e, &pe) {
			t.Fatalf("error %v is not a PeerError", e)
		}
		bad[pe.Peer] = true
	}
	for _, n := range []string{"bad-key", "self", "c-dup-prefix", "d-dup-key", "e-keepalive"} {
		if !bad[n] {
			t.Errorf("peer %s not rejected (errors %v)", n, errs)
		}
	}
}

func TestUAPIRoundTrip(t *testing.T) {
	k, _ := parseKey(key(t))
	pc := peerConf{key: k, endpoint: netip.MustParseAddrPort("198.51.100.2:51871"), keepalive: 10 * time.Second,
		allowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("192.168.30.11/32")}}
	set := uapiSet(pc)
	for _, want := range []string{"replace_allowed_ips=true\n", "persistent_keepalive_interval=10\n", "endpoint=198.51.100.2:51871\n", "allowed_ip=192.168.30.11/32\n"} {
		if !strings.Contains(set, want) {
			t.Fatalf("uapi set %q lacks %q", set, want)
		}
	}
	get := "private_key=00\nlisten_port=51871\n" + strings.Replace(set, "replace_allowed_ips=true\n", "", 1) +
		"last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\nrx_bytes=10\ntx_bytes=20\nprotocol_version=1\n"
	ps, err := uapiPeers(get)
	if err != nil || len(ps) != 1 {
		t.Fatalf("parse: %v %+v", err, ps)
	}
	p := ps[0]
	if p.key != k || p.endpoint != pc.endpoint || p.keepalive != pc.keepalive || len(p.allowedIPs) != 2 || p.rx != 10 || p.tx != 20 || p.lastHandshake.Unix() != 1700000000 {
		t.Fatalf("parsed %+v, want %+v", p, pc)
	}
	if rm := uapiSet(peerConf{key: k, remove: true}); !strings.HasSuffix(rm, "remove=true\n") || strings.Contains(rm, "allowed_ip") {
		t.Fatalf("remove = %q", rm)
	}
}

func TestConfigDefaultsAndErrors(t *testing.T) {
	c, err := Config{StateDir: "/x"}.withDefaults()
	if err != nil || c.Name != DeviceName || c.Port != DefaultPort || c.MTU != DefaultMTU || c.Keepalive != DefaultKeepalive {
		t.Fatalf("defaults %+v %v", c, err)
	}
	if _, err := (Config{}).withDefaults(); err == nil || !strings.Contains(err.Error(), "stateDir") {
		t.Fatalf("missing stateDir: %v", err)
	}
	if _, err := (Config{StateDir: "/x", MTU: 500, Impl: "bogus"}).withDefaults(); err == nil || !strings.Contains(err.Error(), "mtu=500") || !strings.Contains(err.Error(), "impl=") {
		t.Fatalf("bad mtu/impl: %v", err)
	}
}

func FuzzUAPIPeers(f *testing.F) {
	f.Add("public_key=" + strings.Repeat("ab", 32) + "\nendpoint=1.2.3.4:5\nallowed_ip=10.0.0.0/8\n")
	f.Add("listen_port=1\n")
	f.Fuzz(func(t *testing.T, s string) { _, _ = uapiPeers(s) })
}

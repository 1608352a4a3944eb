package peersync

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strata-net/strata/bgp"
)

func cachedPeers() []bgp.PeerConfig {
	return []bgp.PeerConfig{
		{Address: netip.MustParseAddr("192.168.10.1"), ASN: 65010, LocalASN: 65011, Password: "s3cret", HoldTime: 9 * time.Second,
			KeepaliveTime: 3 * time.Second, ConnectRetry: 2 * time.Second, GracefulRestart: true, RestartTime: 120 * time.Second,
			MultihopTTL: 2, RemotePort: 1179, LocalAddress: netip.MustParseAddr("192.168.10.11"),
			Import: bgp.ImportPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}, MaxPrefixes: 500},
		{Address: netip.MustParseAddr("fd00::1"), ASN: 45104, Passive: true},
	}
}

func TestCacheRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), CacheFile)
	if _, _, err := LoadCache(path); !errors.Is(err, ErrNoCache) {
		t.Fatalf("missing cache: %v, want ErrNoCache", err)
	}
	want := cachedPeers()
	if err := SaveCache(path, want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache mode %v, %v: want 0600 (it holds passwords)", fi.Mode(), err)
	}
	got, skipped, err := LoadCache(path)
	if err != nil || len(skipped) != 0 {
		t.Fatalf("load: %v %v", err, skipped)
	}
	if !slices.EqualFunc(got, want, bgp.PeerConfig.Equal) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	// Overwriting leaves no temporary files behind.
	if err := SaveCache(path, want[:1]); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Fatalf("state dir holds %d files after two saves, want 1", len(ents))
	}
}

func TestCacheCorrupt(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"truncated": `{"version":1,"peers":[{"address":"192.168`,
		"garbage":   "\x00\x01not json",
		"version":   `{"version":99,"peers":[]}`,
		"bad addr":  `{"version":1,"peers":[{"address":"router-1","asn":1}]}`,
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		peers, _, err := LoadCache(path)
		if err == nil || !strings.Contains(err.Error(), path) || len(peers) != 0 {
			t.Errorf("%s: peers %v, err %v: want an error naming the file", name, peers, err)
		}
		// Seed starts the speaker with nothing rather than failing.
		rec := &recorder{}
		if n := Seed(context.Background(), rec, path, nil); n != 0 || len(rec.added) != 0 {
			t.Errorf("%s: seeded %d peers from a corrupt cache", name, n)
		}
	}
	// One bad peer is skipped with its reason; the others load.
	path := filepath.Join(dir, "onebad")
	if err := os.WriteFile(path, []byte(`{"version":1,"peers":[{"address":"10.0.0.1","asn":0},{"address":"10.0.0.2","asn":65010}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	peers, skipped, err := LoadCache(path)
	if err != nil || len(peers) != 1 || peers[0].Address != netip.MustParseAddr("10.0.0.2") || len(skipped) != 1 || !strings.Contains(skipped[0].Error(), "peers[0]") {
		t.Fatalf("one bad peer: %v %v %v", peers, skipped, err)
	}
}

type recorder struct{ added []bgp.PeerConfig }

func (r *recorder) AddPeer(_ context.Context, p bgp.PeerConfig) error {
	if p.ASN == 65099 {
		return errors.New("refused")
	}
	r.added = append(r.added, p)
	return nil
}

func TestSeedSkipsOnlyTheFailingPeer(t *testing.T) {
	path := filepath.Join(t.TempDir(), CacheFile)
	peers := append(cachedPeers(), bgp.PeerConfig{Address: netip.MustParseAddr("10.0.0.9"), ASN: 65099})
	if err := SaveCache(path, peers); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	if n := Seed(context.Background(), rec, path, nil); n != 2 || len(rec.added) != 2 {
		t.Fatalf("seeded %d (%v), want the 2 good peers", n, rec.added)
	}
}

// Whatever the file holds, LoadCache never panics, and every peer it
// returns is one the speaker accepts.
func FuzzLoadCache(f *testing.F) {
	dir := f.TempDir()
	good := filepath.Join(dir, "good")
	if err := SaveCache(good, cachedPeers()); err != nil {
		f.Fatal(err)
	}
	b, _ := os.ReadFile(good)
	f.Add(b)
	f.Add([]byte(`{"version":1,"peers":[{"address":"10.0.0.1","asn":0,"holdSeconds":-5}]}`))
	f.Add([]byte(`{"version":1,"peers":[{"address":"10.0.0.1","asn":1,"allow":["10.1.2.3/8"]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		path := filepath.Join(t.TempDir(), CacheFile)
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
		peers, _, err := LoadCache(path)
		if err != nil {
			if len(peers) != 0 {
				t.Fatalf("error %v with %d peers", err, len(peers))
			}
			return
		}
		for _, p := range peers {
			if err := p.Validate(); err != nil {
				t.Fatalf("loaded a peer the speaker refuses: %v", err)
			}
		}
	})
}

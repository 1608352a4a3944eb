package peersync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/strata-net/strata/bgp"
)

// CacheFile is the name of the peer cache in the agent's state dir.
const CacheFile = "bgp-peers.json"

// cacheVersion changes when the cached form does.
const cacheVersion = 1

// cachedPeer is the on-disk form of a bgp.PeerConfig: everything a session
// needs, the password included (so the file is 0600).
type cachedPeer struct {
	Address         netip.Addr     `json:"address"`
	ASN             uint32         `json:"asn"`
	LocalASN        uint32         `json:"localASN,omitempty"`
	Password        string         `json:"password,omitempty"`
	HoldSeconds     int64          `json:"holdSeconds,omitempty"`
	KeepaliveSecs   int64          `json:"keepaliveSeconds,omitempty"`
	ConnectRetry    int64          `json:"connectRetrySeconds,omitempty"`
	GracefulRestart bool           `json:"gracefulRestart,omitempty"`
	RestartSeconds  int64          `json:"restartSeconds,omitempty"`
	MultihopTTL     uint8          `json:"multihopTTL,omitempty"`
	Passive         bool           `json:"passive,omitempty"`
	RemotePort      uint16         `json:"remotePort,omitempty"`
	LocalAddress    netip.Addr     `json:"localAddress,omitzero"`
	Allow           []netip.Prefix `json:"allow,omitempty"`
	MaxPrefixes     uint32         `json:"maxPrefixes,omitempty"`
}

type cacheFile struct {
	Version int          `json:"version"`
	Saved   time.Time    `json:"saved"`
	Peers   []cachedPeer `json:"peers"`
}

func toCached(p bgp.PeerConfig) cachedPeer {
	return cachedPeer{Address: p.Address, ASN: p.ASN, LocalASN: p.LocalASN, Password: p.Password,
		HoldSeconds: int64(p.HoldTime / time.Second), KeepaliveSecs: int64(p.KeepaliveTime / time.Second),
		ConnectRetry: int64(p.ConnectRetry / time.Second), GracefulRestart: p.GracefulRestart,
		RestartSeconds: int64(p.RestartTime / time.Second), MultihopTTL: p.MultihopTTL, Passive: p.Passive,
		RemotePort: p.RemotePort, LocalAddress: p.LocalAddress, Allow: p.Import.Allow, MaxPrefixes: p.MaxPrefixes}
}

func (c cachedPeer) config() bgp.PeerConfig {
	return bgp.PeerConfig{Address: c.Address, ASN: c.ASN, LocalASN: c.LocalASN, Password: c.Password,
		HoldTime: time.Duration(c.HoldSeconds) * time.Second, KeepaliveTime: time.Duration(c.KeepaliveSecs) * time.Second,
		ConnectRetry: time.Duration(c.ConnectRetry) * time.Second, GracefulRestart: c.GracefulRestart,
		RestartTime: time.Duration(c.RestartSeconds) * time.Second, MultihopTTL: c.MultihopTTL, Passive: c.Passive,
		RemotePort: c.RemotePort, LocalAddress: c.LocalAddress, Import: bgp.ImportPolicy{Allow: c.Allow}, MaxPrefixes: c.MaxPrefixes}
}

// SaveCache writes peers to path atomically (a temporary file in the same
// directory, fsynced, renamed over the old one), readable by root only.
func SaveCache(path string, peers []bgp.PeerConfig) error {
	f := cacheFile{Version: cacheVersion, Saved: time.Now().UTC()}
	for _, p := range peers {
		f.Peers = append(f.Peers, toCached(p))
	}
	slices.SortFunc(f.Peers, func(a, b cachedPeer) int { return a.Address.Compare(b.Address) })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode BGP peer cache: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write BGP peer cache %s: %w (is the state dir writable?)", path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	// CreateTemp makes the file 0600; say so anyway, the password is in it.
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(b)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write BGP peer cache %s: %w", path, err)
	}
	return nil
}

// ErrNoCache is LoadCache's error when there is no cache yet.
var ErrNoCache = errors.New("no BGP peer cache yet")

// LoadCache reads the peers SaveCache wrote. A missing file is ErrNoCache;
// an unreadable or corrupt one is an error that names the file. Peers the
// speaker would refuse are dropped, each with its reason in skipped.
func LoadCache(path string) (peers []bgp.PeerConfig, skipped []error, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, ErrNoCache
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read BGP peer cache %s: %w", path, err)
	}
	var f cacheFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, nil, fmt.Errorf("BGP peer cache %s is corrupt (%v): ignoring it; the next sync with the API server rewrites it", path, err)
	}
	if f.Version != cacheVersion {
		return nil, nil, fmt.Errorf("BGP peer cache %s has version %d, this agent reads %d: ignoring it; the next sync with the API server rewrites it", path, f.Version, cacheVersion)
	}
	for i, c := range f.Peers {
		p := c.config()
		if err := p.Validate(); err != nil {
			skipped = append(skipped, fmt.Errorf("BGP peer cache %s: peers[%d] (%s): %w", path, i, c.Address, err))
			continue
		}
		peers = append(peers, p)
	}
	return peers, skipped, nil
}

// PeerAdder is the part of *bgp.Speaker Seed needs.
type PeerAdder interface {
	AddPeer(ctx context.Context, p bgp.PeerConfig) error
}

// Seed adds the cached peers to the speaker, so sessions come up while the
// API server is away; the first reconcile replaces them with the BGPPeers.
// One peer that fails is logged and skipped; the others are added. It
// returns how many were added.
func Seed(ctx context.Context, sp PeerAdder, path string, log *slog.Logger) int {
	if log == nil {
		log = slog.Default()
	}
	peers, skipped, err := LoadCache(path)
	if errors.Is(err, ErrNoCache) {
		return 0
	}
	if err != nil {
		log.Warn("starting without cached BGP peers", "err", err)
		return 0
	}
	for _, e := range skipped {
		log.Warn("skip cached BGP peer", "err", e)
	}
	n := 0
	for _, p := range peers {
		if err := sp.AddPeer(ctx, p); err != nil {
			log.Warn("skip cached BGP peer", "peer", p.Address, "err", err)
			continue
		}
		n++
	}
	log.Info("BGP peers started from the cache until the API server is reached", "peers", n, "cache", path)
	return n
}

package probe

import (
	"encoding/base64"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-net/strata/topology"
)

func key(b byte, n int) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune('a'+b)), n)))
}

func TestParseKeyring(t *testing.T) {
	kr, err := ParseKeyring([]byte("# primary first\n" + key(0, 32) + "\n\n" + key(1, 16) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(kr.GetKeys()) != 2 || string(kr.GetPrimaryKey()) != strings.Repeat("a", 32) {
		t.Fatalf("keys %d", len(kr.GetKeys()))
	}
	for in, want := range map[string]string{
		"":                     "keyring is empty",
		"not base64!":          "line 1: not base64",
		"# x\n" + key(0, 10):   "line 2: 10-byte key: want 16, 24 or 32",
		key(0, 32) + "\n%%%\n": "line 2",
	} {
		if _, err := ParseKeyring([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err %v, want %q", in, err, want)
		}
	}
}

func baseCfg() Config {
	return Config{Facts: topology.NodeFacts{Name: "n1", Pool: "p1", ProbeIP: netip.MustParseAddr("127.0.0.1")}, BindAddr: "127.0.0.1"}
}

func TestConfigValidation(t *testing.T) {
	cases := map[string]struct {
		mut  func(*Config)
		want string
	}{
		"unencrypted refused": {func(c *Config) {}, "refusing unencrypted gossip"},
		"no name":             {func(c *Config) { c.Insecure = true; c.Facts.Name = "" }, "Facts.Name and Facts.Pool are required"},
		"no bind":             {func(c *Config) { c.Insecure = true; c.BindAddr = "" }, "BindAddr is required"},
		"period too short":    {func(c *Config) { c.Insecure = true; c.Period = time.Millisecond }, "Period=1ms: want 20ms..10s"},
		"gossip timeout":      {func(c *Config) { c.Insecure = true; c.GossipProbeTimeout = time.Second }, "must be below GossipProbeInterval"},
		"suspicion":           {func(c *Config) { c.Insecure = true; c.SuspicionMult = 50 }, "SuspicionMult=50"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := baseCfg()
			c.mut(&cfg)
			if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
	cfg := baseCfg()
	cfg.Insecure = true
	cfg.Facts.PodPrefixes = make([]netip.Prefix, 60)
	for i := range cfg.Facts.PodPrefixes {
		cfg.Facts.PodPrefixes[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 64, byte(i)}), 32)
	}
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "metadata limit") {
		t.Fatalf("oversized facts: %v", err)
	}
}

// The documented bound: 15,000 nodes in 100 pools → 1000 probes/s per node
// with the defaults, whatever the node count; more pools take turns.
func TestProbeRateScalesWithPoolsNotNodes(t *testing.T) {
	if r := ProbeRate(Config{}, 100); r != 1000 {
		t.Fatalf("100 pools: %v probes/s, want 1000", r)
	}
	if r := ProbeRate(Config{}, 1000); r != 1000 {
		t.Fatalf("1000 pools must stay capped: %v", r)
	}
	if r := ProbeRate(Config{}, 5); r != 50 {
		t.Fatalf("5 pools: %v", r)
	}
	// The scheduler really sends at most one probe per pool per tick: 100
	// pools of 150 nodes → 100 targets per tick, each pool's members rotated.
	p := &Prober{cfg: Config{Period: DefaultProbePeriod, MaxProbeRate: DefaultMaxProbeRate, ProbePort: 1}, peers: map[string]topology.NodeFacts{}, cursor: map[string]int{}, dirty: true}
	for i := range 15000 {
		name := "node-" + strconv.Itoa(i)
		p.peers[name] = topology.NodeFacts{Name: name, Pool: "pool-" + strconv.Itoa(i%100), ProbeIP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})}
	}
	seen := map[string]int{}
	for range 150 {
		tg := p.nextTargets()
		if len(tg) != 100 {
			t.Fatalf("%d targets per tick, want 100", len(tg))
		}
		for _, x := range tg {
			seen[x.name]++
		}
	}
	if len(seen) != 15000 {
		t.Fatalf("rotation covered %d of 15000 nodes in 150 ticks", len(seen))
	}
	// Capped: 1000 pools with rate 1000/s and a 100 ms period → 100 per tick.
	p.cfg.MaxProbeRate = 1000
	for i := range 1000 {
		name := "x-" + strconv.Itoa(i)
		p.peers[name] = topology.NodeFacts{Name: name, Pool: "xpool-" + strconv.Itoa(i), ProbeIP: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})}
	}
	p.dirty = true
	if tg := p.nextTargets(); len(tg) != 100 {
		t.Fatalf("capped: %d per tick", len(tg))
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// Two encrypted probers on loopback addresses meet, exchange facts and see
// each other's native probe address answer.
func TestProberLoopback(t *testing.T) {
	kr, err := ParseKeyring([]byte(key(2, 32)))
	if err != nil {
		t.Fatal(err)
	}
	port := freeUDPPort(t)
	var mu sync.Mutex
	okFrom := map[string]bool{}
	factsAt := map[string]topology.NodeFacts{}
	start := func(name, ip string) *Prober {
		cfg := Config{
			Facts:    topology.NodeFacts{Name: name, Pool: "lo-" + name, ProbeIP: netip.MustParseAddr(ip), VTEPPort: 4789},
			BindAddr: ip, GossipPort: -1, Keyring: kr, ProbePort: port,
			OnProbe: func(r topology.ProbeResult) {
				if r.Kind == topology.ProbeNative && r.OK {
					mu.Lock()
					okFrom[r.From+">"+r.To] = true
					mu.Unlock()
				}
			},
			OnFacts: func(f topology.NodeFacts) { mu.Lock(); factsAt[f.Name] = f; mu.Unlock() },
		}
		p, err := Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return p
	}
	a := start("a", "127.0.0.1")
	b := start("b", "127.0.0.2")
	if _, err := b.Join([]string{a.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		done := okFrom["a>b"] && okFrom["b>a"] && factsAt["a"].VTEPPort == 4789 && factsAt["b"].Pool == "lo-b"
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mutual probes/facts in 30 s: %v %v", okFrom, factsAt)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// An unencrypted member cannot join an encrypted group.
	cfg := Config{Facts: topology.NodeFacts{Name: "c", Pool: "p", ProbeIP: netip.MustParseAddr("127.0.0.3")}, BindAddr: "127.0.0.3", GossipPort: -1, Insecure: true, ProbePort: port}
	c, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Join([]string{a.GossipAddr()}); err == nil {
		t.Fatal("insecure member joined an encrypted group")
	}
}

func FuzzParseKeyring(f *testing.F) {
	f.Add([]byte(key(0, 32) + "\n" + key(1, 16)))
	f.Add([]byte("# c\n\n" + key(3, 24)))
	f.Add([]byte("!!"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kr, err := ParseKeyring(b)
		if err != nil {
			return
		}
		if len(kr.GetKeys()) == 0 || len(kr.GetPrimaryKey()) == 0 {
			t.Fatal("accepted keyring without a primary key")
		}
	})
}

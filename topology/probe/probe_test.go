package probe

import (
	"encoding/base64"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
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
	cfg.Facts.PodPrefixes = podPrefixes(MaxPodPrefixes+1, 32)
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "over gossip's 4096") {
		t.Fatalf("more pod prefixes than gossip carries: %v", err)
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
	p := &Prober{cfg: Config{Period: DefaultProbePeriod, MaxProbeRate: DefaultMaxProbeRate, ProbePort: 1}, peers: map[string]*peerState{}, cursor: map[string]int{}, dirty: true}
	for i := range 15000 {
		name := "node-" + strconv.Itoa(i)
		p.peers[name] = &peerState{facts: topology.NodeFacts{Name: name, Pool: "pool-" + strconv.Itoa(i%100), ProbeIP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})}}
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
		p.peers[name] = &peerState{facts: topology.NodeFacts{Name: name, Pool: "xpool-" + strconv.Itoa(i), ProbeIP: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})}}
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

// A native probe reply counts only from the address probed and with the
// nonce sent. The probed node here never answers itself; it hands each
// request to a forger on another address, or answers with a wrong nonce,
// and an off-path host sprays guessed replies: none may count as success,
// so the dead path stays dead. The control answers correctly and counts.
func TestForgedProbeRepliesDoNotCount(t *testing.T) {
	port := freeUDPPort(t)
	type result struct{ ok, failed int }
	var mu sync.Mutex
	var res result
	cfg := Config{Facts: topology.NodeFacts{Name: "a", Pool: "pa", ProbeIP: netip.MustParseAddr("127.0.2.1")},
		BindAddr: "127.0.2.1", GossipPort: -1, Insecure: true, ProbePort: port, Timeout: 100 * time.Millisecond,
		OnProbe: func(r topology.ProbeResult) {
			if r.Kind != topology.ProbeNative || r.To != "b" {
				return
			}
			mu.Lock()
			if r.OK {
				res.ok++
			} else {
				res.failed++
			}
			mu.Unlock()
		}}
	a, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	listen := func(ip string) *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip), Port: port})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	target := listen("127.0.2.2") // b's probe address: it receives the requests
	forger := listen("127.0.2.3") // another host
	a.mu.Lock()
	a.peers["b"] = &peerState{facts: topology.NodeFacts{Name: "b", Pool: "pb", ProbeIP: netip.MustParseAddr("127.0.2.2")}}
	a.dirty = true
	a.mu.Unlock()
	aAddr := &net.UDPAddr{IP: net.ParseIP("127.0.2.1"), Port: port}

	run := func(name string, answer func(req []byte)) result {
		mu.Lock()
		res = result{}
		mu.Unlock()
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 64)
			_ = target.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
			for {
				n, _, err := target.ReadFromUDP(buf)
				if err != nil {
					return
				}
				if n == probeLen && buf[4] == kindReq {
					reply := slices.Clone(buf[:n])
					reply[4] = kindReply
					answer(reply)
				}
			}
		}()
		<-done
		time.Sleep(2 * cfg.Timeout) // the last probes expire
		mu.Lock()
		defer mu.Unlock()
		t.Logf("%s: %d ok, %d failed", name, res.ok, res.failed)
		return res
	}
	before := a.Stats().RejectedReplies
	if r := run("reply from another address", func(reply []byte) { _, _ = forger.WriteToUDP(reply, aAddr) }); r.ok != 0 || r.failed < 5 {
		t.Errorf("replies forged from another address: %d counted ok, %d failed; want 0 ok", r.ok, r.failed)
	}
	if r := run("wrong nonce", func(reply []byte) { reply[probeLen-1] ^= 1; _, _ = target.WriteToUDP(reply, aAddr) }); r.ok != 0 || r.failed < 5 {
		t.Errorf("replies with a wrong nonce: %d counted ok, %d failed; want 0 ok", r.ok, r.failed)
	}
	if r := run("off-path guesses", func(reply []byte) {
		// It knows the format and guesses the sequence, not the nonce.
		for d := range uint64(4) {
			g := slices.Clone(reply)
			binary.BigEndian.PutUint64(g[5:13], binary.BigEndian.Uint64(reply[5:13])+d)
			binary.BigEndian.PutUint64(g[13:21], d)
			_, _ = forger.WriteToUDP(g, aAddr)
			_, _ = target.WriteToUDP(g, aAddr)
		}
	}); r.ok != 0 {
		t.Errorf("guessed replies: %d counted ok", r.ok)
	}
	if got := a.Stats().RejectedReplies - before; got < 10 {
		t.Errorf("%d forged replies counted as rejected, want every one seen", got)
	}
	if r := run("honest reply", func(reply []byte) { _, _ = target.WriteToUDP(reply, aAddr) }); r.ok < 5 {
		t.Errorf("honest replies: %d ok, %d failed; the check refuses good replies too", r.ok, r.failed)
	}
}

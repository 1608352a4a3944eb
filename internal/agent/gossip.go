package agent

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/hashicorp/memberlist"

	"github.com/strata-net/strata/topology"
	"github.com/strata-net/strata/topology/probe"
)

// startProber joins gossip on the underlay and feeds its reports (peer
// facts, node-IP liveness, native probe results) to the decider. Seeds are
// the Nodes' published underlay IPs plus --join.
func (a *Agent) startProber(ctx context.Context) error {
	var kr *memberlist.Keyring
	if !a.cfg.GossipInsecure {
		var err error
		if kr, err = probe.LoadKeyring(a.cfg.GossipKeyFile); err != nil {
			return fmt.Errorf("gossip key: %w", err)
		}
	}
	p, err := probe.Start(probe.Config{
		Facts: a.self, BindAddr: a.self.Underlay().String(), GossipPort: a.cfg.GossipPort,
		Keyring: kr, Insecure: a.cfg.GossipInsecure, Mark: a.cfg.ProbeMark, Period: a.cfg.ProbePeriod,
		Logger: a.log.With("component", "probe"),
		OnProbe: func(r topology.ProbeResult) {
			a.post(func() { a.decider.Observe(r) })
		},
		OnFacts: func(f topology.NodeFacts) {
			if !a.acceptGossip(f.Name) {
				return
			}
			a.post(func() {
				if _, err := a.decider.UpsertNode(f); err != nil {
					a.log.Warn("gossiped facts rejected", "peer", f.Name, "err", err)
				}
			})
		},
	})
	if err != nil {
		return fmt.Errorf("start gossip/prober: %w", err)
	}
	a.prober = p
	// Seeds: --join plus every node the plan knows, which came from the
	// API server or, while it is away, from the peer cache. A restart with
	// the API server down must find the others again (edge autonomy).
	seeds := append([]string(nil), a.cfg.Join...)
	for _, n := range a.decider.Plan().Nodes() {
		if n.Name != a.self.Name && n.Facts.Underlay().IsValid() {
			seeds = append(seeds, n.Facts.Underlay().String())
		}
	}
	port := a.cfg.GossipPort
	if port == 0 {
		port = probe.DefaultGossipPort
	}
	for i, s := range seeds {
		if _, _, err := net.SplitHostPort(s); err != nil {
			seeds[i] = net.JoinHostPort(s, strconv.Itoa(port))
		}
	}
	if len(seeds) > 0 {
		if n, err := p.Join(seeds); err != nil {
			a.log.Warn("gossip join incomplete; memberlist keeps trying through those it reached", "joined", n, "err", err)
		}
	}
	return nil
}

// acceptGossip says whether gossiped facts about a node are used. While the
// API server answers, its facts win. Gossip is the channel for when it is
// away, and only for nodes it (or the cache it left) has shown: gossip never
// introduces a node, nor brings back a deleted one (docs/trust.md).
func (a *Agent) acceptGossip(name string) bool {
	if name == a.self.Name {
		return false
	}
	if !a.knownNode(name) {
		a.m.unknownGossip.Inc()
		return false
	}
	return a.offline.Load()
}

package topology

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"
)

// poolPair is an unordered pool pair, names sorted. A pool's own LAN is
// (P, P).
type poolPair [2]string

func pairOf(a, b string) poolPair {
	if b < a {
		a, b = b, a
	}
	return poolPair{a, b}
}

// tracker is the hysteresis state machine of one pool link.
type tracker struct {
	phase        linkPhase
	fails        int // consecutive failures now
	streakStart  time.Time
	downFails    int
	downSince    time.Time
	healthySince time.Time
}

func (t *tracker) snap() *linkSnap {
	if t.phase == linkUp {
		return nil
	}
	return &linkSnap{phase: t.phase, fails: t.downFails, since: t.downSince, healthySince: t.healthySince}
}

// observe feeds one probe; k failures in a row take the link down, and it
// comes back after hold healthy.
func (t *tracker) observe(ok bool, at time.Time, k int, hold time.Duration) {
	if !ok {
		if t.fails == 0 {
			t.streakStart = at
		}
		t.fails++
		t.healthySince = time.Time{}
		switch t.phase {
		case linkUp:
			if t.fails >= k {
				t.phase, t.downFails, t.downSince = linkDown, t.fails, t.streakStart
			}
		case linkRecovering:
			// Flapping: back to down, hold-down starts again on the next success.
			t.phase = linkDown
		}
		return
	}
	t.fails = 0
	if t.phase == linkUp {
		return
	}
	if t.healthySince.IsZero() {
		t.healthySince = at
		t.phase = linkRecovering
	}
	t.advance(at, hold)
}

func (t *tracker) advance(now time.Time, hold time.Duration) {
	if t.phase == linkRecovering && now.Sub(t.healthySince) >= hold {
		*t = tracker{}
	}
}

// Decider keeps the last plan and updates it incrementally: a probe result
// touches one pool link or one node, so it costs O(pools²) or O(nodes)
// pointer copies, never a recomputation. It is safe for concurrent use.
type Decider struct {
	mu       sync.Mutex
	cfg      Config
	plan     *Plan
	facts    map[string]NodeFacts // last good facts per node
	live     map[string]liveness
	trackers map[poolPair]*tracker
	nodes    map[string]*tracker // per-node exceptions, keyed by probe target
	wan      map[wanKey]*tracker // WAN paths per (observer, target), from ProbeWAN
	now      time.Time
	// auth decides which pod prefixes each node may claim; enforce is set
	// once an authority is given (the agent always gives one).
	auth    Authority
	enforce bool
	own     map[string]*ownership // nodes whose claims are not all accepted
}

type liveness struct {
	alive bool
	since time.Time
}

// NewDecider returns a Decider with an empty plan.
func NewDecider(cfg Config) (*Decider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Decider{cfg: cfg, facts: map[string]NodeFacts{}, live: map[string]liveness{}, trackers: map[poolPair]*tracker{}, nodes: map[string]*tracker{},
		wan: map[wanKey]*tracker{}, auth: Authority{}.clone(), own: map[string]*ownership{}}
	d.plan = build(cfg, time.Time{}, nil, d.trackers, d.nodes, d.wan)
	return d, nil
}

// Decide is the pure, one-shot form: it replays facts through a fresh
// Decider and returns the plan at facts.Now.
func Decide(facts Facts, cfg Config) (*Plan, error) {
	d, err := NewDecider(cfg)
	if err != nil {
		return nil, err
	}
	if facts.Authority != nil {
		d.SetAuthority(*facts.Authority)
	}
	if _, err := d.SetNodes(facts.Nodes); err != nil {
		return nil, err
	}
	for i, r := range facts.Probes {
		if i > 0 && r.At.Before(facts.Probes[i-1].At) {
			return nil, fmt.Errorf("facts.probes[%d] at %s is before probes[%d]: probes must be in time order", i, r.At, i-1)
		}
		d.Observe(r)
	}
	d.Advance(facts.Now)
	return d.Plan(), nil
}

// Plan is the current plan.
func (d *Decider) Plan() *Plan {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.plan
}

func validateNode(f NodeFacts) error {
	if f.Name == "" {
		return errors.New("node with an empty name: every node needs its Kubernetes name")
	}
	if f.Pool != "" && !validPoolName(f.Pool) {
		return fmt.Errorf("node %s: pool %q is not a DNS label", f.Name, f.Pool)
	}
	return nil
}

// SetNodes replaces every node's facts and rebuilds the plan (O(nodes)).
// On error nothing changes.
func (d *Decider) SetNodes(nodes []NodeFacts) (*Plan, error) {
	facts := make(map[string]NodeFacts, len(nodes))
	for _, f := range nodes {
		if err := validateNode(f); err != nil {
			return nil, err
		}
		if _, dup := facts[f.Name]; dup {
			return nil, fmt.Errorf("node %s listed twice: node names must be unique", f.Name)
		}
		facts[f.Name] = cloneFacts(f)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.facts = facts
	d.rebuild()
	return d.plan, nil
}

func (d *Decider) entry(f NodeFacts) *nodeEntry {
	l, ok := d.live[f.Name]
	if !ok {
		l = liveness{alive: true}
	}
	return newEntry(f, l.alive, l.since, d.own[f.Name])
}

// resolve re-decides every node's claims and returns the nodes whose
// verdict changed.
func (d *Decider) resolve() []string {
	nodes := make([]*NodeFacts, 0, len(d.facts))
	for name := range d.facts {
		f := d.facts[name]
		nodes = append(nodes, &f)
	}
	own := resolveOwnership(nodes, &d.auth, d.enforce)
	var changed []string
	for name, o := range own {
		if !o.equal(d.own[name]) {
			changed = append(changed, name)
		}
	}
	for name, o := range d.own {
		if _, ok := own[name]; !ok && o != nil {
			changed = append(changed, name)
		}
	}
	d.own = own
	return changed
}

// reentry replaces the entries of nodes whose ownership changed, without a
// rebuild (their pools did not change).
func (d *Decider) reentry(names []string) {
	repl := map[int]*nodeEntry{}
	for _, name := range names {
		if i, ok := d.plan.index[name]; ok {
			repl[i] = d.entry(d.facts[name])
		}
	}
	if len(repl) > 0 {
		d.plan = d.plan.withEntries(repl)
	}
}

// SetAuthority sets what decides pod prefix ownership and turns the
// authority checks on (see Authority). It re-decides every node's claims.
func (d *Decider) SetAuthority(a Authority) *Plan {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.auth, d.enforce = a.clone(), true
	d.reentry(d.resolve())
	return d.plan
}

// SetNodeAuthority records one node's allocation (Node.spec.podCIDRs, or
// its NodePool block) and join time, from the API server; it is a no-op
// when nothing changed. Call it before the node's facts, from the same
// source that shows the node exists.
func (d *Decider) SetNodeAuthority(name string, alloc []netip.Prefix, joined time.Time) *Plan {
	d.mu.Lock()
	defer d.mu.Unlock()
	if slices.Equal(d.auth.Allocations[name], alloc) && d.auth.Joined[name].Equal(joined) {
		return d.plan
	}
	if len(alloc) == 0 {
		delete(d.auth.Allocations, name)
	} else {
		d.auth.Allocations[name] = slices.Clone(alloc)
	}
	if joined.IsZero() {
		delete(d.auth.Joined, name)
	} else {
		d.auth.Joined[name] = joined
	}
	d.reentry(d.resolve())
	return d.plan
}

// Authority returns a copy of the current authority (for caching it).
func (d *Decider) Authority() Authority {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.auth.clone()
}

func (d *Decider) rebuild() {
	d.resolve()
	entries := make([]*nodeEntry, 0, len(d.facts))
	for _, f := range d.facts {
		entries = append(entries, d.entry(f))
	}
	d.plan = build(d.cfg, d.now, entries, d.trackers, d.nodes, d.wan)
}

// UpsertNode adds or replaces one node's facts. Replacing a node within the
// same pool is O(nodes) pointer copies; a new node or pool change rebuilds.
func (d *Decider) UpsertNode(f NodeFacts) (*Plan, error) {
	if err := validateNode(f); err != nil {
		return nil, err
	}
	f = cloneFacts(f)
	d.mu.Lock()
	defer d.mu.Unlock()
	old, known := d.facts[f.Name]
	if known && reflect.DeepEqual(old, f) {
		return d.plan, nil // gossip repeats facts; an identical update is no change
	}
	d.facts[f.Name] = f
	if i, ok := d.plan.index[f.Name]; ok && known && old.Pool == f.Pool {
		var others []string
		if !ownershipInputs(&old, &f) {
			others = d.resolve()
		}
		d.plan = d.plan.withEntry(i, d.entry(f))
		d.reentry(slices.DeleteFunc(others, func(n string) bool { return n == f.Name }))
	} else {
		d.rebuild()
	}
	return d.plan, nil
}

// UpsertNodeMeta parses a node's labels and annotations and upserts it. A
// malformed key returns the parse error and keeps the node's last good facts.
func (d *Decider) UpsertNodeMeta(name string, labels, annotations map[string]string) (*Plan, error) {
	f, err := ParseNode(name, labels, annotations)
	if err != nil {
		return d.Plan(), fmt.Errorf("kept the last good facts of node %s: %w", name, err)
	}
	return d.UpsertNode(f)
}

// RemoveNode drops a node (O(nodes) rebuild).
func (d *Decider) RemoveNode(name string) *Plan {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.facts[name]; ok {
		delete(d.facts, name)
		delete(d.auth.Allocations, name)
		delete(d.auth.Joined, name)
		delete(d.live, name)
		delete(d.nodes, name)
		for k := range d.wan {
			if k[0] == name || k[1] == name {
				delete(d.wan, k)
			}
		}
		d.rebuild()
	}
	return d.plan
}

// Observe feeds one probe result. It returns the (possibly unchanged) plan
// and whether it changed. Results about unknown nodes are ignored, and so
// are native failures towards a node whose node IPs are down (liveness
// already explains them).
func (d *Decider) Observe(r ProbeResult) (*Plan, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r.At.After(d.now) {
		d.now = r.At
	}
	switch r.Kind {
	case ProbeNodeIP:
		return d.setLive(r.To, r.OK, r.At)
	case ProbeNative:
		from, okf := d.plan.index[r.From]
		to, okt := d.plan.index[r.To]
		if !okf || !okt {
			return d.plan, false
		}
		ef, et := d.plan.nodes[from], d.plan.nodes[to]
		if ef.facts.Pool == "" || et.facts.Pool == "" || (!r.OK && (!et.alive || !ef.alive)) {
			return d.plan, false
		}
		k := pairOf(ef.facts.Pool, et.facts.Pool)
		changed := d.observeLink(k, r)
		// Per-node exception: a failure while the pool link is up points
		// at the target node (e.g. its pod CIDR is no longer announced).
		// Failures while the link is down belong to the link.
		healthy := d.trackers[k] == nil || d.trackers[k].phase == linkUp
		if d.observeNode(r, healthy) {
			changed = true
		}
		return d.plan, changed
	case ProbeWAN:
		_, okf := d.plan.index[r.From]
		_, okt := d.plan.index[r.To]
		if !okf || !okt || r.From == r.To {
			return d.plan, false
		}
		// Counted whatever gossip liveness says: across the internet the
		// WAN probe is the only liveness there is (gatewayUnusable).
		return d.plan, d.observeWAN(wanKey{r.From, r.To}, r)
	default:
		return d.plan, false
	}
}

func (d *Decider) observeLink(k poolPair, r ProbeResult) bool {
	t := d.trackers[k]
	if t == nil {
		if r.OK {
			return false // healthy and never failed: nothing to keep
		}
		t = &tracker{}
		d.trackers[k] = t
	}
	before := t.snap()
	t.observe(r.OK, r.At, d.cfg.FailThreshold, d.cfg.HoldDown)
	if t.phase == linkUp && t.fails == 0 {
		delete(d.trackers, k)
	}
	after := t.snap()
	if before.equal(after) {
		return false
	}
	d.plan = d.plan.withLink(k, after)
	if before == nil {
		// The link went down: partial per-node streaks towards its pools
		// were the link's failures, not the nodes'.
		for name, nt := range d.nodes {
			if i, ok := d.plan.index[name]; ok && nt.phase == linkUp {
				if pool := d.plan.nodes[i].facts.Pool; pool == k[0] || pool == k[1] {
					delete(d.nodes, name)
				}
			}
		}
	}
	return true
}

func (d *Decider) observeNode(r ProbeResult, linkHealthy bool) bool {
	t := d.nodes[r.To]
	if t == nil {
		if r.OK || !linkHealthy {
			return false
		}
		t = &tracker{}
		d.nodes[r.To] = t
	}
	if !r.OK && !linkHealthy {
		return false
	}
	before := t.snap()
	t.observe(r.OK, r.At, d.cfg.FailThreshold, d.cfg.HoldDown)
	if t.phase == linkUp && t.fails == 0 {
		delete(d.nodes, r.To)
	}
	after := t.snap()
	if before.equal(after) {
		return false
	}
	d.plan = d.plan.withExc(r.To, after)
	return true
}

func (d *Decider) observeWAN(k wanKey, r ProbeResult) bool {
	t := d.wan[k]
	if t == nil {
		if r.OK {
			return false
		}
		t = &tracker{}
		d.wan[k] = t
	}
	before := t.snap()
	t.observe(r.OK, r.At, d.cfg.wanFailThreshold(), d.cfg.wanHoldDown())
	if t.phase == linkUp && t.fails == 0 {
		delete(d.wan, k)
	}
	after := t.snap()
	if before.equal(after) {
		return false
	}
	d.plan = d.plan.withWAN(k, after)
	return true
}

// SetLiveness records node-IP reachability of a node (from memberlist).
func (d *Decider) SetLiveness(node string, alive bool, at time.Time) (*Plan, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.setLive(node, alive, at)
}

func (d *Decider) setLive(node string, alive bool, at time.Time) (*Plan, bool) {
	old, known := d.live[node]
	if !known {
		old = liveness{alive: true}
	}
	if old.alive == alive {
		return d.plan, false
	}
	d.live[node] = liveness{alive: alive, since: at}
	i, ok := d.plan.index[node]
	if !ok {
		return d.plan, false
	}
	d.plan = d.plan.withEntry(i, d.entry(d.facts[node]))
	return d.plan, true
}

// Advance moves time forward: links whose hold-down has elapsed return to
// native. Call it periodically (e.g. every probe period).
func (d *Decider) Advance(now time.Time) (*Plan, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if now.After(d.now) {
		d.now = now
	}
	changed := false
	for k, t := range d.trackers {
		if t.phase != linkRecovering {
			continue
		}
		t.advance(d.now, d.cfg.HoldDown)
		if t.phase == linkUp {
			delete(d.trackers, k)
			d.plan = d.plan.withLink(k, nil)
			changed = true
		}
	}
	for name, t := range d.nodes {
		if t.phase != linkRecovering {
			continue
		}
		t.advance(d.now, d.cfg.HoldDown)
		if t.phase == linkUp {
			delete(d.nodes, name)
			d.plan = d.plan.withExc(name, nil)
			changed = true
		}
	}
	for k, t := range d.wan {
		if t.phase != linkRecovering {
			continue
		}
		t.advance(d.now, d.cfg.wanHoldDown())
		if t.phase == linkUp {
			delete(d.wan, k)
			d.plan = d.plan.withWAN(k, nil)
			changed = true
		}
	}
	if changed || !d.plan.now.Equal(d.now) {
		q := *d.plan
		q.now = d.now
		d.plan = &q
	}
	return d.plan, changed
}

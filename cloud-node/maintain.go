package cloudnode

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/strata-net/strata/cloud-node/ecsapi"
)

// run is the only goroutine that changes cloud state, so a reconcile never
// races a create or an assign of this manager.
func (m *Manager) run(ctx context.Context) {
	defer close(m.done)
	tick := time.NewTicker(min(m.cfg.IdleReclaimAfter/4+time.Millisecond, 10*time.Second))
	defer tick.Stop()
	lastResync := time.Now()
	for {
		m.mu.Lock()
		dirty := m.dirty
		m.mu.Unlock()
		if dirty || time.Since(lastResync) > m.cfg.ResyncInterval {
			m.mu.Lock()
			m.resyncs++
			m.resyncing = true
			m.mu.Unlock()
			err := m.resync(ctx)
			m.mu.Lock()
			m.resyncing, m.resyncErr = false, err
			if err != nil {
				m.lastErr = err
			}
			m.notify()
			m.mu.Unlock()
			lastResync = time.Now()
		}
		if ctx.Err() != nil {
			return
		}
		if err := m.fill(ctx); err != nil && ctx.Err() == nil {
			m.setErr(err)
			m.log.Warn("warm pool refill failed; will retry", "err", err)
		}
		if ctx.Err() != nil {
			return
		}
		if err := m.trim(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("releasing idle IPs failed; will retry", "err", err)
		}
		m.mu.Lock()
		m.notify()
		needMore := (m.waiting > 0 || len(m.free) < max(m.cfg.MinIdle, m.warm)) && m.lastErr == nil && len(m.enis) > 0 && m.roomLocked()
		m.mu.Unlock()
		if needMore {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-tick.C:
		}
	}
}

func (m *Manager) setErr(err error) {
	m.mu.Lock()
	m.lastErr = err
	m.notify()
	m.mu.Unlock()
}

// roomLocked says whether an attached ENI can take more IPs or another ENI
// may be created.
func (m *Manager) roomLocked() bool {
	if len(m.enis)+len(m.unadopted) < m.maxENIs() && len(m.unadopted) == 0 {
		return true
	}
	for _, e := range m.enis {
		if 1+e.slots() < m.limits.IPsPerENI {
			return true
		}
	}
	return false
}

// fill tops the pool up when it is below MinIdle (or WarmUp before the
// first fill) or someone waits, one batch per call.
func (m *Manager) fill(ctx context.Context) error {
	m.mu.Lock()
	target := max(m.cfg.MinIdle, m.warm)
	if m.waiting > 0 {
		target = max(target, len(m.free)+m.waiting)
	}
	need := target - len(m.free)
	if need <= 0 {
		m.lastErr = nil
		m.mu.Unlock()
		return nil
	}
	// Ask for a whole batch up to MaxIdle: fewer calls under churn.
	n := min(m.cfg.BatchSize, max(need, m.cfg.MaxIdle-len(m.free)))
	var pick *eniState
	for _, e := range m.enis {
		room := m.limits.IPsPerENI - 1 - e.slots()
		if room > 0 && (pick == nil || e.slots() < pick.slots()) {
			pick = e
		}
	}
	canCreate := len(m.enis)+len(m.unadopted) < m.maxENIs()
	prefixes := m.cfg.IPv4Prefixes
	var unadopted error
	for id, err := range m.unadopted {
		unadopted = fmt.Errorf("ENI %s is attached but not in use (retried at each resync): %w", id, err)
	}
	m.mu.Unlock()

	if pick == nil && unadopted != nil {
		return unadopted
	}
	if pick == nil {
		if !canCreate {
			return fmt.Errorf("node is at its ENI capacity (%d ENIs x %d IPs): no more pod IPs", m.maxENIs(), (m.limits.IPsPerENI-1)*m.perSlot())
		}
		if prefixes {
			return m.createENI(ctx, 0, 16) // prefixes follow on the next pass
		}
		return m.createENI(ctx, min(n, m.limits.IPsPerENI-1), 0)
	}
	m.mu.Lock()
	room := m.limits.IPsPerENI - 1 - pick.slots()
	m.mu.Unlock()
	count, prefixCount, what := min(n, room), 0, "IPs"
	if prefixes {
		// ECS takes 1..10 prefixes per call
		count, prefixCount, what = 0, min((n+15)/16, room, 10), "/28 prefixes"
	}
	ips, pfx, err := m.api.AssignIPs(ctx, pick.info.ID, count, nil, prefixCount, ecsapi.NewToken())
	if err != nil {
		// a time-out may have assigned them anyway: resync finds out
		m.mu.Lock()
		m.dirty = true
		m.mu.Unlock()
		return fmt.Errorf("assign %d %s to %s: %w", count+prefixCount, what, pick.info.ID, err)
	}
	if ctx.Err() != nil {
		return ctx.Err() // "crashed" after the call: reconcile at restart adopts them
	}
	now := time.Now()
	m.mu.Lock()
	for _, p := range pfx {
		if !pick.prefixes[p] {
			pick.prefixes[p] = true
			ips = append(ips, prefixAddrs(p)...)
		}
	}
	for _, ip := range ips {
		if !pick.ips[ip] {
			pick.ips[ip] = true
			m.free[ip] = freeIP{eni: pick.info.ID, since: now}
		}
	}
	m.lastErr = nil
	m.mu.Unlock()
	return nil
}

// createENI makes, attaches and brings up a new ENI with count IPs, in a
// vSwitch with more than count+reserve free addresses.
func (m *Manager) createENI(ctx context.Context, count, reserve int) error {
	var vswitch string
	for _, id := range m.cfg.PodVSwitchIDs {
		vs, err := m.api.DescribeVSwitch(ctx, id)
		if err != nil {
			return err
		}
		if vs.Available > count+reserve {
			vswitch = id
			break
		}
	}
	if vswitch == "" {
		return fmt.Errorf("every pod vSwitch %v is out of addresses: add a vSwitch to PodVSwitchIDs", m.cfg.PodVSwitchIDs)
	}
	eni, err := m.api.CreateENI(ctx, vswitch, m.cfg.SecurityGroupID, count, m.tags(), ecsapi.NewToken())
	if err != nil {
		m.markDirty()
		return fmt.Errorf("create ENI in %s: %w", vswitch, err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	m.log.Info("created ENI", "eni", eni.ID, "vswitch", vswitch, "ips", len(eni.Secondary))
	if err := m.api.AttachENI(ctx, eni.ID, m.cfg.InstanceID); err != nil {
		if ctx.Err() == nil && !ecsapi.Retryable(err) {
			// it will never attach (quota, state): give it back now
			if derr := m.api.DeleteENI(ctx, eni.ID); derr != nil {
				m.markDirty()
			}
		} else {
			m.markDirty()
		}
		return fmt.Errorf("attach ENI %s: %w", eni.ID, err)
	}
	got, err := m.waitInUse(ctx, eni.ID)
	if err != nil {
		m.markDirty()
		return err
	}
	if err := m.adopt(ctx, got); err != nil {
		m.mu.Lock()
		m.unadopted[got.ID], m.dirty = err, true
		m.mu.Unlock()
		return err
	}
	return nil
}

func (m *Manager) markDirty() {
	m.mu.Lock()
	m.dirty = true
	m.mu.Unlock()
}

// waitInUse polls Describe until the ENI is InUse on this instance, then the
// metadata service until the guest sees its MAC.
func (m *Manager) waitInUse(ctx context.Context, id string) (ecsapi.ENI, error) {
	deadline := time.Now().Add(m.cfg.AttachTimeout)
	var last ecsapi.ENI
	for {
		es, err := m.api.DescribeENIs(ctx, ecsapi.Filter{IDs: []string{id}})
		if err == nil && len(es) == 1 {
			last = es[0]
			if last.Status == "InUse" && last.InstanceID == m.cfg.InstanceID {
				break
			}
			if last.Status == "Available" {
				return last, fmt.Errorf("ENI %s went back to Available while attaching", id)
			}
		}
		if time.Now().After(deadline) {
			return last, fmt.Errorf("ENI %s not InUse after %s (status %q)", id, m.cfg.AttachTimeout, last.Status)
		}
		if err := sleep(ctx, m.cfg.PollInterval); err != nil {
			return last, err
		}
	}
	for m.cfg.ReadyMAC != nil {
		ok, err := m.cfg.ReadyMAC(ctx, last.MAC)
		if err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			return last, fmt.Errorf("ENI %s (MAC %s) InUse but not in instance metadata after %s", id, last.MAC, m.cfg.AttachTimeout)
		}
		if err := sleep(ctx, m.cfg.PollInterval); err != nil {
			return last, err
		}
	}
	return last, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// adopt takes an InUse ENI of this node into the manager: kernel side up,
// its secondaries into the pool unless the store holds them.
func (m *Manager) adopt(ctx context.Context, e ecsapi.ENI) error {
	vs, err := m.api.DescribeVSwitch(ctx, e.VSwitchID)
	if err != nil {
		return err
	}
	info := ENIInfo{ID: e.ID, MAC: e.MAC, PrimaryIP: e.PrimaryIP, CIDR: vs.CIDR}
	if m.cfg.ENIGateway != nil {
		// from metadata, never from the CIDR: ECS's is not the first host
		if info.Gateway, err = m.cfg.ENIGateway(ctx, e.MAC); err != nil {
			return fmt.Errorf("adopt ENI %s: %w", e.ID, err)
		}
		if !vs.CIDR.Contains(info.Gateway) {
			return fmt.Errorf("adopt ENI %s (MAC %s): metadata gives gateway %s outside its vSwitch %s %s (check --metadata-url points at this instance's metadata service)", e.ID, e.MAC, info.Gateway, e.VSwitchID, vs.CIDR)
		}
	}
	st := &eniState{info: info, ips: map[netip.Addr]bool{}, prefixes: map[netip.Prefix]bool{}}
	if m.dp != nil {
		if st.link, st.table, err = m.dp.ENIUp(ctx, info); err != nil {
			return fmt.Errorf("bring up ENI %s (MAC %s) on the node: %w", e.ID, e.MAC, err)
		}
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	// read the store under the lock: an Allocate either finished its claim
	// (the store has it) or is still claiming (m.claiming has it)
	used, err := m.usedIPs()
	if err != nil {
		return err
	}
	if old, ok := m.enis[e.ID]; ok {
		st.link, st.table = orStr(st.link, old.link), orInt(st.table, old.table)
	}
	m.enis[e.ID] = st
	addrs := slices.Clone(e.Secondary)
	for _, p := range e.Prefixes {
		addrs = append(addrs, st.addPrefix(p)...)
	}
	for _, ip := range addrs {
		st.ips[ip] = true
		if !used[ip] && !m.claiming[ip] {
			if _, ok := m.free[ip]; !ok {
				m.free[ip] = freeIP{eni: e.ID, since: now}
			}
		}
	}
	m.log.Info("ENI ready", "eni", e.ID, "link", st.link, "table", st.table, "ips", len(e.Secondary), "prefixes", len(e.Prefixes))
	return nil
}

func orStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func orInt(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

func (m *Manager) usedIPs() (map[netip.Addr]bool, error) {
	recs, err := m.store.List(StorePool)
	if err != nil {
		return nil, fmt.Errorf("read IPAM store: %w", err)
	}
	used := make(map[netip.Addr]bool, len(recs))
	for _, r := range recs {
		used[r.Addr] = true
	}
	return used, nil
}

// trim gives back idle IPs above MaxIdle, a batch per call, oldest first.
// Addresses of a prefix go back only as a whole prefix (trimPrefix).
func (m *Manager) trim(ctx context.Context) error {
	m.mu.Lock()
	over := len(m.free) - m.cfg.MaxIdle
	if over <= 0 {
		m.mu.Unlock()
		return nil
	}
	cutoff := time.Now().Add(-m.cfg.IdleReclaimAfter)
	byENI := map[string][]netip.Addr{}
	var pick string
	for ip, f := range m.free {
		e, ok := m.enis[f.eni]
		if !ok || !f.since.Before(cutoff) {
			continue
		}
		if _, in := e.inPrefix(ip); in {
			continue
		}
		byENI[f.eni] = append(byENI[f.eni], ip)
		if pick == "" || len(byENI[f.eni]) > len(byENI[pick]) {
			pick = f.eni
		}
	}
	if pick == "" {
		m.mu.Unlock()
		return m.trimPrefix(ctx, cutoff)
	}
	ips := byENI[pick]
	ips = ips[:min(len(ips), over, m.cfg.BatchSize)]
	for _, ip := range ips {
		delete(m.free, ip) // out of the pool before the call: never handed out half-released
	}
	m.mu.Unlock()
	err := m.api.UnassignIPs(ctx, pick, ips)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.dirty = true // resync decides from the cloud's answer
		for _, ip := range ips {
			m.releasing[netip.PrefixFrom(ip, 32)] = true
		}
		return fmt.Errorf("unassign %d IPs from %s: %w", len(ips), pick, err)
	}
	if e, ok := m.enis[pick]; ok {
		for _, ip := range ips {
			delete(e.ips, ip)
		}
	}
	return nil
}

// trimPrefix gives back one prefix whose 16 addresses have all been idle
// since cutoff, if the pool stays at MinIdle or more without it.
func (m *Manager) trimPrefix(ctx context.Context, cutoff time.Time) error {
	m.mu.Lock()
	if len(m.free)-16 < m.cfg.MinIdle {
		m.mu.Unlock()
		return nil
	}
	var eniID string
	var pick netip.Prefix
	for id, e := range m.enis {
		for p := range e.prefixes {
			idle := true
			for _, a := range prefixAddrs(p) {
				if f, ok := m.free[a]; !ok || !f.since.Before(cutoff) {
					idle = false
					break
				}
			}
			if idle {
				eniID, pick = id, p
				break
			}
		}
		if pick.IsValid() {
			break
		}
	}
	if !pick.IsValid() {
		m.mu.Unlock()
		return nil
	}
	for _, a := range prefixAddrs(pick) {
		delete(m.free, a)
	}
	m.mu.Unlock()
	err := m.api.UnassignPrefixes(ctx, eniID, []netip.Prefix{pick})
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.dirty = true
		m.releasing[pick] = true
		return fmt.Errorf("unassign prefix %s from %s: %w", pick, eniID, err)
	}
	if e, ok := m.enis[eniID]; ok {
		delete(e.prefixes, pick)
		for _, a := range prefixAddrs(pick) {
			delete(e.ips, a)
		}
	}
	return nil
}

// resync reconciles with the cloud: adopt this node's InUse ENIs, delete
// orphans (ours but Available), and rebuild the pool as listed IPs minus the
// store. Nothing leaves the manager's books on one reply's word (see
// docs/cloud-node.md, "confirmed gone"): a listing whose pages do not add up
// changes nothing; an ENI the listing leaves out is gone only when a
// Describe by its ID does not show it either; an address a listed ENI leaves
// out stays booked (not handed out: unconfirmed) until ConfirmGoneAfter
// consecutive listings have left it out, or at once when it is one this
// manager asked to unassign. A pod's store record never goes here: one whose
// address is confirmed gone is reported lost until its pod goes.
func (m *Manager) resync(ctx context.Context) error {
	m.mu.Lock()
	m.dirty = false
	m.mu.Unlock()
	es, err := m.api.DescribeENIs(ctx, ecsapi.Filter{Tags: m.tags()})
	if err != nil {
		if errors.Is(err, ecsapi.ErrIncompleteListing) {
			m.incompleteListings.Inc()
		}
		m.markDirty()
		return fmt.Errorf("list this node's ENIs: %w", err)
	}
	recs, err := m.store.List(StorePool)
	if err != nil {
		return fmt.Errorf("read IPAM store: %w", err)
	}
	// ENIs we hold, or a pod's record names, that the listing left out:
	// only a Describe by their IDs can prove them gone
	listed := map[string]bool{}
	for _, e := range es {
		listed[e.ID] = true
	}
	expect := map[string]bool{}
	m.mu.Lock()
	for id := range m.enis {
		expect[id] = true
	}
	for id := range m.unadopted {
		expect[id] = true
	}
	m.mu.Unlock()
	for _, r := range recs {
		if id := r.Meta["eni"]; id != "" {
			expect[id] = true
		}
	}
	var missing []string
	for id := range expect {
		if !listed[id] {
			missing = append(missing, id)
		}
	}
	slices.Sort(missing)
	gone := map[string]bool{}
	if len(missing) > 0 {
		byID, err := m.api.DescribeENIs(ctx, ecsapi.Filter{IDs: missing})
		if err != nil {
			m.markDirty()
			return fmt.Errorf("confirm ENIs %v that the listing left out: %w", missing, err)
		}
		found := map[string]bool{}
		for _, e := range byID {
			found[e.ID] = true
			es = append(es, e)
		}
		var omitted []string
		for _, id := range missing {
			if !found[id] {
				gone[id] = true
			} else {
				omitted = append(omitted, id)
			}
		}
		if len(omitted) > 0 {
			m.omissions.Inc()
			m.log.Warn("the ENI listing left out ENIs a Describe by ID still shows; kept", "enis", omitted)
		}
		if len(gone) > 0 {
			m.log.Warn("ENIs confirmed deleted (a Describe by ID does not show them)", "enis", slices.Sorted(maps.Keys(gone)))
		}
	}
	seen := map[string]ecsapi.ENI{}
	for _, e := range es {
		if e.Tags[TagCluster] != m.cfg.ClusterID || e.Tags[TagNode] != m.cfg.InstanceID {
			continue
		}
		switch {
		case e.Status == "InUse" && e.InstanceID == m.cfg.InstanceID:
			seen[e.ID] = e
		case e.Status == "Available":
			m.log.Info("deleting orphan ENI (created, never attached)", "eni", e.ID)
			if err := m.api.DeleteENI(ctx, e.ID); err != nil {
				m.markDirty()
				m.log.Warn("delete orphan ENI", "eni", e.ID, "err", err)
			}
		default: // Attaching or Detaching: look again soon
			m.markDirty()
		}
	}
	// adopt every new ENI; one that fails stays unadopted (counted against
	// the cap, retried next resync) and does not stop the others
	var adoptErrs []error
	for id, e := range seen {
		m.mu.Lock()
		_, known := m.enis[id]
		m.mu.Unlock()
		if !known {
			err := m.adopt(ctx, e)
			m.mu.Lock()
			if err != nil {
				m.unadopted[id], m.dirty = err, true
				adoptErrs = append(adoptErrs, err)
			} else {
				delete(m.unadopted, id)
			}
			m.mu.Unlock()
		}
	}
	now := time.Now()
	m.mu.Lock()
	used, err := m.usedIPs()
	if err != nil {
		m.mu.Unlock()
		return err
	}
	// re-read under the lock: an Allocate either finished its claim (the
	// store has it) or is still claiming (m.claiming has it)
	if recs, err = m.store.List(StorePool); err != nil {
		m.mu.Unlock()
		return err
	}
	for id := range m.unadopted {
		if _, ok := seen[id]; !ok {
			delete(m.unadopted, id)
		}
	}
	recAddrs := map[string][]netip.Addr{}
	for _, r := range recs {
		recAddrs[r.Meta["eni"]] = append(recAddrs[r.Meta["eni"]], r.Addr)
	}
	cloud := map[netip.Addr]string{} // listed pod addresses: the only ones the pool may hand out
	absent := map[netip.Prefix]int{}
	unconfirmed := map[netip.Addr]bool{}
	var confirmed []string
	omitted := false
	for id, st := range m.enis {
		e, ok := seen[id]
		if !ok {
			// confirmed deleted, Available (an orphan now), unsettled or on
			// another instance: not ours to hand out from
			delete(m.enis, id)
			continue
		}
		items := m.bookItems(st, e, recAddrs[id])
		st.ips, st.prefixes = map[netip.Addr]bool{}, map[netip.Prefix]bool{}
		book := func(it netip.Prefix) []netip.Addr {
			if it.Bits() == 32 {
				st.ips[it.Addr()] = true
				return []netip.Addr{it.Addr()}
			}
			return st.addPrefix(it)
		}
		for it, isListed := range items {
			switch {
			case isListed:
				for _, a := range book(it) {
					cloud[a] = id
				}
			case m.releasing[it]:
				// we asked to unassign it and the cloud no longer lists it
			case m.absent[it] >= m.cfg.ConfirmGoneAfter:
				absent[it] = m.cfg.ConfirmGoneAfter // gone before: stays gone (a pod's record brings it back here)
			case m.absent[it]+1 >= m.cfg.ConfirmGoneAfter:
				absent[it] = m.cfg.ConfirmGoneAfter
				omitted = true
				confirmed = append(confirmed, it.String())
			default:
				absent[it] = m.absent[it] + 1
				omitted = true
				for _, a := range book(it) {
					unconfirmed[a] = true
				}
			}
		}
	}
	if omitted {
		m.omissions.Inc()
	}
	m.absent, m.unconfirmed, m.releasing = absent, unconfirmed, map[netip.Prefix]bool{}
	free := map[netip.Addr]freeIP{}
	for ip, id := range cloud {
		if used[ip] || m.claiming[ip] {
			continue
		}
		f, ok := m.free[ip]
		if !ok || f.eni != id {
			f = freeIP{eni: id, since: now}
		}
		free[ip] = f
	}
	m.free = free
	// a pod whose address the cloud no longer gives this node (its ENI
	// confirmed deleted, or the address confirmed gone): the record stays
	// until the pod goes (the address is still in the pod), and the operator
	// is told to recreate it
	var lost []string
	for _, r := range recs {
		id := r.Meta["eni"]
		e, held := m.enis[id]
		if !gone[id] && (!held || e.ips[r.Addr]) {
			continue
		}
		lost = append(lost, fmt.Sprintf("%s (%s on %s)", r.Key(), r.Addr, orStr(id, "no ENI")))
	}
	m.lost = lost
	m.notify()
	m.mu.Unlock()
	if len(unconfirmed) > 0 {
		m.log.Warn("the cloud's listing left out addresses this node holds; kept but not handed out until listed again or confirmed gone",
			"addresses", len(unconfirmed), "confirm_after_listings", m.cfg.ConfirmGoneAfter)
	}
	if len(confirmed) > 0 {
		m.log.Warn("addresses confirmed gone from the cloud", "items", confirmed)
	}
	if len(lost) > 0 {
		m.log.Warn("pods hold addresses the cloud no longer gives this node: recreate them", "attachments", lost)
	}
	if m.dp != nil {
		keep := map[netip.Addr]bool{}
		for ip := range used {
			keep[ip] = true
		}
		if err := m.dp.Prune(ctx, keep); err != nil {
			return fmt.Errorf("prune pod rules: %w", err)
		}
	}
	return errors.Join(adoptErrs...)
}

// bookItems lists what an InUse ENI should hold, each a /32 secondary or a
// /28 prefix, with whether this listing e shows it: everything e lists,
// everything the books held for it, and the store records on it (which the
// books lack after a restart).
func (m *Manager) bookItems(st *eniState, e ecsapi.ENI, recs []netip.Addr) map[netip.Prefix]bool {
	items := map[netip.Prefix]bool{}
	for _, p := range e.Prefixes {
		items[p.Masked()] = true
	}
	for _, ip := range e.Secondary {
		items[netip.PrefixFrom(ip, 32)] = true
	}
	item := func(a netip.Addr) netip.Prefix {
		for it := range items {
			if it.Bits() < 32 && it.Contains(a) {
				return it
			}
		}
		if p, ok := st.inPrefix(a); ok {
			return p
		}
		return netip.PrefixFrom(a, 32)
	}
	add := func(it netip.Prefix) {
		if _, ok := items[it]; !ok {
			items[it] = false
		}
	}
	for p := range st.prefixes {
		add(p)
	}
	for a := range st.ips {
		add(item(a))
	}
	for _, a := range recs {
		if a.IsValid() && e.PrimaryIP != a {
			add(item(a))
		}
	}
	return items
}

// Reconcile runs one full reconcile now (from the maintainer when running)
// and returns its error.
func (m *Manager) Reconcile(ctx context.Context) error {
	m.mu.Lock()
	running := m.cancel != nil
	if running {
		m.dirty = true
	}
	ch, n := m.changed, m.resyncs
	m.mu.Unlock()
	if !running {
		return m.resync(ctx)
	}
	m.kick()
	// wait for a resync that started after this call
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
		m.mu.Lock()
		done, err := m.resyncs > n+1 || (m.resyncs == n+1 && !m.resyncing), m.resyncErr
		ch = m.changed
		m.mu.Unlock()
		if done {
			return err
		}
	}
}

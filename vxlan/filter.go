package vxlan

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The member filter: VXLAN carries no authentication, so anyone who can
// send a UDP packet to the VTEP port could inject frames into pods with any
// inner source (issue 14). The datapath keeps an nftables table that drops
// VXLAN from every source that is not a cluster member: the peers it
// programs, plus the members its caller names (SetMembers: the node's own
// pool, reached natively, so a pair moving to the overlay is accepted while
// this node reprograms).
//
//	table ip strata_vxlan {
//	  set members { type ipv4_addr; }
//	  chain input { type filter hook input priority -150; policy accept;
//	    meta l4proto udp udp dport <port> ip saddr != @members counter drop
//	  }
//	}
//
// The kernel decapsulates in the UDP socket, after the input hook, so a
// dropped packet never reaches the VXLAN device. When nf_tables is missing
// the datapath says so in Status.MemberFilter and the
// strata_vxlan_member_filter_enforcing metric, and retries on every sync.

const (
	// FilterTable is the nftables table (family ip) of the member filter.
	FilterTable = "strata_vxlan"
	filterSet   = "members"
	filterChain = "input"
	// filterPriority runs before the usual filter chains (0) so that an
	// accept elsewhere cannot let a forged packet past, and after conntrack.
	filterPriority = -150
)

// memberFilter is the member filter's state; it is guarded by Datapath.mu.
type memberFilter struct {
	extra   []netip.Addr // SetMembers
	state   string       // for Status
	members int
	ok      atomic.Bool   // enforcing
	dropped atomic.Uint64 // the drop rule's packet counter at the last check
}

// SetMembers names cluster members that are not overlay peers right now
// (e.g. the node's own pool); VXLAN from them is accepted as well. The
// filter is updated at once.
func (d *Datapath) SetMembers(addrs []netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	extra := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			extra = append(extra, a)
		}
	}
	slices.SortFunc(extra, netip.Addr.Compare)
	extra = slices.Compact(extra)
	if slices.Equal(extra, d.filter.extra) {
		return
	}
	d.filter.extra = extra
	if d.hasWant && !d.closed {
		d.syncFilter()
	}
}

// members is the set the filter should hold: every programmed peer's VTEP
// address and the extra members.
func (d *Datapath) members() []netip.Addr {
	out := slices.Clone(d.filter.extra)
	for _, ul := range d.want.fdb {
		out = append(out, ul)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func (d *Datapath) nft() (*nftables.Conn, error) {
	return nftables.New(nftables.WithNetNSFd(int(d.ns)))
}

// syncFilter checks the table against the wanted members and rewrites it
// when it differs or is missing. Failure leaves VXLAN open and says so in
// Status and metrics; the next sync retries. d.mu must be held.
func (d *Datapath) syncFilter() {
	want := d.members()
	err := d.checkFilter(want)
	if err != nil {
		err = d.writeFilter(want)
	}
	f := &d.filter
	if err != nil {
		if f.ok.Load() || f.state == "" {
			d.log.Error("vxlan member filter unavailable: VXLAN accepts encapsulated packets from any source", "err", err)
		}
		f.ok.Store(false)
		f.state = "not enforcing: " + err.Error()
		f.members = 0
		return
	}
	if !f.ok.Load() {
		d.log.Info("vxlan member filter enforcing", "members", len(want), "table", FilterTable)
	}
	f.ok.Store(true)
	f.state = "enforcing"
	f.members = len(want)
}

var errFilterDrift = errors.New("member filter differs from the wanted state")

// checkFilter returns nil when the table holds exactly want and the drop
// rule is in place; it also reads the rule's drop counter.
func (d *Datapath) checkFilter(want []netip.Addr) error {
	c, err := d.nft()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: FilterTable, Family: nftables.TableFamilyIPv4}
	set, err := c.GetSetByName(t, filterSet)
	if err != nil {
		return err
	}
	elems, err := c.GetSetElements(set)
	if err != nil {
		return err
	}
	if len(elems) != len(want) {
		return errFilterDrift
	}
	have := make(map[netip.Addr]bool, len(elems))
	for _, e := range elems {
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			have[a] = true
		}
	}
	for _, a := range want {
		if !have[a] {
			return errFilterDrift
		}
	}
	rules, err := c.GetRules(t, &nftables.Chain{Name: filterChain, Table: t})
	if err != nil {
		return err
	}
	if len(rules) != 1 || !d.isDropRule(rules[0]) {
		return errFilterDrift
	}
	return nil
}

// isDropRule recognises our rule (and records its counter).
func (d *Datapath) isDropRule(r *nftables.Rule) bool {
	var port, lookup, drop bool
	for _, e := range r.Exprs {
		switch x := e.(type) {
		case *expr.Cmp:
			if len(x.Data) == 2 && binaryutil.BigEndian.Uint16(x.Data) == d.cfg.Port {
				port = true
			}
		case *expr.Lookup:
			lookup = x.SetName == filterSet && x.Invert
		case *expr.Counter:
			d.filter.dropped.Store(x.Packets)
		case *expr.Verdict:
			drop = x.Kind == expr.VerdictDrop
		}
	}
	return port && lookup && drop
}

// writeFilter replaces the whole table in one transaction, so there is no
// moment without the rule.
func (d *Datapath) writeFilter(want []netip.Addr) error {
	c, err := d.nft()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: FilterTable, Family: nftables.TableFamilyIPv4}
	// add + delete + add: a delete of a missing table would fail the batch.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	set := &nftables.Set{Table: t, Name: filterSet, KeyType: nftables.TypeIPAddr}
	elems := make([]nftables.SetElement, len(want))
	for i, a := range want {
		b := a.As4()
		elems[i] = nftables.SetElement{Key: b[:]}
	}
	if err := c.AddSet(set, elems); err != nil {
		return fmt.Errorf("vxlan: member filter set: %w", err)
	}
	prio := nftables.ChainPriority(filterPriority)
	ch := c.AddChain(&nftables.Chain{Name: filterChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: &prio})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(d.cfg.Port)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("vxlan: write nftables table %s (is nf_tables available in this kernel? modprobe nf_tables): %w", FilterTable, err)
	}
	return nil
}

// removeFilter deletes the table (Close).
func (d *Datapath) removeFilter() error {
	c, err := d.nft()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: FilterTable, Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("vxlan: delete nftables table %s: %w", FilterTable, err)
	}
	return nil
}

package plugin

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/cni/wire"
)

// Keeping pods from the metadata service (wire.Allocation.Blocked) takes two
// locks, because a pod with NET_ADMIN owns its namespace:
//   - inside the pod, a prohibit route for each blocked prefix, on every
//     datapath. On ipvlan and exclusive ENI it is the only lock: the pod's
//     packets leave by the ENI without crossing the node's stack.
//   - on veth datapaths, the host veth goes into wire.MetadataDenyGroup and
//     the node's table wire.MetadataTable drops packets arriving from that
//     group for wire.MetadataPrefix; the pod cannot undo either.

// addBlockedRoutes runs inside the pod.
func addBlockedRoutes(a wire.Allocation) error {
	for _, p := range a.Blocked {
		if !p.Addr().Is4() {
			return fmt.Errorf("agent asked to block %s: only IPv4 prefixes are supported", p)
		}
		r := &netlink.Route{Dst: toIPNet(p), Type: unix.RTN_PROHIBIT}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("add prohibit route %s in the pod: %w", p, err)
		}
	}
	return nil
}

// blocksMetadata reports whether a keeps the pod from the metadata service.
func blocksMetadata(a wire.Allocation) bool {
	for _, p := range a.Blocked {
		if p.Overlaps(wire.MetadataPrefix) {
			return true
		}
	}
	return false
}

// markHostVeth puts a denied pod's host veth in the group the node's
// metadata table drops.
func markHostVeth(link netlink.Link, a wire.Allocation) error {
	if !blocksMetadata(a) {
		return nil
	}
	if err := netlink.LinkSetGroup(link, wire.MetadataDenyGroup); err != nil {
		return fmt.Errorf("put host veth %s in group %#x (metadata service denied): %w", link.Attrs().Name, wire.MetadataDenyGroup, err)
	}
	return nil
}

const metadataChain = "prerouting"

// metadataTable is the node-wide half of the lock. Its drop sits on the
// prerouting hook, not forward: it also catches a packet the node would
// deliver locally, and the fast path's netfilter check, which steps aside
// for forward-hook drops, need not know it. The fast path itself never
// forwards wire.MetadataPrefix (it redirects only to pod prefixes), so the
// packet always reaches this hook.
var metadataTable = &nftables.Table{Name: wire.MetadataTable, Family: nftables.TableFamilyINet}

// ErrMetadataFilterDrift is MetadataFilterOK's answer when the table is
// missing or differs.
var ErrMetadataFilterDrift = errors.New("metadata filter table missing or changed")

// MetadataFilterOK returns nil when the node's metadata table holds exactly
// its one drop rule, and the rule's drop count.
func MetadataFilterOK() (dropped uint64, err error) {
	c, err := nftables.New()
	if err != nil {
		return 0, err
	}
	rules, err := c.GetRules(metadataTable, &nftables.Chain{Name: metadataChain, Table: metadataTable})
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrMetadataFilterDrift, err)
	}
	if len(rules) != 1 || len(rules[0].Exprs) != len(metadataRule()) {
		return 0, ErrMetadataFilterDrift
	}
	var group, dst, drop bool
	for _, e := range rules[0].Exprs {
		switch x := e.(type) {
		case *expr.Cmp:
			if len(x.Data) == 4 && binaryutil.NativeEndian.Uint32(x.Data) == wire.MetadataDenyGroup {
				group = true
			}
			if a, ok := netip.AddrFromSlice(x.Data); ok && a == wire.MetadataPrefix.Addr() {
				dst = true
			}
		case *expr.Counter:
			dropped = x.Packets
		case *expr.Verdict:
			drop = x.Kind == expr.VerdictDrop
		}
	}
	if !group || !dst || !drop {
		return dropped, ErrMetadataFilterDrift
	}
	return dropped, nil
}

func metadataRule() []expr.Any {
	md := wire.MetadataPrefix.Addr().As4()
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFGROUP, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(wire.MetadataDenyGroup)},
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: md[:]},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// WriteMetadataFilter (re)writes the node's metadata table in one
// transaction: packets arriving from a host veth in
// wire.MetadataDenyGroup to wire.MetadataPrefix are dropped. The agent
// calls it at start and whenever MetadataFilterOK reports drift.
func WriteMetadataFilter() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	// add + delete + add: a delete of a missing table would fail the batch.
	c.AddTable(metadataTable)
	c.DelTable(metadataTable)
	c.AddTable(metadataTable)
	prio := nftables.ChainPriorityFilter
	ch := c.AddChain(&nftables.Chain{Name: metadataChain, Table: metadataTable, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: prio})
	c.AddRule(&nftables.Rule{Table: metadataTable, Chain: ch, Exprs: metadataRule()})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write nftables table inet %s (is nf_tables available in this kernel? modprobe nf_tables): %w", wire.MetadataTable, err)
	}
	return nil
}

// RemoveMetadataFilter deletes the node's metadata table.
func RemoveMetadataFilter() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.AddTable(metadataTable)
	c.DelTable(metadataTable)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table inet %s: %w", wire.MetadataTable, err)
	}
	return nil
}

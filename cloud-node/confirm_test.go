package cloudnode_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	cloudnode "github.com/strata-net/strata/cloud-node"
	"github.com/strata-net/strata/cloud-node/ecsapi"
	"github.com/strata-net/strata/tests/ecsemu"
)

// metric reads one of the manager's metrics by name.
func metric(t *testing.T, m *cloudnode.Manager, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range m.Collectors() {
		reg.MustRegister(c)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			mt := mf.GetMetric()[0]
			if mt.GetGauge() != nil {
				return mt.GetGauge().GetValue()
			}
			return mt.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// eniOf is the emulator's ENI holding ip.
func eniOf(t *testing.T, e *env, ip netip.Addr) ecsemu.ENI {
	t.Helper()
	for _, x := range e.emu.ENIs() {
		if slices.Contains(x.Secondary, ip) {
			return x
		}
	}
	t.Fatalf("no ENI holds %s", ip)
	return ecsemu.ENI{}
}

// One DescribeNetworkInterfaces reply that omits addresses of an ENI it
// still lists frees nothing: the ENI keeps them booked (its quota stays
// spent, so the pool asks the cloud for nothing over it), a free one is not
// handed out and a released pod's one not put back until they are listed
// again, and the omission shows in metrics and in Unconfirmed. Before, the
// listing rebuilt the ENI without them: the pool took the ENI for one with
// room and asked for addresses over its quota.
func TestOmittedIPFreesNothing(t *testing.T) {
	e := newEnv(t, nil)
	cfg := managerConfig()
	// one ENI of 14 secondaries, full: the node's address and 13 free
	cfg.MaxENIs, cfg.WarmPool = 1, cloudnode.WarmPool{MinIdle: 13, MaxIdle: 14, WarmUp: 13, IdleReclaimAfter: time.Hour}
	m := e.manager(t, cfg, nil)
	defer m.Stop(context.Background())
	ctx := context.Background()
	a, err := m.Allocate(ctx, req(1))
	if err != nil {
		t.Fatal(err)
	}
	eni := eniOf(t, e, a.Addr.Addr())
	if len(eni.Secondary) != 14 {
		t.Fatalf("ENI %s holds %d secondaries, want its quota of 14", eni.ID, len(eni.Secondary))
	}
	before, _ := m.Snapshot()
	var idle netip.Addr
	for _, ip := range before.Free {
		idle = ip
	}
	assigns := e.emu.Calls("AssignPrivateIpAddresses")
	e.emu.SetFaults(ecsemu.Faults{OmitIPs: []netip.Addr{a.Addr.Addr(), idle}})
	for range 2 { // the second also waits out the pool pass after the first
		if err := m.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Release(ctx, a.ContainerID, a.IfName); err != nil {
		t.Fatal(err)
	}
	snap, _ := m.Snapshot()
	if !slices.Equal(snap.ENIs[eni.ID], before.ENIs[eni.ID]) {
		t.Errorf("after listings that omitted %s and %s, ENI %s is booked with %v, was %v", a.Addr.Addr(), idle, eni.ID, snap.ENIs[eni.ID], before.ENIs[eni.ID])
	}
	if slices.Contains(snap.Free, idle) || slices.Contains(snap.Free, a.Addr.Addr()) {
		t.Errorf("an address the cloud did not list is in the free pool: %v", snap.Free)
	}
	if n := e.emu.Calls("AssignPrivateIpAddresses") - assigns; n > 0 {
		t.Errorf("the pool asked the cloud %d times for addresses over ENI %s's quota", n, eni.ID)
	}
	if got := m.Unconfirmed(); got != 2 {
		t.Errorf("Unconfirmed() = %d, want 2", got)
	}
	if got := metric(t, m, "strata_eni_unconfirmed_addresses"); got != 2 {
		t.Errorf("strata_eni_unconfirmed_addresses = %v, want 2", got)
	}
	if got := metric(t, m, "strata_eni_listing_omissions_total"); got != 2 {
		t.Errorf("strata_eni_listing_omissions_total = %v, want 2", got)
	}
	// listed again: both back in the pool, nothing unconfirmed
	e.emu.SetFaults(ecsemu.Faults{})
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	snap, _ = m.Snapshot()
	if !slices.Contains(snap.Free, idle) || !slices.Contains(snap.Free, a.Addr.Addr()) || m.Unconfirmed() != 0 {
		t.Errorf("listed again: free %v, unconfirmed %d; want %s and %s free, none unconfirmed", snap.Free, m.Unconfirmed(), idle, a.Addr.Addr())
	}
	account(t, e, m)
}

// An address is taken as gone only after ConfirmGoneAfter consecutive
// complete listings leave it out. A pod holding it keeps its record (the
// address is still in its namespace) and is reported lost, in Lost() and
// strata_eni_lost_allocations, until the address is listed again.
func TestAddressConfirmedGoneAfterConsecutiveListings(t *testing.T) {
	e := newEnv(t, nil)
	cfg := managerConfig()
	cfg.ConfirmGoneAfter = 2
	m := e.manager(t, cfg, nil)
	defer m.Stop(context.Background())
	ctx := context.Background()
	a, err := m.Allocate(ctx, req(1))
	if err != nil {
		t.Fatal(err)
	}
	eni := eniOf(t, e, a.Addr.Addr())
	e.emu.SetFaults(ecsemu.Faults{OmitIPs: []netip.Addr{a.Addr.Addr()}})
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if len(m.Lost()) != 0 || m.Unconfirmed() != 1 {
		t.Fatalf("after one omission: lost %v, unconfirmed %d; want none lost, 1 unconfirmed", m.Lost(), m.Unconfirmed())
	}
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	lost := m.Lost()
	if len(lost) != 1 || !strings.Contains(lost[0], a.ContainerID) || !strings.Contains(lost[0], a.Addr.Addr().String()) {
		t.Fatalf("after 2 omissions Lost() = %v, want pod %s with %s", lost, a.ContainerID, a.Addr.Addr())
	}
	if got := metric(t, m, "strata_eni_lost_allocations"); got != 1 {
		t.Errorf("strata_eni_lost_allocations = %v, want 1", got)
	}
	if err := m.Reconcile(ctx); err != nil { // gone stays gone
		t.Fatal(err)
	}
	if len(m.Lost()) != 1 || m.Unconfirmed() != 0 {
		t.Fatalf("a third omission: lost %v, unconfirmed %d; want still lost, none unconfirmed", m.Lost(), m.Unconfirmed())
	}
	snap, _ := m.Snapshot()
	if slices.Contains(snap.ENIs[eni.ID], a.Addr.Addr()) || !slices.Contains(snap.Store, a.Addr.Addr()) || slices.Contains(snap.Free, a.Addr.Addr()) {
		t.Fatalf("confirmed gone: ENI books %v, store %v, free %v; want it off the books, still the pod's, not free", snap.ENIs[eni.ID], snap.Store, snap.Free)
	}
	e.emu.SetFaults(ecsemu.Faults{})
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if snap, _ = m.Snapshot(); len(m.Lost()) != 0 || !slices.Contains(snap.ENIs[eni.ID], a.Addr.Addr()) || slices.Contains(snap.Free, a.Addr.Addr()) {
		t.Fatalf("listed again: lost %v, books %v, free %v; want the pod's again, not free", m.Lost(), snap.ENIs[eni.ID], snap.Free)
	}
}

// An ENI the listing leaves out is gone only when a Describe by its ID does
// not show it either: here it really was detached and deleted behind the
// manager's back, so its pods are lost and it leaves the books.
func TestENIConfirmedGoneByID(t *testing.T) {
	e := newEnv(t, nil)
	m := e.manager(t, managerConfig(), nil)
	defer m.Stop(context.Background())
	ctx := context.Background()
	a, err := m.Allocate(ctx, req(1))
	if err != nil {
		t.Fatal(err)
	}
	eni := eniOf(t, e, a.Addr.Addr())
	if err := e.api.DetachENI(ctx, eni.ID, "i-node1"); err != nil {
		t.Fatal(err)
	}
	e.emu.Wait()
	if err := e.api.DeleteENI(ctx, eni.ID); err != nil {
		t.Fatal(err)
	}
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	snap, _ := m.Snapshot()
	if _, ok := snap.ENIs[eni.ID]; ok {
		t.Errorf("deleted ENI %s still booked", eni.ID)
	}
	if slices.Contains(snap.Free, a.Addr.Addr()) || !slices.Contains(snap.Store, a.Addr.Addr()) {
		t.Errorf("pod address %s: free %v store %v; want the pod's record kept, not free", a.Addr.Addr(), snap.Free, snap.Store)
	}
	if lost := m.Lost(); !slices.ContainsFunc(lost, func(s string) bool { return strings.Contains(s, a.ContainerID) && strings.Contains(s, eni.ID) }) {
		t.Errorf("Lost() = %v, want pod %s on deleted ENI %s", lost, a.ContainerID, eni.ID)
	}
}

// A listing truncated by paging (its pages end before the TotalCount it
// reports) changes nothing: no ENI leaves the books, the pool keeps its
// addresses, no ENI is created to replace the unlisted one, and the error
// shows in PoolError, Reconcile and strata_eni_incomplete_listings_total.
// Before, the client stopped at the short page and the resync dropped every
// ENI past it.
func TestTruncatedListingChangesNothing(t *testing.T) {
	e := newEnv(t, nil)
	cfg := managerConfig()
	cfg.WarmPool.WarmUp, cfg.WarmPool.MaxIdle = 20, 30 // two ENIs of 14
	m := e.manager(t, cfg, nil)
	defer m.Stop(context.Background())
	ctx := context.Background()
	before, _ := m.Snapshot()
	if len(before.ENIs) != 2 {
		t.Fatalf("want 2 ENIs, have %d", len(before.ENIs))
	}
	creates := e.emu.Calls("CreateNetworkInterface")
	e.emu.SetFaults(ecsemu.Faults{TruncateListings: 1})
	err := m.Reconcile(ctx)
	if !errors.Is(err, ecsapi.ErrIncompleteListing) {
		t.Fatalf("Reconcile over a truncated listing: %v, want ErrIncompleteListing", err)
	}
	_ = m.Reconcile(ctx) // and the pool pass after it
	during, _ := m.Snapshot()
	if len(during.ENIs) != 2 || !slices.Equal(during.Free, before.Free) {
		t.Errorf("a truncated listing left %d ENIs booked, free %v (was %v)", len(during.ENIs), during.Free, before.Free)
	}
	if n := e.emu.Calls("CreateNetworkInterface") - creates; n > 0 {
		t.Errorf("a truncated listing made the pool create %d ENIs", n)
	}
	if perr := m.PoolError(); !errors.Is(perr, ecsapi.ErrIncompleteListing) {
		t.Errorf("PoolError() = %v, want the incomplete listing", perr)
	}
	if got := metric(t, m, "strata_eni_incomplete_listings_total"); got < 1 {
		t.Errorf("strata_eni_incomplete_listings_total = %v", got)
	}
	e.emu.SetFaults(ecsemu.Faults{})
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	account(t, e, m)
}

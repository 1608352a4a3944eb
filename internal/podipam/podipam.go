// Package podipam is a node-local pod-CIDR allocator. It implements role.Role
// for a node that owns one fixed IPv4 pod CIDR and wires pods with the
// veth-routed datapath, Calico-style:
//
//   - each pod gets a /32 from the CIDR;
//   - the pod's default gateway is the link-local 169.254.1.1, which the host
//     side of the pod's veth answers with proxy ARP, so no address of the
//     CIDR is spent on a per-pod gateway;
//   - the CIDR's first host address is reserved for the node itself (its
//     probe and gateway address on the pod network) and never handed out.
//
// Allocations live in an ipamstore.Store: a claim is on disk before Allocate
// returns, so a restarted agent never hands a live address out twice.
//
// The edge role wraps an *IPAM and adds BGP advertisement of OwnedPrefixes;
// podipam itself does no I/O besides the store.
package podipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"sync"

	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/role"
)

// DefaultGateway is the link-local gateway every pod routes through.
var DefaultGateway = netip.MustParseAddr("169.254.1.1")

// DefaultMTU is used when Options.MTU is 0.
const DefaultMTU = 1500

// ErrExhausted is returned (wrapped) by Allocate when the CIDR is full. It is
// the store's error, so errors.Is works with either name.
var ErrExhausted = ipamstore.ErrExhausted

// Options tunes an IPAM. The zero value is usable.
type Options struct {
	// Name is returned by Name(); default "pod-cidr".
	Name string
	// Pool is the store pool the allocations live in; default
	// "podcidr/<cidr>". Two IPAMs on one store need different pools.
	Pool string
	// MTU is the pod interface MTU; default DefaultMTU.
	MTU int
	// Routes are extra routes inside the pod (the default route is implied).
	Routes []netip.Prefix
	// Gateway overrides DefaultGateway.
	Gateway netip.Addr
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// IPAM allocates pod addresses from one CIDR. It is safe for concurrent use.
type IPAM struct {
	cidr     netip.Prefix
	store    *ipamstore.Store
	pool     string
	name     string
	mtu      int
	routes   []netip.Prefix
	gateway  netip.Addr
	nodeAddr netip.Addr
	capacity int
	log      *slog.Logger

	// mu serialises allocation so the in-use count stays exact; bbolt
	// serialises writers anyway, so this costs no throughput.
	mu    sync.Mutex
	inUse int
}

var _ role.Role = (*IPAM)(nil)

// New returns an IPAM for cidr over store. cidr must be an IPv4 prefix in
// canonical form (host bits zero) no longer than /30, so that at least one
// pod address remains beside the node's reserved address.
func New(cidr netip.Prefix, store *ipamstore.Store, opts Options) (*IPAM, error) {
	if !cidr.IsValid() {
		return nil, errors.New("podipam: pod CIDR is not set or invalid: give a prefix such as 10.244.1.0/24")
	}
	if !cidr.Addr().Is4() {
		return nil, fmt.Errorf("podipam: pod CIDR %s is not IPv4: only IPv4 pod CIDRs are supported for now", cidr)
	}
	if cidr.Masked() != cidr {
		return nil, fmt.Errorf("podipam: pod CIDR %s has host bits set: use %s", cidr, cidr.Masked())
	}
	if cidr.Bits() > 30 {
		return nil, fmt.Errorf("podipam: pod CIDR %s is too small: use /30 or shorter (one address is reserved for the node)", cidr)
	}
	if store == nil {
		return nil, errors.New("podipam: store is nil: open one with ipamstore.Open")
	}
	if opts.MTU == 0 {
		opts.MTU = DefaultMTU
	}
	if opts.MTU < 576 || opts.MTU > 65535 {
		return nil, fmt.Errorf("podipam: MTU %d is out of range: use 576..65535", opts.MTU)
	}
	if !opts.Gateway.IsValid() {
		opts.Gateway = DefaultGateway
	}
	if !opts.Gateway.Is4() {
		return nil, fmt.Errorf("podipam: gateway %s is not IPv4", opts.Gateway)
	}
	for _, r := range opts.Routes {
		if !r.IsValid() || !r.Addr().Is4() {
			return nil, fmt.Errorf("podipam: route %v is not a valid IPv4 prefix", r)
		}
	}
	if opts.Name == "" {
		opts.Name = "pod-cidr"
	}
	if opts.Pool == "" {
		opts.Pool = "podcidr/" + cidr.String()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	m := &IPAM{
		cidr:     cidr,
		store:    store,
		pool:     opts.Pool,
		name:     opts.Name,
		mtu:      opts.MTU,
		routes:   append([]netip.Prefix(nil), opts.Routes...),
		gateway:  opts.Gateway,
		nodeAddr: cidr.Addr().Next(),
		capacity: hostCount(cidr) - 1, // minus the node's reserved address
		log:      opts.Logger.With("component", "podipam", "cidr", cidr.String()),
	}
	recs, err := store.List(m.pool)
	if err != nil {
		return nil, fmt.Errorf("podipam: read pool %s from the IPAM store: %w", m.pool, err)
	}
	m.inUse = len(recs)
	return m, nil
}

// hostCount is the number of addresses ipamstore.PrefixAddrs yields for an
// IPv4 prefix of /30 or shorter: all but network and broadcast.
func hostCount(p netip.Prefix) int {
	h := 32 - p.Bits()
	if h >= 62 {
		return math.MaxInt
	}
	return (1 << h) - 2
}

// CIDR is the pod CIDR.
func (m *IPAM) CIDR() netip.Prefix { return m.cidr }

// NodeAddr is the CIDR's first host address, reserved for the node.
func (m *IPAM) NodeAddr() netip.Addr { return m.nodeAddr }

// Capacity is how many pod addresses the CIDR holds.
func (m *IPAM) Capacity() int { return m.capacity }

// Free is how many pod addresses are not allocated.
func (m *IPAM) Free() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.capacity - m.inUse
}

// Name implements role.Role.
func (m *IPAM) Name() string { return m.name }

// Start implements role.Role. The IPAM is ready once New returns, so Start
// only honours ctx.
func (m *IPAM) Start(ctx context.Context) error { return ctx.Err() }

// Stop implements role.Role. The store belongs to the caller and stays open.
func (m *IPAM) Stop(context.Context) error { return nil }

// Ready implements role.Role: nil while an address is free.
func (m *IPAM) Ready() error {
	if m.Free() <= 0 {
		return fmt.Errorf("pod CIDR %s: all %d addresses in use: %w", m.cidr, m.capacity, ErrExhausted)
	}
	return nil
}

// OwnedPrefixes implements role.Role: the whole pod CIDR.
func (m *IPAM) OwnedPrefixes() []netip.Prefix { return []netip.Prefix{m.cidr} }

// Allocate implements role.Role. A repeated request for the same container
// and interface returns the same address.
func (m *IPAM) Allocate(ctx context.Context, req role.PodRequest) (role.Allocation, error) {
	if req.ContainerID == "" || req.IfName == "" {
		return role.Allocation{}, errors.New("podipam: allocate: container ID and interface name are required")
	}
	if err := ctx.Err(); err != nil {
		return role.Allocation{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, existed, err := m.store.Get(m.pool, req.ContainerID, req.IfName)
	if err != nil {
		return role.Allocation{}, fmt.Errorf("podipam: read allocation of %s: %w", req.Key(), err)
	}
	rec, err := m.store.Claim(m.pool, ipamstore.PrefixAddrs(m.cidr, m.nodeAddr), ipamstore.Record{
		ContainerID:  req.ContainerID,
		IfName:       req.IfName,
		PodNamespace: req.PodNamespace,
		PodName:      req.PodName,
	})
	if err != nil {
		if errors.Is(err, ipamstore.ErrExhausted) {
			return role.Allocation{}, fmt.Errorf("pod CIDR %s: all %d addresses in use (delete pods or give the node a larger CIDR): %w", m.cidr, m.capacity, err)
		}
		return role.Allocation{}, fmt.Errorf("podipam: claim an address for %s: %w", req.Key(), err)
	}
	if !existed {
		m.inUse++
		m.log.Debug("allocated", "pod", req.PodNamespace+"/"+req.PodName, "key", req.Key(), "addr", rec.Addr)
	}
	return m.allocation(rec), nil
}

// Release implements role.Role. Releasing an unknown attachment is a no-op.
func (m *IPAM) Release(ctx context.Context, containerID, ifName string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, found, err := m.store.Release(m.pool, containerID, ifName)
	if err != nil {
		return fmt.Errorf("podipam: release %s/%s: %w", containerID, ifName, err)
	}
	if found {
		m.inUse--
		m.log.Debug("released", "key", rec.Key(), "addr", rec.Addr)
	}
	return nil
}

// Allocations implements role.Role.
func (m *IPAM) Allocations(ctx context.Context) ([]role.Allocation, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	recs, err := m.store.List(m.pool)
	if err != nil {
		return nil, fmt.Errorf("podipam: list pool %s: %w", m.pool, err)
	}
	out := make([]role.Allocation, 0, len(recs))
	for _, r := range recs {
		out = append(out, m.allocation(r))
	}
	return out, nil
}

func (m *IPAM) allocation(r ipamstore.Record) role.Allocation {
	return role.Allocation{
		ContainerID:  r.ContainerID,
		IfName:       r.IfName,
		PodNamespace: r.PodNamespace,
		PodName:      r.PodName,
		Addr:         netip.PrefixFrom(r.Addr, 32),
		Gateway:      m.gateway,
		Routes:       append([]netip.Prefix(nil), m.routes...),
		MTU:          m.mtu,
		Datapath:     role.DatapathVethRouted,
	}
}

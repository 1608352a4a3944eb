package edgenode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/strata-net/strata/bgp"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/podipam"
	"github.com/strata-net/strata/internal/role"
)

// Advertiser is what the edge role needs from BGP; *bgp.Speaker has it.
type Advertiser interface {
	Advertise(ctx context.Context, ads ...bgp.Advertisement) error
	Withdraw(ctx context.Context, prefixes ...netip.Prefix) error
}

// CIDRSource says where the node's pod CIDR comes from: Node.spec.podCIDR,
// which kube-controller-manager, an operator, or the node's NodePool
// allocation (package nodepool, before the role is built) sets.
type CIDRSource struct {
	// NodePodCIDR is Node.spec.podCIDR ("" when unset).
	NodePodCIDR string
}

// Resolve returns the node's pod CIDR.
func (s CIDRSource) Resolve() (netip.Prefix, error) {
	if s.NodePodCIDR == "" {
		return netip.Prefix{}, errors.New("no pod CIDR: Node.spec.podCIDR is empty; give the node's NodePool spec.podCIDRs, or let kube-controller-manager allocate (--allocate-node-cidrs)")
	}
	p, err := netip.ParsePrefix(s.NodePodCIDR)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("Node.spec.podCIDR %q: %w (expected e.g. 10.244.1.0/24)", s.NodePodCIDR, err)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("Node.spec.podCIDR %q has host bits set: use %s", s.NodePodCIDR, p.Masked())
	}
	return p, nil
}

// Config builds an edge role.
type Config struct {
	CIDR    CIDRSource
	Store   *ipamstore.Store
	Speaker Advertiser
	// Communities are attached to the pod CIDR advertisement.
	Communities []uint32
	MTU         int
	Logger      *slog.Logger
}

// Role is the edge node role: pod IPAM from the node's CIDR (persisted in the
// IPAM store) and BGP advertisement of that CIDR.
type Role struct {
	*podipam.IPAM
	adv         Advertiser
	communities []uint32
	log         *slog.Logger

	mu         sync.Mutex
	advertised bool
}

var _ role.Role = (*Role)(nil)

// New resolves the pod CIDR and opens its IPAM.
func New(cfg Config) (*Role, error) {
	if cfg.Speaker == nil {
		return nil, errors.New("edge role: Speaker is nil: the edge role needs a BGP speaker to advertise its pod CIDR")
	}
	cidr, err := cfg.CIDR.Resolve()
	if err != nil {
		return nil, fmt.Errorf("edge role: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	ipam, err := podipam.New(cidr, cfg.Store, podipam.Options{Name: "bgp-underlay", MTU: cfg.MTU, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("edge role: %w", err)
	}
	return &Role{IPAM: ipam, adv: cfg.Speaker, communities: cfg.Communities, log: log.With("component", "edge-node", "cidr", cidr)}, nil
}

// Start advertises the pod CIDR; the IPAM is ready from New on.
func (r *Role) Start(ctx context.Context) error {
	if err := r.IPAM.Start(ctx); err != nil {
		return err
	}
	return r.advertise(ctx)
}

func (r *Role) advertise(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.advertised {
		return nil
	}
	if err := r.adv.Advertise(ctx, bgp.Advertisement{Prefix: r.CIDR(), Communities: r.communities}); err != nil {
		return fmt.Errorf("edge role: advertise pod CIDR %s: %w", r.CIDR(), err)
	}
	r.advertised = true
	r.log.Info("pod CIDR advertised")
	return nil
}

// Withdraw stops advertising the pod CIDR: call it when the node drains or
// leaves the edge role. Allocations stay persisted.
func (r *Role) Withdraw(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.advertised {
		return nil
	}
	if err := r.adv.Withdraw(ctx, r.CIDR()); err != nil {
		return fmt.Errorf("edge role: withdraw pod CIDR %s: %w", r.CIDR(), err)
	}
	r.advertised = false
	r.log.Info("pod CIDR withdrawn")
	return nil
}

// SetDraining follows the node's drain state (spec.unschedulable): a
// draining node withdraws its CIDR, an undrained one advertises it again.
func (r *Role) SetDraining(ctx context.Context, draining bool) error {
	if draining {
		return r.Withdraw(ctx)
	}
	return r.advertise(ctx)
}

// Advertised reports whether the pod CIDR is currently advertised.
func (r *Role) Advertised() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.advertised
}

// Stop keeps the advertisement: a planned restart relies on BGP graceful
// restart, and a role change calls Withdraw first.
func (r *Role) Stop(ctx context.Context) error { return r.IPAM.Stop(ctx) }

package agent

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/strata-net/strata/internal/role"
)

// auditedRole is a cloud-like role whose pool reports what the cloud left out.
type auditedRole struct{}

func (auditedRole) Name() string                                  { return "eni-multi-ip" }
func (auditedRole) Start(context.Context) error                   { return nil }
func (auditedRole) Ready() error                                  { return nil }
func (auditedRole) Stop(context.Context) error                    { return nil }
func (auditedRole) OwnedPrefixes() []netip.Prefix                 { return nil }
func (auditedRole) Release(context.Context, string, string) error { return nil }
func (auditedRole) Allocate(context.Context, role.PodRequest) (role.Allocation, error) {
	return role.Allocation{}, nil
}
func (auditedRole) Allocations(context.Context) ([]role.Allocation, error) { return nil, nil }
func (auditedRole) Idle() int                                              { return 7 }
func (auditedRole) Unconfirmed() int                                       { return 2 }
func (auditedRole) Lost() []string                                         { return []string{"c1/eth0 (10.0.64.9 on eni-1)"} }
func (auditedRole) PoolError() error                                       { return errors.New("list this node's ENIs: incomplete") }

// What the operator must act on in the cloud pool shows in /status.
func TestStatusShowsPoolAudit(t *testing.T) {
	a := &Agent{role: auditedRole{}}
	st := a.status()
	if st.PoolIdle == nil || *st.PoolIdle != 7 || st.PoolUnconfirmed == nil || *st.PoolUnconfirmed != 2 ||
		!slices.Equal(st.PoolLost, []string{"c1/eth0 (10.0.64.9 on eni-1)"}) || st.PoolError != "list this node's ENIs: incomplete" {
		t.Fatalf("status pool: idle %v unconfirmed %v lost %v error %q", st.PoolIdle, st.PoolUnconfirmed, st.PoolLost, st.PoolError)
	}
}

package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/strata-net/strata/api"
	"github.com/strata-net/strata/topology/render"
)

// Status is what /status serves and `strata status` prints.
type Status = api.Status

// idlePool is a role with a warm address pool (cloud-node's Manager).
type idlePool interface{ Idle() int }

// auditedPool is a pool that checks its addresses against the cloud
// (cloud-node's Manager).
type auditedPool interface {
	Unconfirmed() int
	Lost() []string
	PoolError() error
}

func (a *Agent) status() Status {
	a.mu.Lock()
	plan := a.plan
	a.mu.Unlock()
	st := Status{Node: a.cfg.NodeName, Ready: "yes"}
	if a.overlay != nil {
		st.VXLANFilter = a.overlay.Status().MemberFilter
	}
	if a.fast != nil {
		st.FastPath = a.fast.status()
	}
	if m := a.meta.Load(); m != nil {
		st.PodMetadata = a.cfg.PodMetadataAccess + "; node table: " + m.state()
	}
	st.WAN = a.wan.status()
	if a.role != nil {
		st.Role = a.role.Name()
		if err := a.role.Ready(); err != nil {
			st.Ready = err.Error()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if allocs, err := a.role.Allocations(ctx); err == nil {
			st.Allocations = len(allocs)
		}
		cancel()
		if p, ok := a.role.(idlePool); ok {
			idle := p.Idle()
			st.PoolIdle = &idle
		}
		if p, ok := a.role.(auditedPool); ok {
			n := p.Unconfirmed()
			st.PoolUnconfirmed, st.PoolLost = &n, p.Lost()
			if err := p.PoolError(); err != nil {
				st.PoolError = err.Error()
			}
		}
	}
	if plan != nil {
		if np, ok := plan.Node(a.cfg.NodeName); ok {
			st.Datapath, st.Reason = np.Datapath, np.Reason
		}
		st.Nodes = plan.Nodes()
		st.Refused = plan.Refused()
		st.Peers = plan.PeersOf(a.cfg.NodeName)
	}
	return st
}

func (a *Agent) serveStatus(w http.ResponseWriter, _ *http.Request) { writeJSON(w, a.status()) }

// writeJSON answers with v as indented JSON (what `strata ... --json` prints).
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// servePlanDOT serves this agent's view of the whole plan as Graphviz DOT.
func (a *Agent) servePlanDOT(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	plan := a.plan
	a.mu.Unlock()
	if plan == nil {
		http.Error(w, "no plan yet", http.StatusServiceUnavailable)
		return
	}
	dot, err := render.DOT(plan)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/vnd.graphviz")
	_, _ = w.Write(dot)
}

package bgp

import (
	"encoding/json"
	"net/http"
	"time"
)

// PeersPath is where the agent serves StatusHandler; `strata bgp peers`
// reads it.
const PeersPath = "/bgp/peers"

// PeerJSON is the wire form of PeerStatus.
type PeerJSON struct {
	Peer     string `json:"peer"`
	ASN      uint32 `json:"asn"`
	State    string `json:"state"`
	Since    string `json:"since,omitempty"`
	Flaps    uint32 `json:"flaps"`
	Received uint64 `json:"received"`
	Sent     uint64 `json:"sent"`
	// Rejected counts prefixes the import policy keeps out of the kernel,
	// per reason; RejectedExample is one of each with why.
	Rejected        map[string]uint64 `json:"rejected,omitempty"`
	RejectedExample map[string]string `json:"rejectedExample,omitempty"`
	MaxPrefixes     uint32            `json:"maxPrefixes"`
	OverLimit       bool              `json:"overLimit,omitempty"`
	BadUpdates      uint64            `json:"badUpdates,omitempty"`
	LastBadUpdate   string            `json:"lastBadUpdate,omitempty"`
	Reason          string            `json:"reason,omitempty"`
}

// StatusHandler serves the speaker's peers as JSON.
func StatusHandler(s *Speaker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps, err := s.Peers(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		out := make([]PeerJSON, 0, len(ps))
		for _, p := range ps {
			j := PeerJSON{Peer: p.Address.String(), ASN: p.ASN, State: string(p.State), Flaps: p.Flaps,
				Received: p.Received, Sent: p.Sent, Reason: p.Reason, MaxPrefixes: p.MaxPrefixes, OverLimit: p.OverLimit,
				BadUpdates: p.BadUpdates, LastBadUpdate: p.LastBadUpdate}
			for r, n := range p.Rejected {
				if j.Rejected == nil {
					j.Rejected, j.RejectedExample = map[string]uint64{}, map[string]string{}
				}
				j.Rejected[string(r)] = n
				j.RejectedExample[string(r)] = p.RejectedExample[r]
			}
			if !p.Since.IsZero() {
				j.Since = p.Since.UTC().Format(time.RFC3339)
			}
			out = append(out, j)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
}

// InstallPath is where the agent serves InstallHandler; `strata bgp peers`
// reads it too.
const InstallPath = "/bgp/install"

// InstallJSON is the wire form of InstallReport.
type InstallJSON struct {
	// FailingRoutes is how many learned routes the kernel refuses right
	// now; Failing lists up to 100 of them.
	FailingRoutes int               `json:"failingRoutes"`
	Failing       []FailedRouteJSON `json:"failing,omitempty"`
	ErrorsTotal   uint64            `json:"errorsTotal"`
	StaleWaiting  bool              `json:"staleWaiting,omitempty"`
	Stale         string            `json:"stale,omitempty"`
}

// FailedRouteJSON is one refused route.
type FailedRouteJSON struct {
	Prefix    string   `json:"prefix"`
	NextHops  []string `json:"nextHops,omitempty"`
	Error     string   `json:"error"`
	Attempts  int      `json:"attempts"`
	Since     string   `json:"since"`
	NextRetry string   `json:"nextRetry"`
}

// InstallHandler serves the installer's report as JSON.
func InstallHandler(in *Installer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := in.Report()
		out := InstallJSON{FailingRoutes: len(rep.Failing), ErrorsTotal: rep.ErrorsTotal, StaleWaiting: rep.StaleWaiting, Stale: rep.Stale}
		for i, f := range rep.Failing {
			if i == 100 {
				break
			}
			j := FailedRouteJSON{Prefix: f.Prefix.String(), Error: f.Error, Attempts: f.Attempts,
				Since: f.Since.UTC().Format(time.RFC3339), NextRetry: f.NextRetry.UTC().Format(time.RFC3339)}
			for _, nh := range f.NextHops {
				j.NextHops = append(j.NextHops, nh.String())
			}
			out.Failing = append(out.Failing, j)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
}

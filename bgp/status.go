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

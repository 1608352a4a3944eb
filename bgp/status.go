package bgp

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/strata-net/strata/api"
)

// StatusHandler serves the speaker's peers as JSON: api.BGPPeersPath.
func StatusHandler(s *Speaker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps, err := s.Peers(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		out := make([]api.BGPPeer, 0, len(ps))
		for _, p := range ps {
			j := api.BGPPeer{Peer: p.Address.String(), ASN: p.ASN, State: string(p.State), Flaps: p.Flaps,
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

// InstallHandler serves the installer's report as JSON: api.BGPInstallPath.
func InstallHandler(in *Installer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := in.Report()
		out := api.BGPInstall{FailingRoutes: len(rep.Failing), ErrorsTotal: rep.ErrorsTotal, StaleWaiting: rep.StaleWaiting, Stale: rep.Stale}
		for i, f := range rep.Failing {
			if i == 100 {
				break
			}
			j := api.BGPFailedRoute{Prefix: f.Prefix.String(), Error: f.Error, Attempts: f.Attempts,
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

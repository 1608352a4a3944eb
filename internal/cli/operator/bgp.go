package operator

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/strata-net/strata/api"
)

func init() { registerStrata(newBGPCmd) }

func newBGPCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bgp", Short: "BGP sessions of this edge node"}
	var addr string
	var asJSON bool
	peers := &cobra.Command{
		Use:   "peers",
		Short: "Show each BGP peer's state, prefixes sent and received, flaps and why it is down",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ps, raw, err := fetchBGPPeers(cmd.Context(), addr)
			if err != nil {
				return err
			}
			if asJSON {
				_, err := os.Stdout.Write(raw)
				return err
			}
			PrintBGPPeers(os.Stdout, ps)
			var inst api.BGPInstall
			if _, err := getAgentJSON(cmd.Context(), addr, api.BGPInstallPath, &inst, "is this an edge node with BGP?"); err == nil {
				PrintBGPInstall(os.Stdout, inst)
			}
			return nil
		},
	}
	peers.Flags().StringVar(&addr, "agent", api.DefaultAgentAddr, agentFlagHelp)
	peers.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON")
	cmd.AddCommand(peers)
	return cmd
}

func fetchBGPPeers(ctx context.Context, addr string) ([]api.BGPPeer, []byte, error) {
	var ps []api.BGPPeer
	raw, err := getAgentJSON(ctx, addr, api.BGPPeersPath, &ps, "is this an edge node with BGP?")
	return ps, raw, err
}

// PrintBGPPeers writes peers as a table.
func PrintBGPPeers(w io.Writer, ps []api.BGPPeer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tASN\tSTATE\tSINCE\tRECEIVED\tREJECTED\tMAX\tSENT\tFLAPS\tREASON")
	for _, p := range ps {
		state := p.State
		if p.OverLimit {
			state += " (over max-prefixes)"
		}
		var total uint64
		for _, n := range p.Rejected {
			total += n
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", p.Peer, p.ASN, state, p.Since, p.Received, total, p.MaxPrefixes, p.Sent, p.Flaps, p.Reason)
	}
	_ = tw.Flush()
	// Rejections and bad updates need their reasons: one line each.
	for _, p := range ps {
		reasons := make([]string, 0, len(p.Rejected))
		for r := range p.Rejected {
			reasons = append(reasons, r)
		}
		slices.Sort(reasons)
		for _, r := range reasons {
			fmt.Fprintf(w, "%s rejected %d prefixes as %s, e.g. %s\n", p.Peer, p.Rejected[r], r, p.RejectedExample[r])
		}
		if p.BadUpdates > 0 {
			fmt.Fprintf(w, "%s sent %d paths that could not be decoded, last: %s\n", p.Peer, p.BadUpdates, p.LastBadUpdate)
		}
	}
}

// PrintBGPInstall writes the installer's state under the peers: refused
// routes with their errors, and stale routes kept after a restart.
func PrintBGPInstall(w io.Writer, in api.BGPInstall) {
	if in.StaleWaiting || in.Stale != "" {
		fmt.Fprintf(w, "stale routes: %s\n", in.Stale)
	}
	if in.FailingRoutes == 0 {
		fmt.Fprintf(w, "kernel: every learned route installed (%d refused writes since start)\n", in.ErrorsTotal)
		return
	}
	fmt.Fprintf(w, "kernel: %d learned routes NOT installed, retried with backoff (%d refused writes since start):\n", in.FailingRoutes, in.ErrorsTotal)
	for _, f := range in.Failing {
		fmt.Fprintf(w, "  %s via %v: %s (attempt %d, failing since %s, next retry %s)\n", f.Prefix, f.NextHops, f.Error, f.Attempts, f.Since, f.NextRetry)
	}
}

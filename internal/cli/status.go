package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-net/strata/internal/agent"
)

func init() { registerStrata(newStatusCmd) }

func newStatusCmd() *cobra.Command {
	var addr string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this node's datapath, role and the path to every peer",
		Long: `status asks the local strata-agent (its --metrics-addr) for its status:
the datapath the plan gives this node and why, whether its role can hand out
addresses, whether the eBPF fast path forwards pod traffic (and why, with its
per-path and per-pod counters), and every peer with its path (native, vxlan,
unreachable) and the reason.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, raw, err := fetchStatus(cmd.Context(), addr)
			if err != nil {
				return err
			}
			if asJSON {
				_, err := os.Stdout.Write(raw)
				return err
			}
			PrintStatus(os.Stdout, st)
			if st.Datapath == "bgp-underlay" {
				fmt.Println()
				if ps, _, err := fetchBGPPeers(cmd.Context(), addr); err == nil {
					PrintBGPPeers(os.Stdout, ps)
				} else {
					fmt.Println("BGP peers unavailable:", err)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "agent", "127.0.0.1:9253", "the agent's --metrics-addr")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON")
	return cmd
}

func fetchStatus(ctx context.Context, addr string) (agent.Status, []byte, error) {
	var st agent.Status
	raw, err := getAgentJSON(ctx, addr, "/status", &st, "")
	return st, raw, err
}

// getAgentJSON fetches one of the agent's JSON endpoints into v and returns
// the raw body too (for --json). hint helps when the endpoint is missing.
func getAgentJSON(ctx context.Context, addr, path string, v any, hint string) ([]byte, error) {
	return agentJSON(ctx, http.MethodGet, addr, path, v, hint)
}

// agentJSON calls one of the agent's JSON endpoints with method.
func agentJSON(ctx context.Context, method, addr, path string, v any, hint string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask the agent at %s (is strata-agent running? see --agent): %w", addr, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return raw, fmt.Errorf("agent at %s answered %s for %s (%s): %s", addr, resp.Status, path, hint, raw)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return raw, fmt.Errorf("decode %s: %w", path, err)
	}
	return raw, nil
}

// PrintStatus writes an agent's status as tables.
func PrintStatus(w io.Writer, st agent.Status) {
	fmt.Fprintf(w, "node %s: datapath %s (%s)\nrole %s, ready: %s\n", st.Node, st.Datapath, st.Reason, st.Role, st.Ready)
	st.FastPath.BPFStatus().WriteText(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tPATH\tPOD PREFIXES\tREASON")
	for _, p := range st.Peers {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", p.Peer, p.Path, len(p.PodPrefixes), p.Reason)
	}
	_ = tw.Flush()
}

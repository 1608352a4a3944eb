package operator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-net/strata/api"
	"github.com/strata-net/strata/topology"
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
	cmd.Flags().StringVar(&addr, "agent", api.DefaultAgentAddr, agentFlagHelp)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON")
	return cmd
}

const agentFlagHelp = "the agent: its --metrics-addr as host:port or http://host:port, or its --control-socket path"

func fetchStatus(ctx context.Context, addr string) (api.Status, []byte, error) {
	var st api.Status
	raw, err := getAgentJSON(ctx, addr, api.StatusPath, &st, "")
	return st, raw, err
}

// getAgentJSON fetches one of the agent's JSON endpoints into v and returns
// the raw body too (for --json). hint helps when the endpoint is missing.
func getAgentJSON(ctx context.Context, addr, path string, v any, hint string) ([]byte, error) {
	return agentJSON(ctx, http.MethodGet, addr, path, v, hint)
}

// agentEndpoint is where `strata` reaches the agent: its TCP status
// listener (host:port or an http:// URL) or a unix socket (a path, or
// unix:///path), the control socket that also takes the switches.
type agentEndpoint struct {
	base   string // URL prefix the paths are appended to
	socket string // unix socket path; "" for TCP
	shown  string // what errors call it
}

// parseAgent accepts 10.255.0.4:9253, http://10.255.0.4:9253[/],
// /run/strata/agent.sock and unix:///run/strata/agent.sock.
func parseAgent(s string) (agentEndpoint, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return agentEndpoint{}, errors.New("--agent is empty: give host:port (the agent's --metrics-addr), an http:// URL or the control socket's path")
	case strings.HasPrefix(s, "unix://"):
		return parseAgent(strings.TrimPrefix(s, "unix://"))
	case strings.HasPrefix(s, "/"):
		return agentEndpoint{base: "http://agent", socket: s, shown: s}, nil
	case strings.Contains(s, "://"):
		u, err := url.Parse(s)
		if err != nil {
			return agentEndpoint{}, fmt.Errorf("--agent %q: %w", s, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.RawQuery != "" {
			return agentEndpoint{}, fmt.Errorf("--agent %q: want http://host:port, host:port or a unix socket path", s)
		}
		base := strings.TrimSuffix(u.Scheme+"://"+u.Host+u.Path, "/")
		return agentEndpoint{base: base, shown: base}, nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return agentEndpoint{}, fmt.Errorf("--agent %q: want host:port (e.g. 127.0.0.1:9253), an http:// URL or a unix socket path: %w", s, err)
	}
	return agentEndpoint{base: "http://" + s, shown: s}, nil
}

func (e agentEndpoint) client() *http.Client {
	if e.socket == "" {
		return http.DefaultClient
	}
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", e.socket)
	}}}
}

// agentJSON calls one of the agent's JSON endpoints with method.
func agentJSON(ctx context.Context, method, addr, path string, v any, hint string) ([]byte, error) {
	ep, err := parseAgent(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, ep.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := ep.client().Do(req)
	if err != nil {
		if ep.socket != "" && errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("ask the agent on %s: %w (the control socket is root-only: run as root, or pass --agent 127.0.0.1:9253 for the read-only status)", ep.shown, err)
		}
		return nil, fmt.Errorf("ask the agent at %s (is strata-agent running? see --agent): %w", ep.shown, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return raw, fmt.Errorf("agent at %s answered %s for %s (%s): %s", ep.shown, resp.Status, path, hint, bytes.TrimSpace(raw))
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return raw, fmt.Errorf("decode %s: %w", path, err)
	}
	return raw, nil
}

// PrintStatus writes an agent's status as tables.
func PrintStatus(w io.Writer, st api.Status) {
	fmt.Fprintf(w, "node %s: datapath %s (%s)\nrole %s, ready: %s\n", st.Node, st.Datapath, st.Reason, st.Role, st.Ready)
	if st.PoolIdle != nil {
		fmt.Fprintf(w, "pool: %d idle", *st.PoolIdle)
		if st.PoolUnconfirmed != nil && *st.PoolUnconfirmed > 0 {
			fmt.Fprintf(w, ", %d unconfirmed (left out of the cloud's last listing)", *st.PoolUnconfirmed)
		}
		if st.PoolError != "" {
			fmt.Fprintf(w, "; last cloud error (retried): %s", st.PoolError)
		}
		fmt.Fprintln(w)
		for _, l := range st.PoolLost {
			fmt.Fprintf(w, "lost pod address (the cloud no longer gives it this node; recreate the pod): %s\n", l)
		}
	}
	writeFastPath(w, st.FastPath)
	if st.VXLANFilter != "" {
		fmt.Fprintf(w, "vxlan member filter: %s\n", st.VXLANFilter)
	}
	if st.PodMetadata != "" {
		fmt.Fprintf(w, "pod metadata-service access: %s\n", st.PodMetadata)
	}
	printWAN(w, st.WAN)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tPATH\tPOD PREFIXES\tREASON")
	for _, p := range st.Peers {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", p.Peer, p.Path, len(p.PodPrefixes), p.Reason)
	}
	_ = tw.Flush()
	printRefused(w, st.Refused)
}

// printRefused lists the nodes whose pod prefix claims were refused: an
// isolated node gets nothing programmed until its claims agree with the
// authority (docs/trust.md).
func printRefused(w io.Writer, refused []topology.NodePlan) {
	if len(refused) == 0 {
		return
	}
	fmt.Fprintln(w, "\nREFUSED POD PREFIX CLAIMS (docs/trust.md)")
	for _, n := range refused {
		if n.Isolated != "" {
			fmt.Fprintf(w, "  %s isolated (%s): %s\n", n.Name, n.Isolated, n.IsolatedReason)
			continue
		}
		for _, r := range n.Withheld {
			fmt.Fprintf(w, "  %s: %s withheld: %s\n", n.Name, r.Prefix, r.Reason)
		}
	}
}

// printWAN writes the WAN transport: implementation and why, key,
// endpoints, and each WireGuard peer with its handshake age.
func printWAN(w io.Writer, st *api.WAN) {
	if st == nil {
		return
	}
	if st.Off != "" {
		fmt.Fprintf(w, "wan: off (%s)\n", st.Off)
		return
	}
	fmt.Fprintf(w, "wan: %s WireGuard (%s), port %d\n  public key %s\n", st.Impl, st.ImplReason, st.Port, st.PublicKey)
	if st.PublicEndpoint.IsValid() {
		fmt.Fprintf(w, "  public endpoint %s (declared, published)\n", st.PublicEndpoint)
	} else {
		fmt.Fprintln(w, "  public endpoint: none (behind NAT: this node initiates, with keepalives)")
	}
	for _, peer := range slices.Sorted(maps.Keys(st.SeenAs)) {
		fmt.Fprintf(w, "  seen by %s as %s (learned, not published)\n", peer, st.SeenAs[peer])
	}
	for _, e := range st.Errors {
		fmt.Fprintf(w, "  not applied: %s\n", e)
	}
	if st.LastError != "" {
		fmt.Fprintf(w, "  last error: %s\n", st.LastError)
	}
	if len(st.Peers) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  WAN PEER\tENDPOINT\tHANDSHAKE\tALLOWED\tPROBES OK/FAILED\tRX/TX BYTES\tERROR")
	for _, p := range st.Peers {
		hs := "never"
		if p.HandshakeAgeSeconds != nil {
			hs = (time.Duration(*p.HandshakeAgeSeconds * float64(time.Second))).Round(time.Second).String() + " ago"
		}
		ep := "-"
		if p.Endpoint.IsValid() {
			ep = p.Endpoint.String()
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d/%d\t%d/%d\t%s\n", p.Name, ep, hs, len(p.AllowedIPs), p.Probes.OK, p.Probes.Failed, p.RxBytes, p.TxBytes, p.Error)
	}
	_ = tw.Flush()
}

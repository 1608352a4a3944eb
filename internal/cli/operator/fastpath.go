package operator

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"github.com/strata-net/strata/api"
)

func init() { registerStrata(newFastpathCmd) }

func newFastpathCmd() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "fastpath [on|off]",
		Short: "Show, or switch at run time, this node's eBPF pod fast path",
		Long: `fastpath without an argument prints the local agent's eBPF fast path: whether
it is loaded (--bpf-fastpath and the kernel probe decide at start), whether it
forwards, where it is attached, and its per-path and per-pod counters.

fastpath off switches it off at once without a restart: the programs stay
attached but hand every packet to the kernel, so pod traffic takes plain
routing and no connection is lost. fastpath on switches it back. The switch
lasts until the agent restarts; --bpf-fastpath is the lasting setting. The
agent takes switches only on its root-only unix socket (--control-socket,
default ` + api.DefaultControlSocket + `), so run this as root on the node; its TCP
status listener answers read-only GETs and refuses every switch.`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var st api.FastPath
			var err error
			if len(args) == 0 {
				_, err = getAgentJSON(cmd.Context(), addr, api.FastPathPath, &st, "an agent without the fast path")
			} else {
				if args[0] != "on" && args[0] != "off" {
					return fmt.Errorf("fastpath %q: want on or off", args[0])
				}
				_, err = agentJSON(cmd.Context(), http.MethodPost, addr, api.FastPathSwitchPath+args[0], &st, "the switch")
			}
			if err != nil {
				return err
			}
			writeFastPath(os.Stdout, st)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "agent", api.DefaultControlSocket, agentFlagHelp+" (switches need the socket)")
	return cmd
}

// writeFastPath prints the fast path's state line, then its nonzero path
// counters (the fast path proper first) and each pod's.
func writeFastPath(w io.Writer, s api.FastPath) {
	state := "off"
	on, why := s.Forwarding()
	if on {
		state = "on"
	}
	if why != "" {
		state += " (" + why + ")"
	}
	attach := s.Attach
	if attach == "" {
		attach = "-"
	}
	fmt.Fprintf(w, "bpf fast path: %s; attach %s, %d interfaces, %d endpoints\n", state, attach, len(s.Attached), s.Endpoints)
	if s.Counters == nil {
		return
	}
	paths := slices.SortedFunc(maps.Keys(s.Counters.Paths), func(a, b string) int {
		return cmp.Or(cmp.Compare(pathRank(a), pathRank(b)), cmp.Compare(a, b))
	})
	for _, name := range paths {
		if c := s.Counters.Paths[name]; c.Packets > 0 {
			fmt.Fprintf(w, "  path %-22s %12d pkts %14d bytes\n", name, c.Packets, c.Bytes)
		}
	}
	for _, ip := range slices.SortedFunc(maps.Keys(s.Counters.Pods), netip.Addr.Compare) {
		p := s.Counters.Pods[ip]
		fmt.Fprintf(w, "  pod  %-22s local %d/%dB remote %d/%dB stack %d/%dB\n", ip,
			p.Local.Packets, p.Local.Bytes, p.Remote.Packets, p.Remote.Bytes, p.Stack.Packets, p.Stack.Bytes)
	}
}

// pathRank puts the fast path proper (local, remote) before the paths that
// hand packets to the kernel.
func pathRank(name string) int {
	switch name {
	case "local":
		return 0
	case "remote":
		return 1
	}
	return 2
}

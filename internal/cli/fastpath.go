package cli

import (
	"fmt"
	"net/http"
	"os"

	"github.com/spf13/cobra"

	"github.com/strata-net/strata/internal/agent"
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
default ` + agent.DefaultControlSocket + `), so run this as root on the node; its TCP
status listener answers read-only GETs and refuses every switch.`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var st agent.FastPathStatus
			var err error
			if len(args) == 0 {
				_, err = getAgentJSON(cmd.Context(), addr, "/bpf/fastpath", &st, "an agent without the fast path")
			} else {
				if args[0] != "on" && args[0] != "off" {
					return fmt.Errorf("fastpath %q: want on or off", args[0])
				}
				_, err = agentJSON(cmd.Context(), http.MethodPost, addr, "/bpf/fastpath/"+args[0], &st, "the switch")
			}
			if err != nil {
				return err
			}
			st.BPFStatus().WriteText(os.Stdout)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "agent", agent.DefaultControlSocket, agentFlagHelp+" (switches need the socket)")
	return cmd
}

package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/strata-net/strata/internal/version"
)

// NewAgent returns the `strata-agent` command: the per-node daemon.
func NewAgent() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "strata-agent",
		Short: "Per-node Strata daemon: discovers facts, builds the datapath, serves CNI",
		Long: `strata-agent runs on every node (as a DaemonSet pod, or by hand in the lab).

On start it reads its Node, probes the cloud metadata service (ECS, ENS or
none), publishes the node's facts, asks the topology module for a plan, starts
the role the plan names (cloud ENI pool, or edge pod CIDR + BGP), programs
native and VXLAN peers, and serves the strata-cni plugin on a root-only unix
socket.`,
		Version:      version.Version,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("the agent's wiring is not built yet; see issue 8")
		},
	}
	cmd.SetVersionTemplate(version.String("strata-agent") + "\n")
	return cmd
}

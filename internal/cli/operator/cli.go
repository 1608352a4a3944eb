// Package operator builds `strata`, the operator's CLI. It reads and
// switches strata-agent over HTTP only (the types and paths of package api),
// so it links none of the daemon; deps_test.go keeps it so. Subcommands
// register themselves from their own files, so each concern's verbs live in
// one place.
package operator

import (
	"github.com/spf13/cobra"

	"github.com/strata-net/strata/internal/version"
)

var strataSubcommands []func() *cobra.Command

// registerStrata adds a subcommand to the `strata` CLI.
func registerStrata(c func() *cobra.Command) { strataSubcommands = append(strataSubcommands, c) }

// NewStrata returns the `strata` command: the operator's CLI.
func NewStrata() *cobra.Command {
	root := &cobra.Command{
		Use:   "strata",
		Short: "Operate Strata, the mixed cloud/edge Kubernetes network manager",
		Long: `strata inspects and operates a Strata network.

Strata gives pods on cloud (ECS ENI), data-centre (BGP underlay) and
L3-only edge (VXLAN overlay) nodes one flat pod network, and chooses the
path between every pair of nodes from declared facts and measured
reachability.

This CLI runs no datapath: status, bgp and fastpath ask the strata-agent
daemon on a node (see --agent; the daemon is the separate strata-agent
binary), and topology computes a plan from a facts file offline.`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	root.SetVersionTemplate(version.String("strata") + "\n")
	for _, c := range strataSubcommands {
		root.AddCommand(c())
	}
	return root
}

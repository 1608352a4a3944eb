package operator

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-net/strata/topology"
	"github.com/strata-net/strata/topology/render"
)

func init() { registerStrata(newTopologyCmd) }

func newTopologyCmd() *cobra.Command {
	var (
		factsPath, out, format, output string
		failThreshold                  int
		holdDown                       time.Duration
		noGraph                        bool
		local                          string
	)
	cmd := &cobra.Command{
		Use:   "topology",
		Short: "Show the topology plan: each node's datapath and each pair's path, as a table and a graph",
		Long: `topology decides the plan from node facts and prints it: nodes with their
role and datapath, and every ordered pair with its path (native, vxlan,
unreachable) and the reason. It writes the graph as Graphviz DOT, and as SVG
(or PNG) when graphviz's dot is installed: nodes coloured by datapath, edges
by path, failed native links dashed.

Facts come from a YAML/JSON file for now (see topology/testdata/lab.yaml);
the agent's status endpoint will be a source later.`,
		Example: `  strata topology --facts topology/testdata/lab.yaml
  strata topology --facts topology/testdata/lab-failover.yaml --out /tmp/lab --format png`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if factsPath == "" {
				return errors.New("--facts FILE is required (YAML or JSON node facts, e.g. topology/testdata/lab.yaml)")
			}
			data, err := os.ReadFile(factsPath)
			if err != nil {
				return fmt.Errorf("read facts: %w", err)
			}
			facts, err := topology.ParseFactsDoc(data)
			if err != nil {
				return fmt.Errorf("%s: %w", factsPath, err)
			}
			if facts.Now.IsZero() {
				facts.Now = time.Now()
			}
			cfg := topology.DefaultConfig()
			cfg.FailThreshold, cfg.HoldDown = failThreshold, holdDown
			plan, err := topology.Decide(facts, cfg)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			switch output {
			case "table":
				if err := render.Table(w, plan); err != nil {
					return err
				}
			case "json":
				doc := plan.View(local, render.MaxPairs)
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(doc); err != nil {
					return err
				}
			default:
				return fmt.Errorf("--output %q: want table or json", output)
			}
			if noGraph {
				return nil
			}
			files, err := render.WriteFiles(cmd.Context(), plan, out, format)
			for _, f := range files {
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", f)
			}
			if errors.Is(err, render.ErrNoDot) {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: %v\n", err)
				return nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&factsPath, "facts", "", "node facts file (YAML or JSON; see topology/testdata/lab.yaml)")
	f.StringVar(&out, "out", "strata-topology", "base path of the graph files (<out>.dot, <out>.svg)")
	f.StringVar(&format, "format", "svg", "image format when dot is installed: svg or png")
	f.StringVarP(&output, "output", "o", "table", "printed form: table or json")
	f.StringVar(&local, "node", "", "with -o json: also list what this node programs for each peer")
	f.BoolVar(&noGraph, "no-graph", false, "print only; write no DOT/image files")
	f.IntVar(&failThreshold, "fail-threshold", topology.DefaultConfig().FailThreshold, "K: consecutive failed native probes before a pool link leaves native")
	f.DurationVar(&holdDown, "hold-down", topology.DefaultConfig().HoldDown, "how long a healed native path must stay healthy before pairs return to it")
	return cmd
}

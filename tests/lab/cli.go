package lab

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/strata-net/strata/internal/testutil"
)

// Main runs the strata-lab command line and returns the exit code.
func Main(args []string) int {
	var specPath, toolsBin, outDir string
	root := &cobra.Command{
		Use:   "strata-lab",
		Short: "Run Strata's lab: a whole mixed cloud/edge cluster in network namespaces",
		Long: `strata-lab builds the cluster described in tests/lab/lab.yaml on this machine:
routers and nodes are network namespaces, BIRD plays the VBR and the IDC
vSwitch, a real kube-apiserver runs on a management network, and pods are
created through strata-cni. It sends packets only between its own namespaces.

Needs root, the Debian packages (make deps) and the built tools (make tools).`,
		SilenceUsage: true,
	}
	root.PersistentFlags().StringVar(&specPath, "spec", defaultSpec(), "lab description file")
	root.PersistentFlags().StringVar(&outDir, "out", "_out/lab", "where matrix writes the topology picture")
	root.PersistentFlags().StringVar(&toolsBin, "tools-bin", testutil.ToolsBin(), "directory with kube-apiserver, etcd and cnitool (make tools)")
	open := func() (*Lab, error) {
		if os.Geteuid() != 0 {
			return nil, fmt.Errorf("strata-lab needs root (it creates network namespaces)")
		}
		spec, err := Load(specPath)
		if err != nil {
			return nil, err
		}
		return Open(spec, Options{ToolsBin: toolsBin, Progress: os.Stdout}), nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	root.AddCommand(
		&cobra.Command{Use: "up", Short: "Build the lab (idempotent), with progress", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				l, err := open()
				if err != nil {
					return err
				}
				return l.Up(ctx)
			}},
		&cobra.Command{Use: "down", Short: "Remove everything the lab made", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				l, err := open()
				if err != nil {
					return err
				}
				return l.Down()
			}},
		failCmd(open),
		&cobra.Command{Use: "heal LINK", Short: "Restore a link cut by fail (either mode)", Args: cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, a []string) error {
				l, err := open()
				if err != nil {
					return err
				}
				return l.Heal(a[0])
			}},
		&cobra.Command{Use: "matrix", Short: "Ping every pod from every pod and print the matrix with each pair's path", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				l, err := open()
				if err != nil {
					return err
				}
				cells, err := l.Matrix(ctx)
				if err != nil {
					return err
				}
				PrintMatrix(os.Stdout, cells, isTerminal(os.Stdout))
				if paths, err := l.Picture(ctx, outDir); err == nil {
					fmt.Println("topology picture:", strings.Join(paths, " "))
				} else {
					fmt.Println("topology picture not written:", err)
				}
				for _, c := range cells {
					if !c.OK() {
						return fmt.Errorf("some pairs do not reach")
					}
				}
				return nil
			}},
		&cobra.Command{Use: "status", Short: "Show every agent's datapath and per-peer paths", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				l, err := open()
				if err != nil {
					return err
				}
				return l.Status(ctx, os.Stdout)
			}},
		&cobra.Command{Use: "kubeconfig", Short: "Print the lab's admin kubeconfig", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				l, err := open()
				if err != nil {
					return err
				}
				fmt.Print(l.Kubeconfig())
				return nil
			}},
	)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		return 1
	}
	return 0
}

// defaultSpec finds tests/lab/lab.yaml next to this source file's package
// when run from the repo.
func defaultSpec() string {
	if _, f, _, ok := runtime.Caller(0); ok {
		p := filepath.Join(filepath.Dir(f), "lab.yaml")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "tests/lab/lab.yaml"
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// failCmd is `fail LINK [--silent]`.
func failCmd(open func() (*Lab, error)) *cobra.Command {
	var silent bool
	c := &cobra.Command{Use: "fail LINK", Short: "Cut a link of the lab (e.g. leased-line)",
		Long: `fail sets both ends of the link down: carrier is lost and the routers' BGP
withdraws at once. With --silent every packet on the link is dropped by
nftables while carrier stays up, as a provider fault or a wrong ACL does:
BGP notices only when its hold timer expires. heal undoes either.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, a []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			if silent {
				return l.FailSilent(a[0])
			}
			return l.Fail(a[0])
		}}
	c.Flags().BoolVar(&silent, "silent", false, "drop every packet while carrier stays up (BGP holds until its hold time)")
	return c
}

// Package render shows a topology plan to people: a text table, a Graphviz
// DOT graph (nodes coloured by datapath, edges by path, failed native links
// dashed, pools as clusters) and SVG through the `dot` program when it is
// installed.
package render

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/strata-net/strata/topology"
)

// MaxPairs is the cluster size above which pairs are summarised rather than
// listed (the pair list grows with nodes²).
const MaxPairs = 200 * 199

// DatapathColors and PathColors are the graph's palette.
var (
	DatapathColors = map[topology.Datapath]string{
		topology.DatapathENIMultiIP: "#ff9f40", topology.DatapathENIExclusive: "#ffcd56",
		topology.DatapathBGPUnderlay: "#4bc0c0", topology.DatapathVXLANOverlay: "#9966ff",
	}
	PathColors = map[topology.Path]string{
		topology.PathNative: "#2e7d32", topology.PathVXLAN: "#1565c0", topology.PathUnreachable: "#c62828", topology.PathWAN: "#ef6c00",
	}
)

// Table writes nodes (role and datapath) and pairs (path and reason).
func Table(w io.Writer, p *topology.Plan) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPOOL\tLOCATION\tDATAPATH\tALIVE\tWHY")
	for _, n := range p.Nodes() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\n", n.Name, dash(n.Pool), dash(string(n.Location)), n.Datapath, n.Alive, n.Reason)
	}
	fmt.Fprintln(tw)
	n := p.Len()
	if n*(n-1) > MaxPairs {
		c := p.Counts()
		fmt.Fprintf(tw, "%d nodes: %d ordered pairs (too many to list)\n", n, n*(n-1))
		for _, path := range topology.Paths {
			fmt.Fprintf(tw, "  %s\t%d\n", path, c[path])
		}
		return tw.Flush()
	}
	fmt.Fprintln(tw, "FROM\tTO\tPATH\tREASON")
	p.Pairs(func(pp topology.PairPath) bool {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", pp.From, pp.To, pp.Path, pp.Reason)
		return true
	})
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// DOT renders the plan as an undirected Graphviz graph. A pair whose two
// directions differ is drawn as two arrows.
func DOT(p *topology.Plan) ([]byte, error) {
	n := p.Len()
	if n*(n-1) > MaxPairs {
		return nil, fmt.Errorf("plan has %d nodes: a graph of %d pairs is unreadable; render a smaller facts file", n, n*(n-1))
	}
	var b bytes.Buffer
	b.WriteString("digraph strata {\n  graph [rankdir=LR, fontname=\"Helvetica\", label=\"Strata topology\", labelloc=t];\n")
	b.WriteString("  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=9, dir=none];\n")
	byPool := map[string][]topology.NodePlan{}
	for _, np := range p.Nodes() {
		byPool[np.Pool] = append(byPool[np.Pool], np)
	}
	pools := make([]string, 0, len(byPool))
	for pool := range byPool {
		pools = append(pools, pool)
	}
	sort.Strings(pools)
	for i, pool := range pools {
		fmt.Fprintf(&b, "  subgraph cluster_%d {\n    label=%s; style=dashed;\n", i, quote("pool "+dash(pool)))
		for _, np := range byPool[pool] {
			label := fmt.Sprintf("%s\n%s", np.Name, np.Datapath)
			style := ""
			if !np.Alive {
				style = ", style=\"rounded,filled,dotted\""
			}
			fmt.Fprintf(&b, "    %s [label=%s, fillcolor=%s, tooltip=%s%s];\n", quote(np.Name), quote(label), quote(DatapathColors[np.Datapath]), quote(np.Reason), style)
		}
		b.WriteString("  }\n")
	}
	names := make([]string, 0, n)
	for _, np := range p.Nodes() {
		names = append(names, np.Name)
	}
	for i, a := range names {
		for _, c := range names[i+1:] {
			ab, _ := p.Pair(a, c)
			ba, _ := p.Pair(c, a)
			if ab.Path == ba.Path && ab.NativeFailed == ba.NativeFailed && ab.Relay == ba.Relay {
				edge(&b, ab, "none")
			} else {
				edge(&b, ab, "forward")
				edge(&b, ba, "forward")
			}
		}
	}
	b.WriteString("  subgraph cluster_legend {\n    label=\"legend\"; style=solid;\n")
	for _, dp := range []topology.Datapath{topology.DatapathENIMultiIP, topology.DatapathENIExclusive, topology.DatapathBGPUnderlay, topology.DatapathVXLANOverlay} {
		fmt.Fprintf(&b, "    %s [label=%s, fillcolor=%s, shape=box];\n", quote("legend-"+string(dp)), quote(string(dp)), quote(DatapathColors[dp]))
	}
	b.WriteString("  }\n}\n")
	return b.Bytes(), nil
}

func edge(b *bytes.Buffer, pi topology.PairInfo, dir string) {
	style, label := "solid", string(pi.Path)
	if pi.NativeFailed {
		style = "dashed"
	}
	if pi.Relay != "" {
		label += " via " + pi.Relay
	}
	fmt.Fprintf(b, "  %s -> %s [color=%s, fontcolor=%s, label=%s, style=%s, dir=%s, tooltip=%s];\n",
		quote(pi.From), quote(pi.To), quote(PathColors[pi.Path]), quote(PathColors[pi.Path]), quote(label), style, dir, quote(pi.Reason))
}

// ErrNoDot means Graphviz is not installed.
var ErrNoDot = errors.New("graphviz `dot` not found on PATH (Debian: apt-get install graphviz); only the DOT file was written")

// Image converts DOT to format ("svg" or "png") with the `dot` program.
func Image(ctx context.Context, dot []byte, format string) ([]byte, error) {
	if format != "svg" && format != "png" {
		return nil, fmt.Errorf("image format %q: want svg or png", format)
	}
	bin, err := exec.LookPath("dot")
	if err != nil {
		return nil, ErrNoDot
	}
	cmd := exec.CommandContext(ctx, bin, "-T"+format)
	cmd.Stdin = bytes.NewReader(dot)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("dot -T%s: %w: %s", format, err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// WriteFiles writes base.dot and, when dot is installed, base.<format>. It
// returns the files written; a missing dot gives ErrNoDot after the DOT file.
func WriteFiles(ctx context.Context, p *topology.Plan, base, format string) ([]string, error) {
	dot, err := DOT(p)
	if err != nil {
		return nil, err
	}
	dotPath := base + ".dot"
	if err := os.WriteFile(dotPath, dot, 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", dotPath, err)
	}
	files := []string{dotPath}
	img, err := Image(ctx, dot, format)
	if err != nil {
		return files, err
	}
	imgPath := base + "." + format
	if err := os.WriteFile(imgPath, img, 0o644); err != nil {
		return files, fmt.Errorf("write %s: %w", imgPath, err)
	}
	return append(files, imgPath), nil
}

// CheckSVG reports whether b is well-formed XML whose root is <svg>.
func CheckSVG(b []byte) error {
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.Strict = true
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("SVG is not well-formed XML: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		return fmt.Errorf("SVG root element is %q, want svg", root)
	}
	return nil
}

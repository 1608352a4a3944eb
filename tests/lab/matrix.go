package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/strata-net/strata/topology/render"
)

// httpGet fetches a URL on the management network (through ctl).
func (l *Lab) httpGet(ctx context.Context, url string) ([]byte, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: l.cp.dial}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// Cell is one pod pair of the matrix.
type Cell struct {
	From, To string // pod names node/pod-N
	Path     string // native, vxlan, wan, unreachable, local
	Reason   string
	Loss     int // percent
	Err      string
}

// OK reports whether the pair reaches.
func (c Cell) OK() bool { return c.Loss == 0 && c.Err == "" }

// Matrix pings from every pod to every other pod, in parallel, and labels
// each pair with the path its nodes' plan gives.
func (l *Lab) Matrix(ctx context.Context) ([]Cell, error) {
	pods, err := l.pods()
	if err != nil {
		return nil, err
	}
	status := map[string]agentStatus{}
	for _, n := range l.spec.Nodes {
		st, err := l.agentStatus(ctx, n.Name)
		if err != nil {
			st = agentStatus{Node: n.Name}
		}
		status[n.Name] = st
	}
	var cells []Cell
	var mu sync.Mutex
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, a := range pods {
		for _, b := range pods {
			if a == b {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				path, reason := status[a.Node].pathTo(b.Node)
				c := Cell{From: a.Node + "/" + a.Name, To: b.Node + "/" + b.Name, Path: path, Reason: reason}
				loss, err := l.ping(ctx, a, b.IP, 3, 200*time.Millisecond)
				c.Loss = loss
				if err != nil {
					c.Err = err.Error()
				}
				mu.Lock()
				cells = append(cells, c)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	sort.Slice(cells, func(i, j int) bool {
		if cells[i].From != cells[j].From {
			return cells[i].From < cells[j].From
		}
		return cells[i].To < cells[j].To
	})
	return cells, nil
}

// PrintMatrix writes the matrix as a coloured grid: rows are sources,
// columns destinations; N native, V vxlan, W wan, L same node; green reaches, red
// does not.
func PrintMatrix(w io.Writer, cells []Cell, color bool) {
	var names []string
	seen := map[string]bool{}
	for _, c := range cells {
		for _, n := range []string{c.From, c.To} {
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	sort.Strings(names)
	by := map[[2]string]Cell{}
	for _, c := range cells {
		by[[2]string{c.From, c.To}] = c
	}
	paint := func(s string, ok bool) string {
		if !color {
			return s
		}
		if ok {
			return "\033[32m" + s + "\033[0m"
		}
		return "\033[31m" + s + "\033[0m"
	}
	fmt.Fprintf(w, "%-16s", "from \\ to")
	for i := range names {
		fmt.Fprintf(w, " %3d", i+1)
	}
	fmt.Fprintln(w)
	fail := 0
	for i, a := range names {
		fmt.Fprintf(w, "%2d %-13s", i+1, a)
		for _, b := range names {
			if a == b {
				fmt.Fprint(w, "   ·")
				continue
			}
			c := by[[2]string{a, b}]
			sym := map[string]string{"native": "N", "vxlan": "V", "wan": "W", "local": "L", "unreachable": "U"}[c.Path]
			if sym == "" {
				sym = "?"
			}
			if !c.OK() {
				fail++
				sym = strings.ToLower(sym) + "✗"
			}
			fmt.Fprintf(w, " %3s", paint(sym, c.OK()))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\nN native  V vxlan  W wan  L same node  U unreachable; ✗ marks loss. %d of %d pairs reach.\n", len(cells)-fail, len(cells))
	for _, c := range cells {
		if !c.OK() {
			fmt.Fprintf(w, "  %s → %s (%s): %d%% loss %s\n", c.From, c.To, c.Path, c.Loss, c.Err)
		}
	}
}

// Picture writes the topology as DOT and SVG (when graphviz is installed)
// into dir and returns the paths. The plan comes from the
// first node's agent; every agent sees every pair.
func (l *Lab) Picture(ctx context.Context, dir string) ([]string, error) {
	if len(l.spec.Nodes) == 0 {
		return nil, nil
	}
	dot, err := l.httpGet(ctx, "http://"+net.JoinHostPort(l.spec.MgmtAddr(1).String(), "9253")+"/plan.dot")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	base := filepath.Join(dir, "topology")
	paths := []string{base + ".dot"}
	if err := os.WriteFile(base+".dot", dot, 0o644); err != nil {
		return nil, err
	}
	svg, err := render.Image(ctx, dot, "svg")
	if err != nil {
		return paths, nil // graphviz missing: DOT only
	}
	if err := os.WriteFile(base+".svg", svg, 0o644); err != nil {
		return paths, err
	}
	return append(paths, base+".svg"), nil
}

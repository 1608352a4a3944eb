// Package bench is the runner behind `make bench`. Each area (topology, vxlan,
// bgp, eni, cni, lab, bpf) registers its measurements from its own file in this
// package; the runner measures each target beside its baseline in the same
// run and writes the JSON array described in ../shared/BENCH.md.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Result is one entry of the benchmark JSON.
type Result struct {
	ID            string   `json:"id"`
	Value         float64  `json:"value"`
	Unit          string   `json:"unit"`
	Baseline      string   `json:"baseline,omitempty"`
	BaselineValue *float64 `json:"baseline_value,omitempty"`
	Target        string   `json:"target"`
	Pass          bool     `json:"pass"`
	Detail        string   `json:"detail,omitempty"`
}

// Area is a group of measurements that share setup (e.g. one lab).
type Area struct {
	Name string // id prefix, e.g. "vxlan"
	// IDs, when set, are the ids the area measures: ONLY=<id prefix> then
	// skips an area that measures none of them (the two lab areas each
	// bring up their own lab for minutes).
	IDs []string
	Run func(ctx context.Context, log io.Writer) ([]Result, error)
}

// selected reports whether ONLY=only asks for area a.
func (a Area) selected(only string) bool {
	if only == "" || strings.HasPrefix(a.Name, only) {
		return true
	}
	if !strings.HasPrefix(only, a.Name) {
		return false
	}
	if len(a.IDs) == 0 {
		return true
	}
	for _, id := range a.IDs {
		if strings.HasPrefix(id, only) {
			return true
		}
	}
	return false
}

var areas []Area

// Register adds an area; call it from an init function in the area's file.
func Register(a Area) { areas = append(areas, a) }

// Areas lists registered areas in name order.
func Areas() []Area {
	out := append([]Area(nil), areas...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// New builds a Result and sets Pass from target ("< 100", ">= 1.0", "== 0",
// or "report", which always passes).
func New(id string, value float64, unit, target, detail string) Result {
	return Result{ID: id, Value: value, Unit: unit, Target: target, Pass: Meets(value, target), Detail: detail}
}

// WithBaseline records the baseline a ratio was taken against.
func (r Result) WithBaseline(name string, value float64) Result {
	r.Baseline = name
	r.BaselineValue = &value
	return r
}

// Meets reports whether value satisfies target.
func Meets(value float64, target string) bool {
	t := strings.TrimSpace(target)
	if t == "report" {
		return true
	}
	for _, op := range []string{"<=", ">=", "==", "<", ">"} {
		if !strings.HasPrefix(t, op) {
			continue
		}
		want, err := strconv.ParseFloat(strings.TrimSpace(t[len(op):]), 64)
		if err != nil {
			return false
		}
		switch op {
		case "<=":
			return value <= want
		case ">=":
			return value >= want
		case "==":
			return value == want
		case "<":
			return value < want
		case ">":
			return value > want
		}
	}
	return false
}

// Run runs every area whose name starts with only (all when empty), or
// that measures an id starting with only, prints a table to w and returns
// the results (those whose id starts with only). An area that fails is reported and the
// others still run.
func Run(ctx context.Context, only string, w io.Writer) ([]Result, error) {
	var all []Result
	var failed []string
	for _, a := range Areas() {
		if !a.selected(only) {
			continue
		}
		fmt.Fprintf(w, "==> bench %s\n", a.Name)
		rs, err := a.Run(ctx, w)
		if err != nil {
			fmt.Fprintf(w, "    area %s failed: %v\n", a.Name, err)
			failed = append(failed, a.Name)
		}
		for _, r := range rs {
			if strings.HasPrefix(r.ID, only) || (len(a.IDs) == 0 && strings.HasPrefix(only, a.Name)) {
				all = append(all, r)
			}
		}
	}
	PrintTable(w, all)
	if len(failed) > 0 {
		return all, fmt.Errorf("bench areas failed: %s", strings.Join(failed, ", "))
	}
	return all, nil
}

// PrintTable writes a readable table of results.
func PrintTable(w io.Writer, rs []Result) {
	fmt.Fprintf(w, "\n%-40s %12s %-6s %-10s %12s  %-4s  %s\n", "id", "value", "unit", "target", "baseline", "pass", "detail")
	for _, r := range rs {
		base := "-"
		if r.BaselineValue != nil {
			base = strconv.FormatFloat(*r.BaselineValue, 'g', 4, 64)
		}
		pass := "ok"
		if !r.Pass {
			pass = "FAIL"
		}
		fmt.Fprintf(w, "%-40s %12.4g %-6s %-10s %12s  %-4s  %s\n", r.ID, r.Value, r.Unit, r.Target, base, pass, r.Detail)
	}
}

// WriteJSON writes results to path as a JSON array, creating directories.
func WriteJSON(path string, rs []Result) error {
	if rs == nil {
		rs = []Result{}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

//go:build privileged

package agent

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-net/strata/cni/plugin"
	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/nsutil"
	itestutil "github.com/strata-net/strata/internal/testutil"
)

// TestPrivilegedMetadataFilterRepairs: the agent writes the node's metadata
// table, and puts it back after someone deletes it by hand, reporting
// enforcing in the metric and the status line.
func TestPrivilegedMetadataFilterRepairs(t *testing.T) {
	itestutil.RequireRoot(t)
	n, err := nsutil.Create(nsutil.OwnedName("mdrep"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(n.Name) })
	reg := prometheus.NewRegistry()
	f := newMetadataFilter(slog.Default(), reg)
	gauge := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "strata_pod_metadata_filter_enforcing" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	check := func(when string) {
		t.Helper()
		if err := n.Do(func() error { _, err := plugin.MetadataFilterOK(); return err }); err != nil {
			t.Errorf("%s: table not in place: %v", when, err)
		}
		if got := gauge(); got != 1 || f.state() != "enforcing" {
			t.Errorf("%s: enforcing gauge %v, state %q", when, got, f.state())
		}
	}
	if err := n.Do(func() error { f.sync(); return nil }); err != nil {
		t.Fatal(err)
	}
	check("after the first sync")
	itestutil.Run(t, n.Exec("nft", "delete", "table", "inet", wire.MetadataTable)...)
	if err := n.Do(func() error { _, err := plugin.MetadataFilterOK(); return err }); err == nil {
		t.Fatal("the table is still there after nft delete")
	}
	if err := n.Do(func() error { f.sync(); return nil }); err != nil {
		t.Fatal(err)
	}
	check("after the repair")
}

package agent

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
	"github.com/strata-net/strata/nodepool"
	"github.com/strata-net/strata/topology"
)

// TestApplyPoolOffline: with the API server away, the pool cached at the
// last start still fills the labels and the VXLAN settings, by the
// documented precedence (annotation > flag > pool > default).
func TestApplyPoolOffline(t *testing.T) {
	pool := &v1alpha1.NodePoolSpec{Location: "ens", Interconnect: "internet", VXLAN: &v1alpha1.VXLAN{VNI: 100, Port: 4790, MTU: 1400}, BGP: &v1alpha1.PoolBGP{LocalASN: 65011}}
	for _, c := range []struct {
		name      string
		ann       map[string]string
		vni       uint32
		port      uint16
		wantVNI   uint32
		wantPort  uint16
		wantLocal uint32
	}{
		{"pool", nil, 0, 0, 100, 4790, 65011},
		{"flag over pool", nil, 7, 0, 7, 4790, 65011},
		{"annotation over flag", map[string]string{nodepool.AnnotationVXLANVNI: "9", nodepool.AnnotationLocalASN: "65100"}, 7, 0, 9, 4790, 65100},
	} {
		a := &Agent{cfg: Config{NodeName: "edge-b1", StateDir: t.TempDir(), VNI: c.vni, VXLANPort: c.port}, log: slog.Default(), reg: prometheus.NewRegistry()}
		n := nodeInfo{Labels: map[string]string{topology.LabelPool: "site-b"}, Annotations: c.ann, PodCIDR: "10.244.16.0/24", Pool: pool, cached: true}
		if err := a.applyPool(context.Background(), &n); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if a.cfg.VNI != c.wantVNI || a.cfg.VXLANPort != c.wantPort {
			t.Errorf("%s: VNI %d port %d, want %d %d", c.name, a.cfg.VNI, a.cfg.VXLANPort, c.wantVNI, c.wantPort)
		}
		if asn := a.profile.Resolve(nodepool.Settings{}).LocalASN; asn != c.wantLocal {
			t.Errorf("%s: local ASN %d, want %d", c.name, asn, c.wantLocal)
		}
		if a.overlayMTU != 1400 || a.poolPodMTU(1450) != 1400 || a.poolPodMTU(1300) != 1300 {
			t.Errorf("%s: overlay MTU %d: pods must fit the pool's vxlan.mtu", c.name, a.overlayMTU)
		}
		if n.Labels[topology.LabelLocation] != "ens" || n.Labels[topology.LabelInterconnect] != "internet" {
			t.Errorf("%s: labels %v, want location and interconnect from the pool", c.name, n.Labels)
		}
	}
	a := &Agent{cfg: Config{NodeName: "edge-b1", StateDir: t.TempDir()}, log: slog.Default(), reg: prometheus.NewRegistry()}
	n := nodeInfo{Labels: map[string]string{topology.LabelPool: "site-b", topology.LabelLocation: "idc"}, Pool: pool, cached: true}
	var mm *nodepool.MismatchError
	if err := a.applyPool(context.Background(), &n); !errors.As(err, &mm) {
		t.Errorf("label idc in an ens pool: %v, want the node refused", err)
	}
}

// TestOneSweeperPerDeletion: of the pool's remaining nodes, exactly the one
// with the smallest name sweeps a deleted Node's claim.
func TestOneSweeperPerDeletion(t *testing.T) {
	node := func(name, pool string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{topology.LabelPool: pool}}}
	}
	gone := node("edge-a", "p")
	live := []any{node("edge-b", "p"), node("edge-c", "p"), node("a-other", "q")}
	var sweepers []string
	for _, self := range []string{"edge-b", "edge-c"} {
		if sweeper(self, "p", gone, live) {
			sweepers = append(sweepers, self)
		}
	}
	if len(sweepers) != 1 || sweepers[0] != "edge-b" {
		t.Errorf("sweepers %v, want [edge-b]", sweepers)
	}
	if sweeper("edge-b", "p", node("x", "q"), live) {
		t.Error("a deletion in another pool is not this pool's to sweep")
	}
}

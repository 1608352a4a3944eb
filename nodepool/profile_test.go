package nodepool

import (
	"errors"
	"strings"
	"testing"

	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
	"github.com/strata-net/strata/topology"
)

// TestPrecedence is the documented order: node annotation, then a
// non-zero agent flag, then the NodePool, then the built-in default.
func TestPrecedence(t *testing.T) {
	pool := &v1alpha1.NodePoolSpec{Location: "idc", VXLAN: &v1alpha1.VXLAN{VNI: 100, Port: 4790}, BGP: &v1alpha1.PoolBGP{LocalASN: 65011}}
	ann := map[string]string{AnnotationVXLANVNI: "200", AnnotationVXLANPort: "4791", AnnotationLocalASN: "65099"}
	flags := Settings{VNI: 300, Port: 4792, LocalASN: 65300}
	for _, c := range []struct {
		name  string
		ann   map[string]string
		flags Settings
		pool  *v1alpha1.NodePoolSpec
		want  Settings
	}{
		{"annotation beats flag and pool", ann, flags, pool, Settings{200, 4791, 65099}},
		{"flag beats pool", nil, flags, pool, Settings{300, 4792, 65300}},
		{"pool beats default", nil, Settings{}, pool, Settings{100, 4790, 65011}},
		{"default", nil, Settings{}, nil, Settings{DefaultVNI, DefaultVXLANPort, DefaultLocalASN}},
		{"pool without vxlan or bgp", nil, Settings{}, &v1alpha1.NodePoolSpec{Location: "idc"}, Settings{1, 4789, 64512}},
		{"mixed", map[string]string{AnnotationVXLANPort: "5000"}, Settings{VNI: 7}, pool, Settings{7, 5000, 65011}},
	} {
		p, err := ProfileOf(c.ann, c.pool)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := p.Resolve(c.flags); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestProfileRefusesBadAnnotations(t *testing.T) {
	for k, v := range map[string]string{AnnotationVXLANVNI: "16777216", AnnotationVXLANPort: "0", AnnotationLocalASN: "4294967295", "strata.io/vxlan-vni ": ""} {
		if k == "strata.io/vxlan-vni " {
			k, v = AnnotationVXLANVNI, "one"
		}
		_, err := ProfileOf(map[string]string{k: v}, nil)
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: error %v, want one naming the annotation", k, v, err)
		}
	}
}

func TestEffectiveLabels(t *testing.T) {
	pool := &v1alpha1.NodePoolSpec{Location: "ens", Interconnect: "internet"}
	got, err := EffectiveLabels("n1", map[string]string{topology.LabelPool: "ens-hz"}, "ens-hz", pool)
	if err != nil || got[topology.LabelLocation] != "ens" || got[topology.LabelInterconnect] != "internet" || got[topology.LabelPool] != "ens-hz" {
		t.Fatalf("labels from the pool: %v, %v", got, err)
	}
	same := map[string]string{topology.LabelLocation: "ens", topology.LabelInterconnect: "internet"}
	if _, err := EffectiveLabels("n1", same, "ens-hz", pool); err != nil {
		t.Errorf("agreeing labels refused: %v", err)
	}
	_, err = EffectiveLabels("n1", map[string]string{topology.LabelInterconnect: "leased-line"}, "ens-hz", pool)
	var mm *MismatchError
	if !errors.As(err, &mm) || mm.Label != topology.LabelInterconnect || !strings.Contains(err.Error(), "refused") {
		t.Errorf("disagreeing interconnect: %v", err)
	}
	cloud := &v1alpha1.NodePoolSpec{Location: "cloud"}
	if got, err := EffectiveLabels("c1", nil, "vpc", cloud); err != nil || got[topology.LabelInterconnect] != "" || got[topology.LabelLocation] != "cloud" {
		t.Errorf("cloud pool: %v, %v", got, err)
	}
	if got, err := EffectiveLabels("x", map[string]string{"a": "b"}, "", nil); err != nil || len(got) != 1 {
		t.Errorf("no pool: %v, %v", got, err)
	}
}

package bench

import "testing"

func TestMeets(t *testing.T) {
	cases := []struct {
		v      float64
		target string
		want   bool
	}{
		{0.8, "<= 1.0", true}, {1.0, "<= 1.0", true}, {1.1, "<= 1.0", false},
		{99, "< 100", true}, {100, "< 100", false}, {1.2, ">= 1.1", true},
		{0, "== 0", true}, {1, "== 0", false}, {42, "report", true}, {1, "bogus", false},
	}
	for _, c := range cases {
		if got := Meets(c.v, c.target); got != c.want {
			t.Errorf("Meets(%v, %q) = %v, want %v", c.v, c.target, got, c.want)
		}
	}
}

func TestAreaSelected(t *testing.T) {
	lab := Area{Name: "lab", IDs: []string{"lab.iperf_native_ratio_vs_veth", "lab.heal_lost_probes"}}
	inet := Area{Name: "lab", IDs: []string{"lab.wan_throughput_ratio_vs_wireguard"}}
	cni := Area{Name: "cni"}
	cases := []struct {
		a    Area
		only string
		want bool
	}{
		{lab, "", true}, {lab, "lab", true}, {lab, "la", true}, {inet, "lab", true},
		{lab, "lab.iperf", true}, {inet, "lab.iperf", false},
		{lab, "lab.wan", false}, {inet, "lab.wan_throughput_ratio_vs_wireguard", true},
		{cni, "cni.add", true}, {cni, "lab", false}, {lab, "cni", false},
	}
	for _, c := range cases {
		if got := c.a.selected(c.only); got != c.want {
			t.Errorf("area %s %v: selected(%q) = %v, want %v", c.a.Name, c.a.IDs, c.only, got, c.want)
		}
	}
}

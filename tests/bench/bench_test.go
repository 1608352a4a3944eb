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

package agent

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/strata-net/strata/bpf"
	"github.com/strata-net/strata/internal/role"
)

func TestCollapsePrefixesDropsCoveredOnes(t *testing.T) {
	p := netip.MustParsePrefix
	got := collapsePrefixes([]netip.Prefix{p("10.0.64.7/32"), p("10.244.1.0/24"), p("10.0.64.0/20"), p("10.244.1.9/32"), p("10.245.0.1/24"), {}})
	want := []netip.Prefix{p("10.0.64.0/20"), p("10.244.1.0/24"), p("10.245.0.0/24")}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestFastpathOnWithoutSupportRefusesToStart(t *testing.T) {
	noKernel := func() error { return errors.New("kernel lacks helper bpf_redirect_peer") }
	_, err := newPodFastpath(bpf.Config{Setting: bpf.SettingOn}, noKernel, nil, slog.Default())
	if err == nil || !strings.Contains(err.Error(), "--bpf-fastpath=on") || !strings.Contains(err.Error(), "bpf_redirect_peer") {
		t.Fatalf("want a refusal naming the flag and the missing feature, got %v", err)
	}
	f, err := newPodFastpath(bpf.Config{Setting: bpf.SettingAuto}, noKernel, nil, slog.Default())
	if err != nil || f.active() || !strings.Contains(f.decision.Reason, "kernel lacks support") {
		t.Fatalf("auto without support must run on kernel routing: %v, %+v", err, f)
	}
	probed := false
	f, err = newPodFastpath(bpf.Config{Setting: bpf.SettingOff}, func() error { probed = true; return nil }, nil, slog.Default())
	if err != nil || f.active() || probed {
		t.Fatalf("off must neither probe nor load: err %v, probed %v", err, probed)
	}
	// Inactive, the wiring changes nothing.
	r := role.Role(nil)
	if f.wrap(r) != r || f.setEnabled(true) == nil {
		t.Fatal("an inactive fast path must leave the role alone and refuse the switch")
	}
	if st := f.status(); st.Active || st.Setting != "off" || !strings.Contains(forwardingReason(st), "switched off by configuration") {
		t.Fatalf("status %+v", st)
	}
}

// forwardingReason is what `strata status` says about the fast path.
func forwardingReason(st FastPathStatus) string {
	_, why := st.Forwarding()
	return why
}

package peersync

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/strata-net/strata/bgp"
	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
)

func TestJudge(t *testing.T) {
	kube := fake.NewSimpleClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bgp", Namespace: "strata-system", Labels: map[string]string{v1alpha1.BGPPasswordLabel: "true"}},
		Data:       map[string][]byte{"password": []byte("pw"), "other": []byte("pw2")},
	}, &corev1.Secret{
		// The gossip key lives in the same namespace: a BGPPeer naming it
		// must not turn it into a password sent to a router.
		ObjectMeta: metav1.ObjectMeta{Name: "strata-gossip", Namespace: "strata-system"},
		Data:       map[string][]byte{"password": []byte("gossip-key")},
	}, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "half", Namespace: "strata-system", Labels: map[string]string{v1alpha1.BGPPasswordLabel: "yes"}},
		Data:       map[string][]byte{"password": []byte("pw")},
	})
	s := &Syncer{cfg: Config{Kube: kube, NodeName: "n1", SecretNamespace: "strata-system",
		Reachable: func(a netip.Addr) error {
			if netip.MustParsePrefix("203.0.113.0/24").Contains(a) {
				return errors.New("no route")
			}
			return nil
		}}}
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		spec   v1alpha1.BGPPeerSpec
		reason string
		msg    string
	}{
		{"valid", v1alpha1.BGPPeerSpec{PeerAddress: "192.168.10.1", PeerASN: 65010, HoldTimeSeconds: 9,
			PasswordSecretRef: &v1alpha1.SecretKeyRef{Name: "bgp"}, GracefulRestart: &v1alpha1.GracefulRestart{Enabled: true}, EBGPMultihop: 3}, "", ""},
		{"asn0", v1alpha1.BGPPeerSpec{PeerAddress: "192.168.10.1", PeerASN: 0}, v1alpha1.ReasonInvalidSpec, "ASN"},
		{"hold2", v1alpha1.BGPPeerSpec{PeerAddress: "192.168.10.1", PeerASN: 1, HoldTimeSeconds: 2}, v1alpha1.ReasonInvalidSpec, "HoldTime"},
		{"badaddr", v1alpha1.BGPPeerSpec{PeerAddress: "10.0.0.300", PeerASN: 1}, v1alpha1.ReasonInvalidSpec, "peerAddress"},
		{"nosecret", v1alpha1.BGPPeerSpec{PeerAddress: "192.168.10.1", PeerASN: 1, PasswordSecretRef: &v1alpha1.SecretKeyRef{Name: "absent"}}, v1alpha1.ReasonMissingSecret, "does not exist"},
		{"nokey", v1alpha1.BGPPeerSpec{PeerAddress: "192.168.10.1", PeerASN: 1, PasswordSecretRef: &v1alpha1.SecretKeyRef{Name: "bgp", Key: "nope"}}, v1alpha1.ReasonMissingSecret, "no key"},
		{"unlabelled", v1alpha1.BGPPeerSpec{PeerAddress: "192.168.10.1", PeerASN: 1, PasswordSecretRef: &v1alpha1.SecretKeyRef{Name: "strata-gossip"}},
			v1alpha1.ReasonSecretNotForBGP, "kubectl -n strata-system label secret strata-gossip strata.io/bgp-password=true"},
		{"label not true", v1alpha1.BGPPeerSpec{PeerAddress: "192.168.10.1", PeerASN: 1, PasswordSecretRef: &v1alpha1.SecretKeyRef{Name: "half"}},
			v1alpha1.ReasonSecretNotForBGP, "Secret strata-system/half"},
		{"far", v1alpha1.BGPPeerSpec{PeerAddress: "203.0.113.5", PeerASN: 1}, v1alpha1.ReasonUnreachable, "cannot reach"},
	} {
		v := s.judge(ctx, &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: c.name}, Spec: c.spec})
		if v.reason != c.reason || !strings.Contains(v.msg, c.msg) {
			t.Errorf("%s: reason %q msg %q, want %q containing %q", c.name, v.reason, v.msg, c.reason, c.msg)
		}
		if v.reason != "" && v.peer.Password != "" {
			t.Errorf("%s: refused peer still carries a password", c.name)
		}
		if c.name == "valid" {
			p := v.peer
			if p.Password != "pw" || p.HoldTime != 9*time.Second || !p.GracefulRestart || p.MultihopTTL != 3 {
				t.Errorf("valid peer %+v", p)
			}
		}
	}
}

func TestSelector(t *testing.T) {
	sel, err := selector(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Bogus"}}})
	if err == nil {
		t.Fatalf("bogus operator accepted: %v", sel)
	}
	all, _ := selector(nil)
	if !all.Empty() {
		t.Fatal("nil selector must select every node")
	}
}

// Out-of-range fields are refused and named, never wrapped into another
// value (a port of 70000 is not port 4464).
func TestPeerFromSpecRefusesOutOfRange(t *testing.T) {
	base := v1alpha1.BGPPeerSpec{PeerAddress: "192.168.10.1", PeerASN: 65010}
	for _, c := range []struct {
		field string
		mut   func(*v1alpha1.BGPPeerSpec)
	}{
		{"spec.peerPort", func(s *v1alpha1.BGPPeerSpec) { s.PeerPort = 70000 }},
		{"spec.peerPort", func(s *v1alpha1.BGPPeerSpec) { s.PeerPort = -1 }},
		{"HoldTime", func(s *v1alpha1.BGPPeerSpec) { s.HoldTimeSeconds = -3 }},
		{"KeepaliveTime", func(s *v1alpha1.BGPPeerSpec) { s.KeepaliveTimeSeconds = -1 }},
		{"KeepaliveTime", func(s *v1alpha1.BGPPeerSpec) { s.KeepaliveTimeSeconds = 120 }},
		{"ConnectRetry", func(s *v1alpha1.BGPPeerSpec) { s.ConnectRetrySeconds = -5 }},
		{"spec.ebgpMultihop", func(s *v1alpha1.BGPPeerSpec) { s.EBGPMultihop = 300 }},
		{"spec.ebgpMultihop", func(s *v1alpha1.BGPPeerSpec) { s.EBGPMultihop = -1 }},
		{"RestartTime", func(s *v1alpha1.BGPPeerSpec) {
			s.GracefulRestart = &v1alpha1.GracefulRestart{Enabled: true, RestartTimeSeconds: 5000}
		}},
		{"spec.peerAddress", func(s *v1alpha1.BGPPeerSpec) { s.PeerAddress = "router-1" }},
		{"spec.importPolicy.allow[1]", func(s *v1alpha1.BGPPeerSpec) {
			s.ImportPolicy = &v1alpha1.ImportPolicy{Allow: []string{"0.0.0.0/0", "lan"}}
		}},
		{"spec.importPolicy.allow[0] \"192.168.10.1/24\" has host bits set: write 192.168.10.0/24", func(s *v1alpha1.BGPPeerSpec) {
			s.ImportPolicy = &v1alpha1.ImportPolicy{Allow: []string{"192.168.10.1/24"}}
		}},
	} {
		sp := base
		c.mut(&sp)
		if _, err := PeerFromSpec(sp); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%+v: got %v, want an error naming %s", sp, err, c.field)
		}
	}
	p, err := PeerFromSpec(v1alpha1.BGPPeerSpec{PeerAddress: "::ffff:192.168.10.1", PeerASN: 65010, PeerPort: 1179, EBGPMultihop: 255, HoldTimeSeconds: 9, KeepaliveTimeSeconds: 3,
		ImportPolicy: &v1alpha1.ImportPolicy{Allow: []string{"192.168.10.0/24"}}, MaxPrefixes: 50})
	if err != nil || p.RemotePort != 1179 || p.MultihopTTL != 255 || p.Address != netip.MustParseAddr("192.168.10.1") || p.HoldTime != 9*time.Second ||
		len(p.Import.Allow) != 1 || p.Import.Allow[0] != netip.MustParsePrefix("192.168.10.0/24") || p.MaxPrefixes != 50 {
		t.Fatalf("valid spec: got %+v, %v", p, err)
	}
}

// Any spec a user can write either converts to settings the speaker accepts
// or is refused with an error; nothing panics or wraps.
func FuzzPeerFromSpec(f *testing.F) {
	for _, seed := range []string{
		`{"peerAddress":"192.168.10.1","peerASN":65010}`,
		`{"peerAddress":"fd00::1","peerASN":4200000000,"peerPort":179,"holdTimeSeconds":3,"keepaliveTimeSeconds":1,"ebgpMultihop":2}`,
		`{"peerAddress":"10.0.0.1","peerASN":0}`,
		`{"peerAddress":"10.0.0.1","peerASN":1,"peerPort":70000,"ebgpMultihop":-1}`,
		`{"peerAddress":"10.0.0.1","peerASN":1,"gracefulRestart":{"enabled":true,"restartTimeSeconds":4095}}`,
		`{"peerAddress":"10.0.0.1","peerASN":1,"maxPrefixes":50,"importPolicy":{"allow":["0.0.0.0/0","10.1.2.3/8","x"]}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var sp v1alpha1.BGPPeerSpec
		if json.Unmarshal(b, &sp) != nil {
			return
		}
		p, err := PeerFromSpec(sp)
		if err != nil {
			if !strings.Contains(err.Error(), "spec") {
				t.Fatalf("error %q does not name the spec field", err)
			}
			return
		}
		if verr := p.Validate(); verr != nil {
			t.Fatalf("accepted settings the speaker refuses: %v", verr)
		}
		if int32(p.RemotePort) != sp.PeerPort || (sp.EBGPMultihop > 1 && int32(p.MultihopTTL) != sp.EBGPMultihop) {
			t.Fatalf("spec %+v became %+v: a value was wrapped", sp, p)
		}
	})
}

func TestRejectedSummary(t *testing.T) {
	if s := rejectedSummary(bgp.PeerStatus{}); s != "" {
		t.Fatalf("nothing rejected: %q", s)
	}
	s := rejectedSummary(bgp.PeerStatus{Rejected: map[bgp.RejectReason]uint64{bgp.RejectDefaultRoute: 1, bgp.RejectUnderlay: 2}})
	if s != "import policy rejected 3 prefixes (default-route 1, underlay-subnet 2); see strata bgp peers on the node" {
		t.Fatalf("summary %q", s)
	}
}

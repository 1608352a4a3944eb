package peersync

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
)

func TestJudge(t *testing.T) {
	kube := fake.NewSimpleClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bgp", Namespace: "strata-system"},
		Data:       map[string][]byte{"password": []byte("pw"), "other": []byte("pw2")},
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
		{"far", v1alpha1.BGPPeerSpec{PeerAddress: "203.0.113.5", PeerASN: 1}, v1alpha1.ReasonUnreachable, "cannot reach"},
	} {
		v := s.judge(ctx, &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: c.name}, Spec: c.spec})
		if v.reason != c.reason || !strings.Contains(v.msg, c.msg) {
			t.Errorf("%s: reason %q msg %q, want %q containing %q", c.name, v.reason, v.msg, c.reason, c.msg)
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

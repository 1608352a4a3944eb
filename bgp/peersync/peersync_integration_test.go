//go:build integration

package peersync_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/strata-net/strata/bgp"
	"github.com/strata-net/strata/bgp/peersync"
	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
	"github.com/strata-net/strata/tests/harness/apiserver"
	"github.com/strata-net/strata/tests/harness/routerd"
)

var unreachable = netip.MustParsePrefix("203.0.113.0/24")

// TestIntegrationBGPPeerCRD drives a live speaker from BGPPeer objects on a
// real API server: create, update and delete change the speaker's peers
// without restarting it; invalid specs are refused by the schema or get a
// Valid=False condition and a Warning event.
func TestIntegrationBGPPeerCRD(t *testing.T) {
	env := apiserver.Start(t, apiserver.Options{CRDDirs: []string{"../../deploy/crds"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kube := env.Clientset
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-a1",
		Labels: map[string]string{"strata.io/location": "idc"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"strata-system"} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kube.CoreV1().Secrets("strata-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-idc",
		Labels: map[string]string{v1alpha1.BGPPasswordLabel: "true"}},
		Data: map[string][]byte{"password": []byte("s3cret")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// A live speaker without a listener: sessions stay in Active, which is
	// enough to see peers come and go on it.
	sp, err := bgp.New(bgp.Config{RouterID: netip.MustParseAddr("192.168.10.11"), ASN: 65011}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sp.Stop(context.Background(), bgp.StopCease)

	cachePath := filepath.Join(t.TempDir(), peersync.CacheFile)
	syncer, err := peersync.New(peersync.Config{
		Dynamic: dyn, Kube: kube, NodeName: "edge-a1", Speaker: sp, Resync: 2 * time.Second, CachePath: cachePath,
		Reachable: func(a netip.Addr) error {
			if unreachable.Contains(a) {
				return errors.New("no route")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- syncer.Run(ctx) }()
	defer func() { cancel(); <-done }()

	peers := dyn.Resource(v1alpha1.BGPPeersGVR)
	create := func(p *v1alpha1.BGPPeer) error {
		u, err := p.ToUnstructured()
		if err != nil {
			return err
		}
		_, err = peers.Create(ctx, u, metav1.CreateOptions{})
		return err
	}
	peerOf := func(addr string) func() (bgp.PeerConfig, bool) {
		return func() (bgp.PeerConfig, bool) {
			for _, p := range sp.PeerConfigs() {
				if p.Address.String() == addr {
					return p, true
				}
			}
			return bgp.PeerConfig{}, false
		}
	}
	idc := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "idc-a"}, Spec: v1alpha1.BGPPeerSpec{
		PeerAddress: "192.168.10.1", PeerASN: 65010, HoldTimeSeconds: 9,
		PasswordSecretRef: &v1alpha1.SecretKeyRef{Name: "bgp-idc"},
		GracefulRestart:   &v1alpha1.GracefulRestart{Enabled: true, RestartTimeSeconds: 120},
		NodeSelector:      &metav1.LabelSelector{MatchLabels: map[string]string{"strata.io/location": "idc"}},
	}}

	t.Run("create adds the peer with its Secret's password", func(t *testing.T) {
		if err := create(idc); err != nil {
			t.Fatal(err)
		}
		routerd.Eventually(t, 60*time.Second, "peer configured", func() error {
			p, ok := peerOf("192.168.10.1")()
			if !ok {
				return fmt.Errorf("speaker peers %v", sp.PeerConfigs())
			}
			if p.Password != "s3cret" || p.ASN != 65010 || p.HoldTime != 9*time.Second || !p.GracefulRestart {
				return fmt.Errorf("peer %+v", p)
			}
			// The node's cache holds the peer with its password, for a
			// restart while the API server is away.
			cached, _, err := peersync.LoadCache(cachePath)
			if err != nil {
				return err
			}
			if i := slices.IndexFunc(cached, func(c bgp.PeerConfig) bool { return c.Equal(p) }); i < 0 {
				return fmt.Errorf("cache %v lacks %+v", cached, p)
			}
			return nil
		})
		waitCondition(t, dyn, "idc-a", metav1.ConditionTrue, v1alpha1.ReasonAccepted)
	})
	t.Run("update changes the live peer", func(t *testing.T) {
		u, err := peers.Get(ctx, "idc-a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		obj, _ := v1alpha1.FromUnstructured(u)
		obj.Spec.PeerASN = 65099
		nu, _ := obj.ToUnstructured()
		if _, err := peers.Update(ctx, nu, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		routerd.Eventually(t, 60*time.Second, "peer ASN updated", func() error {
			if p, ok := peerOf("192.168.10.1")(); !ok || p.ASN != 65099 {
				return fmt.Errorf("peer %+v (present %v)", p, ok)
			}
			return nil
		})
	})
	t.Run("schema rejects invalid specs", func(t *testing.T) {
		for name, spec := range map[string]v1alpha1.BGPPeerSpec{
			"asn0":    {PeerAddress: "192.168.10.2", PeerASN: 0},
			"hold2":   {PeerAddress: "192.168.10.2", PeerASN: 65010, HoldTimeSeconds: 2},
			"badaddr": {PeerAddress: "192.168.10.300", PeerASN: 65010},
		} {
			err := create(&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec})
			if err == nil || !strings.Contains(err.Error(), "Invalid") {
				t.Errorf("%s: created or wrong error: %v", name, err)
			}
		}
	})
	t.Run("missing secret and unreachable address get conditions and events", func(t *testing.T) {
		if err := create(&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "nosecret"}, Spec: v1alpha1.BGPPeerSpec{
			PeerAddress: "192.168.10.3", PeerASN: 65010, PasswordSecretRef: &v1alpha1.SecretKeyRef{Name: "absent"}}}); err != nil {
			t.Fatal(err)
		}
		if err := create(&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "far"}, Spec: v1alpha1.BGPPeerSpec{
			PeerAddress: "203.0.113.7", PeerASN: 65010}}); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, dyn, "nosecret", metav1.ConditionFalse, v1alpha1.ReasonMissingSecret)
		waitCondition(t, dyn, "far", metav1.ConditionFalse, v1alpha1.ReasonUnreachable)
		for _, addr := range []string{"192.168.10.3", "203.0.113.7"} {
			if _, ok := peerOf(addr)(); ok {
				t.Errorf("invalid peer %s reached the speaker", addr)
			}
		}
		routerd.Eventually(t, 60*time.Second, "warning events", func() error {
			evs, err := kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			seen := map[string]bool{}
			for _, e := range evs.Items {
				if e.Type == corev1.EventTypeWarning {
					seen[e.InvolvedObject.Name+"/"+e.Reason] = true
				}
			}
			if !seen["nosecret/"+v1alpha1.ReasonMissingSecret] || !seen["far/"+v1alpha1.ReasonUnreachable] {
				return fmt.Errorf("events %v", seen)
			}
			return nil
		})
		// A Secret without the BGP password label is not read as one.
		sec, err := kube.CoreV1().Secrets("strata-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "absent"},
			Data: map[string][]byte{"password": []byte("x")}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		waitCondition(t, dyn, "nosecret", metav1.ConditionFalse, v1alpha1.ReasonSecretNotForBGP)
		if _, ok := peerOf("192.168.10.3")(); ok {
			t.Fatal("a peer naming an unlabelled Secret reached the speaker")
		}
		// Labelling it heals the peer on the next resync.
		sec.Labels = map[string]string{v1alpha1.BGPPasswordLabel: "true"}
		if _, err := kube.CoreV1().Secrets("strata-system").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, dyn, "nosecret", metav1.ConditionTrue, v1alpha1.ReasonAccepted)
	})
	t.Run("delete removes the peer", func(t *testing.T) {
		if err := peers.Delete(ctx, "idc-a", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		routerd.Eventually(t, 60*time.Second, "peer removed", func() error {
			if _, ok := peerOf("192.168.10.1")(); ok {
				return errors.New("still configured")
			}
			return nil
		})
	})
	t.Run("selector change drops the peer", func(t *testing.T) {
		n, err := kube.CoreV1().Nodes().Get(ctx, "edge-a1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Labels["strata.io/location"] = "cloud"
		if _, err := kube.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		sel := &metav1.LabelSelector{MatchLabels: map[string]string{"strata.io/location": "idc"}}
		if err := create(&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "idc-b"}, Spec: v1alpha1.BGPPeerSpec{
			PeerAddress: "192.168.10.9", PeerASN: 65010, NodeSelector: sel}}); err != nil {
			t.Fatal(err)
		}
		// Wait for a reconcile that has seen idc-b (nosecret is still there).
		routerd.Eventually(t, 60*time.Second, "unselected peer stays off", func() error {
			if _, ok := peerOf("192.168.10.3")(); !ok {
				return errors.New("nosecret peer not yet configured")
			}
			if _, ok := peerOf("192.168.10.9")(); ok {
				return errors.New("peer of another location configured")
			}
			return nil
		})
	})
}

func waitCondition(t *testing.T, dyn dynamic.Interface, name string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	routerd.Eventually(t, 60*time.Second, "BGPPeer "+name+" Valid="+string(status)+" "+reason, func() error {
		u, err := dyn.Resource(v1alpha1.BGPPeersGVR).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		obj, err := v1alpha1.FromUnstructured(u)
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(obj.Status.Conditions, v1alpha1.ConditionValid)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Errorf("conditions %+v", obj.Status.Conditions)
		}
		return nil
	})
}

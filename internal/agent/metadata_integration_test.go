//go:build integration

package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/tests/harness/apiserver"
)

// TestIntegrationMetadataPolicyReadsPod: with --pod-metadata-access=deny the
// agent reads the Pod from a real kube-apiserver at ADD and lets it reach
// the metadata service only with strata.io/metadata-access: allow; a pod it
// cannot find is denied; with allow, every pod reaches it; and once the API
// server is gone, the pod with the annotation is denied (safe) too.
func TestIntegrationMetadataPolicyReadsPod(t *testing.T) {
	env := apiserver.Start(t, apiserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mk := func(name string, ann map[string]string) {
		t.Helper()
		_, err := env.Clientset.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	mk("plain", nil)
	mk("opted", map[string]string{wire.MetadataAccessAnnotation: wire.MetadataAccessAllow})
	mk("typo", map[string]string{wire.MetadataAccessAnnotation: "yes"})

	deny := []netip.Prefix{wire.MetadataPrefix}
	p := &metadataPolicy{access: MetadataDeny, kube: env.Clientset, log: slog.Default()}
	for _, tc := range []struct {
		name string
		want []netip.Prefix
	}{{"plain", deny}, {"opted", nil}, {"typo", deny}, {"ghost", deny}} {
		if got := p.blocked(ctx, "default", tc.name); !slices.Equal(got, tc.want) {
			t.Errorf("deny: pod %s blocked %v, want %v", tc.name, got, tc.want)
		}
	}
	allow := &metadataPolicy{access: MetadataAllow, kube: env.Clientset, log: slog.Default()}
	if got := allow.blocked(ctx, "default", "plain"); got != nil {
		t.Errorf("allow: pod plain blocked %v, want none", got)
	}

	if err := env.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got := p.blocked(ctx, "default", "opted"); !slices.Equal(got, deny) {
		t.Errorf("API server down: pod opted blocked %v, want %v (deny when the annotation cannot be read)", got, deny)
	}
	if d := time.Since(start); d > podLookupTimeout+2*time.Second {
		t.Errorf("the lookup with the API server down took %s: the ADD waits for it", d)
	}
}

//go:build integration

package foundation

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/strata-net/strata/tests/harness/apiserver"
)

// A real kube-apiserver + etcd start; client-go creates a Node, patches its
// annotations, and a watch sees the change.
func TestIntegrationAPIServerNodeAnnotationWatch(t *testing.T) {
	env := apiserver.Start(t, apiserver.Options{})
	cs := env.Clientset
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	t.Logf("kube-apiserver %s", v.GitVersion)
	if v.GitVersion == "" || v.GitVersion == "v0.0.0-master+$Format:%H$" {
		t.Errorf("kube-apiserver reports version %q; the tools build must set the version ldflags", v.GitVersion)
	}

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-a1", Labels: map[string]string{"strata.io/location": "idc"}}}
	created, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node: %v", err)
	}
	w, err := cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{
		FieldSelector:   "metadata.name=edge-a1",
		ResourceVersion: created.ResourceVersion,
	})
	if err != nil {
		t.Fatalf("watch nodes: %v", err)
	}
	defer w.Stop()

	patch := []byte(`{"metadata":{"annotations":{"strata.io/underlay-ip":"192.168.10.11"}}}`)
	if _, err := cs.CoreV1().Nodes().Patch(ctx, "edge-a1", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch node: %v", err)
	}
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("watch closed before the patch was seen")
			}
			if ev.Type != watch.Modified {
				continue
			}
			n := ev.Object.(*corev1.Node)
			if got := n.Annotations["strata.io/underlay-ip"]; got == "192.168.10.11" {
				return
			}
		case <-ctx.Done():
			t.Fatal("the watch never delivered the annotation patch")
		}
	}
}

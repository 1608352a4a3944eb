package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
)

// installCRDs applies Strata's CRDs (deploy/crds, deploy/manifests/crds-pool)
// and waits until served.
func (l *Lab) installCRDs(ctx context.Context) error {
	cfg := l.restConfig()
	ext, err := apiextclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	files, _ := filepath.Glob(filepath.Join(l.repo, "deploy", "crds", "*.yaml"))
	pool, _ := filepath.Glob(filepath.Join(l.repo, "deploy", "manifests", "crds-pool", "*.yaml"))
	files = append(files, pool...)
	if len(files) == 0 {
		return fmt.Errorf("no CRDs in %s/deploy/crds", l.repo)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var crd apiextv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(b, &crd); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, &crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s: %w", crd.Name, err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			if err == nil && established(got) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("CRD %s not established after 30s", crd.Name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func established(crd *apiextv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextv1.Established && c.Status == apiextv1.ConditionTrue {
			return true
		}
	}
	return false
}

// createPools creates the NodePools of lab.yaml, as an operator would.
func (l *Lab) createPools(ctx context.Context) error {
	dyn, err := dynamic.NewForConfig(l.restConfig())
	if err != nil {
		return err
	}
	for _, p := range l.spec.Pools {
		spec := map[string]any{"location": p.Location}
		if p.Interconnect != "" {
			spec["interconnect"] = p.Interconnect
		}
		if len(p.PodCIDRs) > 0 {
			cidrs := make([]any, len(p.PodCIDRs))
			for i, c := range p.PodCIDRs {
				cidrs[i] = c.String()
			}
			spec["podCIDRs"] = cidrs
		}
		if p.NodeMaskSize != 0 {
			spec["nodeMaskSize"] = int64(p.NodeMaskSize)
		}
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": v1alpha1.Group + "/" + v1alpha1.Version, "kind": "NodePool",
			"metadata": map[string]any{"name": p.Name}, "spec": spec}}
		if _, err := dyn.Resource(v1alpha1.NodePoolsGVR).Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create NodePool %s: %w", p.Name, err)
		}
	}
	return nil
}

// createBGPPeers declares each edge node's sessions as BGPPeer objects, as an
// operator would.
func (l *Lab) createBGPPeers(ctx context.Context) error {
	dyn, err := dynamic.NewForConfig(l.restConfig())
	if err != nil {
		return err
	}
	for _, n := range l.spec.Nodes {
		for _, p := range n.BGPPeers {
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": v1alpha1.Group + "/" + v1alpha1.Version, "kind": "BGPPeer",
				"metadata": map[string]any{"name": n.Name + "-" + p.Address.String()},
				"spec": map[string]any{
					"peerAddress": p.Address.String(), "peerASN": int64(p.ASN), "localASN": int64(n.ASN),
					"holdTimeSeconds": int64(9), "keepaliveTimeSeconds": int64(3),
					"gracefulRestart": map[string]any{"enabled": true, "restartTimeSeconds": int64(60)},
					"nodeSelector":    map[string]any{"matchLabels": map[string]any{"kubernetes.io/hostname": n.Name}},
				},
			}}
			if _, err := dyn.Resource(v1alpha1.BGPPeersGVR).Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create BGPPeer for %s → %s: %w", n.Name, p.Address, err)
			}
		}
	}
	return nil
}

package v1alpha1

import (
	"os"
	"reflect"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

func loadCRDFile(t *testing.T, path string) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(b, &crd); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return &crd
}

// TestPoolCRDsMatchTypes: the NodePool and PodCIDRClaim schemas have the Go
// types' fields, no more, no fewer.
func TestPoolCRDsMatchTypes(t *testing.T) {
	const dir = "../../../../deploy/manifests/crds-pool/"
	np := loadCRDFile(t, dir+"strata.io_nodepools.yaml")
	if np.Spec.Names.Plural != NodePoolsGVR.Resource || np.Spec.Scope != apiextensionsv1.ClusterScoped || np.Spec.Versions[0].Subresources == nil || np.Spec.Versions[0].Subresources.Status == nil {
		t.Fatalf("NodePool CRD identity or status subresource: %+v", np.Spec)
	}
	root := *np.Spec.Versions[0].Schema.OpenAPIV3Schema
	compare(t, "spec", reflect.TypeOf(NodePoolSpec{}), root.Properties["spec"])
	compare(t, "status", reflect.TypeOf(NodePoolStatus{}), root.Properties["status"])

	cl := loadCRDFile(t, dir+"strata.io_podcidrclaims.yaml")
	if cl.Spec.Names.Plural != PodCIDRClaimsGVR.Resource || cl.Spec.Scope != apiextensionsv1.ClusterScoped {
		t.Fatalf("PodCIDRClaim CRD identity: %+v", cl.Spec.Names)
	}
	compare(t, "spec", reflect.TypeOf(PodCIDRClaimSpec{}), cl.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"])
}

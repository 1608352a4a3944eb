package v1alpha1

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

const crdPath = "../../../../deploy/crds/strata.io_bgppeers.yaml"

func loadCRD(t *testing.T) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	b, err := os.ReadFile(crdPath)
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(b, &crd); err != nil {
		t.Fatalf("parse %s: %v", crdPath, err)
	}
	return &crd
}

// jsonFields lists a struct's JSON field names (inline fields skipped).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		out[name] = f.Type
	}
	return out
}

// compare checks that the schema and the Go type have the same fields, down
// through nested structs (metav1 types are the API server's own).
func compare(t *testing.T, path string, typ reflect.Type, s apiextensionsv1.JSONSchemaProps) {
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		if typ.Kind() == reflect.Slice {
			if s.Items == nil || s.Items.Schema == nil {
				t.Errorf("%s: Go slice but schema has no items", path)
				return
			}
			s = *s.Items.Schema
		}
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeOf(BGPPeer{}).PkgPath() {
		return
	}
	fields := jsonFields(typ)
	for name, ft := range fields {
		ps, ok := s.Properties[name]
		if !ok {
			t.Errorf("%s.%s: in the Go type but not in the CRD schema", path, name)
			continue
		}
		compare(t, path+"."+name, ft, ps)
	}
	for name := range s.Properties {
		if _, ok := fields[name]; !ok {
			t.Errorf("%s.%s: in the CRD schema but not in the Go type", path, name)
		}
	}
}

func TestCRDMatchesTypes(t *testing.T) {
	crd := loadCRD(t)
	if crd.Spec.Group != Group || crd.Spec.Names.Plural != BGPPeersGVR.Resource || crd.Spec.Scope != apiextensionsv1.ClusterScoped {
		t.Fatalf("CRD identity: %s %s %s", crd.Spec.Group, crd.Spec.Names.Plural, crd.Spec.Scope)
	}
	if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != Version || crd.Spec.Versions[0].Subresources == nil {
		t.Fatalf("CRD versions: %+v", crd.Spec.Versions)
	}
	root := *crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	compare(t, "spec", reflect.TypeOf(BGPPeerSpec{}), root.Properties["spec"])
	compare(t, "status", reflect.TypeOf(BGPPeerStatus{}), root.Properties["status"])
	spec := root.Properties["spec"]
	if !slices.Contains(spec.Required, "peerAddress") || !slices.Contains(spec.Required, "peerASN") {
		t.Errorf("spec.required = %v", spec.Required)
	}
	if m := spec.Properties["holdTimeSeconds"].Minimum; m == nil || *m != 3 {
		t.Errorf("holdTimeSeconds minimum %v, want 3", m)
	}
	if m := spec.Properties["peerASN"].Minimum; m == nil || *m != 1 {
		t.Errorf("peerASN minimum %v, want 1", m)
	}
}

func TestUnstructuredRoundTrip(t *testing.T) {
	p := &BGPPeer{
		ObjectMeta: metav1.ObjectMeta{Name: "idc-a"},
		Spec: BGPPeerSpec{PeerAddress: "192.168.10.1", PeerASN: 65010, HoldTimeSeconds: 9,
			PasswordSecretRef: &SecretKeyRef{Name: "bgp"}, GracefulRestart: &GracefulRestart{Enabled: true},
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"strata.io/location": "idc"}}},
	}
	u, err := p.ToUnstructured()
	if err != nil {
		t.Fatal(err)
	}
	if u.GetKind() != "BGPPeer" || u.GetAPIVersion() != "strata.io/v1alpha1" {
		t.Fatalf("kind %s apiVersion %s", u.GetKind(), u.GetAPIVersion())
	}
	back, err := FromUnstructured(u)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Spec, p.Spec) {
		t.Fatalf("round trip: %+v != %+v", back.Spec, p.Spec)
	}
}

package topology

import (
	"fmt"

	"sigs.k8s.io/yaml"
)

// ParseFactsDoc parses a facts document (YAML or JSON, the shape of Facts).
// Unknown fields are errors, so a typo never silently drops a fact.
func ParseFactsDoc(data []byte) (Facts, error) {
	var f Facts
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return Facts{}, fmt.Errorf("parse facts document (want YAML/JSON with now, nodes[], probes[]; see topology/testdata/lab.yaml): %w", err)
	}
	for i, n := range f.Nodes {
		if err := validateNode(n); err != nil {
			return Facts{}, fmt.Errorf("facts document nodes[%d]: %w", i, err)
		}
		if n.WANPublicKey != "" {
			if err := checkWANKey(n.WANPublicKey); err != nil {
				return Facts{}, fmt.Errorf("facts document nodes[%d] (%s): wanPublicKey %q: want base64 of %d bytes: %w", i, n.Name, n.WANPublicKey, WANKeyLen, err)
			}
		}
		if n.PublicEndpoint.IsValid() {
			if err := checkPublicEndpoint(n.PublicEndpoint); err != nil {
				return Facts{}, fmt.Errorf("facts document nodes[%d] (%s): publicEndpoint %s: want ip:port reachable from the internet: %w", i, n.Name, n.PublicEndpoint, err)
			}
		}
		if n.VTEPMAC != "" {
			pf, err := ParseNode(n.Name, nil, map[string]string{AnnotationVTEPMAC: n.VTEPMAC})
			if err != nil {
				return Facts{}, fmt.Errorf("facts document nodes[%d]: %w", i, err)
			}
			f.Nodes[i].VTEPMAC = pf.VTEPMAC
		}
	}
	for i, p := range f.Probes {
		if p.Kind != ProbeNative && p.Kind != ProbeNodeIP && p.Kind != ProbeWAN {
			return Facts{}, fmt.Errorf("facts document probes[%d]: kind %q: want native, node-ip or wan", i, p.Kind)
		}
	}
	return f, nil
}

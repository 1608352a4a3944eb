package agent

import (
	"strings"
	"testing"
)

func TestPodMetadataAccessSetting(t *testing.T) {
	c := Config{NodeName: "n", GossipInsecure: true}
	c.Defaults()
	if c.PodMetadataAccess != MetadataDeny {
		t.Errorf("default --pod-metadata-access %q, want %q", c.PodMetadataAccess, MetadataDeny)
	}
	c.PodMetadataAccess = "maybe"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "--pod-metadata-access") {
		t.Errorf("Validate with --pod-metadata-access=maybe: %v, want an error naming the flag", err)
	}
	c.PodMetadataAccess = MetadataAllow
	if err := c.Validate(); err != nil {
		t.Errorf("allow: %v", err)
	}
}

package cloudrole

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-net/strata/cloud-node/ecsapi"
	"github.com/strata-net/strata/cloud-node/metadata"
	"github.com/strata-net/strata/tests/ecsemu"
)

func TestNewFromMetadataWithRAMRole(t *testing.T) {
	emu, err := ecsemu.New(ecsemu.Config{AccessKeyID: "LTAI-a", AccessKeySecret: "s", RAMRole: "StrataNodeRole",
		RegionID: "cn-hangzhou", VPCCIDR: "10.0.0.0/16",
		InstanceTypes: []ecsemu.InstanceType{{ID: "ecs.g7.large", ENIQuantity: 3, IPsPerENI: 6}},
		VSwitches:     []ecsemu.VSwitch{{ID: "vsw-node", CIDR: "10.0.1.0/24"}},
		Instances:     []ecsemu.Instance{{ID: "i-1", Type: "ecs.g7.large", VSwitchID: "vsw-node"}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu.Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg := prometheus.NewRegistry()
	m, err := New(ctx, Options{ClusterID: "c", MetadataURL: srv.URL, Endpoint: srv.URL, PodVSwitchIDs: []string{"vsw-node"},
		StateDir: t.TempDir(), Registry: reg, DetectIPVlan: func() bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop(context.Background())
	if m.Name() != "eni-multi-ip" {
		t.Fatalf("name %s", m.Name())
	}
	// the RAM role's STS credentials sign a real call through the SDK (the
	// manager itself is not started: that would touch this namespace's rules)
	api, err := ecsapi.New(ecsapi.Config{RegionID: "cn-hangzhou", Endpoint: srv.URL, Source: roleSource(metadata.New(srv.URL), "")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.DescribeENIs(ctx, ecsapi.Filter{}); err != nil {
		t.Fatalf("call with RAM-role credentials: %v", err)
	}
	if _, err := New(ctx, Options{MetadataURL: srv.URL}); err == nil || !strings.Contains(err.Error(), "StateDir") {
		t.Fatalf("want a StateDir error, got %v", err)
	}
}

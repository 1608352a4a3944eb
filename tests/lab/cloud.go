package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/tests/ecsemu"
)

const ecsPort = "18080"

func (l *Lab) ecsAddr() string { return net.JoinHostPort(l.spec.MgmtAddr(0).String(), ecsPort) }

func instanceID(node string) string { return "i-" + strings.ReplaceAll(node, "-", "") }

// startECS runs the ECS OpenAPI + metadata emulator in ctl. Its world lists
// the lab's cloud nodes as instances whose primary ENI is their eth0.
func (l *Lab) startECS(context.Context) error {
	c := l.spec.Cloud
	if c == nil {
		return nil
	}
	type inst struct{ ID, Type, VSwitchID, PrimaryIP, MAC string }
	type vsw struct{ ID, CIDR, ZoneID string }
	world := map[string]any{
		"RegionID": c.Region, "VPCID": "vpc-strata-lab", "VPCCIDR": c.VPCCIDR, "RAMRole": "StrataNodeRole",
		"InstanceTypes": []map[string]any{{"ID": c.InstanceType, "ENIQuantity": c.ENIs, "IPsPerENI": c.IPsPerENI}},
		"AttachDelay":   100_000_000,
	}
	var vsws []vsw
	for _, v := range c.VSwitches {
		vsws = append(vsws, vsw{ID: v.ID, CIDR: v.CIDR, ZoneID: c.Region + "-h"})
	}
	world["VSwitches"] = vsws
	argv := []string{l.agentBin("strata-ecs-emulator"), "-listen", l.ecsAddr(),
		"-vswitch-netns", l.ns("sw-" + c.Switch).Name, "-bridge", "br0"}
	var insts []inst
	for _, n := range l.spec.Nodes {
		if n.Location != "cloud" {
			continue
		}
		var mac string
		if err := l.ns(n.Name).Do(func() error {
			link, err := netlink.LinkByName("eth0")
			if err == nil {
				mac = link.Attrs().HardwareAddr.String()
			}
			return err
		}); err != nil {
			return err
		}
		nodeVSW := ""
		for _, v := range c.VSwitches {
			if _, p, err := net.ParseCIDR(v.CIDR); err == nil && p.Contains(n.Addr.Addr().AsSlice()) {
				nodeVSW = v.ID
			}
		}
		insts = append(insts, inst{ID: instanceID(n.Name), Type: c.InstanceType, VSwitchID: nodeVSW, PrimaryIP: n.Addr.Addr().String(), MAC: mac})
		argv = append(argv, "-node", instanceID(n.Name)+"="+l.ns(n.Name).Name)
	}
	world["Instances"] = insts
	b, _ := json.MarshalIndent(world, "", "  ")
	path := filepath.Join(l.dir, "ecs-world.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return err
	}
	argv = append(argv, "-config", path)
	key := make([]byte, 12)
	_, _ = rand.Read(key)
	if err := l.procs.start("ecs-emulator", l.ns(ctlHost).Exec(argv...),
		"STRATA_ECS_ACCESS_KEY_ID=LTAIlab"+hex.EncodeToString(key[:4]), "STRATA_ECS_ACCESS_KEY_SECRET="+hex.EncodeToString(key)); err != nil {
		return fmt.Errorf("ECS emulator: %w", err)
	}
	return nil
}

// cloudArgs are the agent flags of a node: cloud nodes find the emulator's
// metadata and API; others are told there is no metadata service.
func (l *Lab) cloudArgs(n Node) []string {
	if n.Location != "cloud" || l.spec.Cloud == nil {
		return []string{"--cloud-metadata-url", "off"}
	}
	args := []string{"--cloud-metadata-url", "http://" + l.ecsAddr() + "/i/" + instanceID(n.Name),
		"--cloud-endpoint", "http://" + l.ecsAddr(), "--pod-vswitches", strings.Join(l.spec.Cloud.PodVSwitches, ","),
		"--cluster-id", "strata-lab"}
	if n.ENIPrefixes {
		args = append(args, "--eni-ipv4-prefixes")
	}
	return args
}

// cloudIPs counts the pod addresses the emulated cloud has assigned to an
// instance's secondary ENIs: secondary IPs, and 16 per /28 prefix.
func (l *Lab) cloudIPs(ctx context.Context, instance string) (int, error) {
	b, err := l.httpGet(ctx, "http://"+l.ecsAddr()+ecsemu.DebugENIsPath)
	if err != nil {
		return 0, fmt.Errorf("ask the ECS emulator for its ENIs: %w", err)
	}
	var enis []ecsemu.ENI
	if err := json.Unmarshal(b, &enis); err != nil {
		return 0, fmt.Errorf("decode the ECS emulator's ENIs: %w", err)
	}
	n := 0
	for _, e := range enis {
		if e.InstanceID == instance && e.Type != "Primary" {
			n += len(e.Secondary) + 16*len(e.Prefixes)
		}
	}
	return n, nil
}

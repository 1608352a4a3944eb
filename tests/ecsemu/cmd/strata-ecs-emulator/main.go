// Command strata-ecs-emulator serves the ECS OpenAPI and metadata emulator
// for the lab. Its world (instance types, vSwitches, instances, faults) is a
// JSON file matching ecsemu.Config; the access key comes from the
// environment so it never lands in a file or a process listing.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/tests/ecsemu"
)

// nodeFlags collects -node instance=netns pairs.
type nodeFlags map[string]string

func (n nodeFlags) String() string { return fmt.Sprint(map[string]string(n)) }
func (n nodeFlags) Set(v string) error {
	id, ns, ok := strings.Cut(v, "=")
	if !ok || id == "" || ns == "" {
		return fmt.Errorf("want instance-id=netns-name, got %q", v)
	}
	n[id] = ns
	return nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:18080", "address to serve the API and metadata on")
	config := flag.String("config", "", "JSON file with the emulator's world (ecsemu.Config fields)")
	vswitch := flag.String("vswitch-netns", "", "named netns holding the vSwitch bridge; with -node, attached ENIs become real links")
	bridge := flag.String("bridge", "br0", "bridge name inside -vswitch-netns")
	nodes := nodeFlags{}
	flag.Var(nodes, "node", "instance-id=netns-name of a lab node (repeatable)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var att ecsemu.LinkAttacher
	if *vswitch != "" {
		a, err := attacher(*vswitch, *bridge, nodes)
		if err != nil {
			fmt.Fprintln(os.Stderr, "strata-ecs-emulator:", err)
			os.Exit(2)
		}
		att = a
	}
	if err := run(*listen, *config, log, att); err != nil {
		fmt.Fprintln(os.Stderr, "strata-ecs-emulator:", err)
		os.Exit(1)
	}
}

func attacher(vswitch, bridge string, nodes map[string]string) (*ecsemu.VethAttacher, error) {
	br, err := nsutil.Open(vswitch)
	if err != nil {
		return nil, fmt.Errorf("-vswitch-netns %s: %w", vswitch, err)
	}
	a := &ecsemu.VethAttacher{Bridge: br, BridgeName: bridge, Nodes: map[string]nsutil.NS{}}
	for id, name := range nodes {
		ns, err := nsutil.Open(name)
		if err != nil {
			return nil, fmt.Errorf("-node %s=%s: %w", id, name, err)
		}
		a.Nodes[id] = ns
	}
	return a, nil
}

func run(listen, path string, log *slog.Logger, att ecsemu.LinkAttacher) error {
	cfg := ecsemu.Config{}
	if path == "" {
		return fmt.Errorf("--config is required (a JSON ecsemu.Config: InstanceTypes, VSwitches, Instances, Faults)")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	cfg.AccessKeyID = os.Getenv("STRATA_ECS_ACCESS_KEY_ID")
	cfg.AccessKeySecret = os.Getenv("STRATA_ECS_ACCESS_KEY_SECRET")
	if cfg.AccessKeyID == "" || cfg.AccessKeySecret == "" {
		return fmt.Errorf("set STRATA_ECS_ACCESS_KEY_ID and STRATA_ECS_ACCESS_KEY_SECRET (the key requests must be signed with)")
	}
	cfg.Logger = log
	cfg.Attacher = att
	emu, err := ecsemu.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	log.Info("ECS emulator serving", "addr", ln.Addr().String(), "api", "http://"+ln.Addr().String()+"/",
		"metadata", "http://"+ln.Addr().String()+"/i/<instance-id>")
	srv := &http.Server{Handler: emu.Handler(), ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

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
	"time"

	"github.com/strata-net/strata/tests/ecsemu"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18080", "address to serve the API and metadata on")
	config := flag.String("config", "", "JSON file with the emulator's world (ecsemu.Config fields)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*listen, *config, log); err != nil {
		fmt.Fprintln(os.Stderr, "strata-ecs-emulator:", err)
		os.Exit(1)
	}
}

func run(listen, path string, log *slog.Logger) error {
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

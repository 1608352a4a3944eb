// Command testagent is a minimal agent for strata-cni's tests and benchmark:
// podipam over a bbolt store, served on a CNI socket. Tests run it as a
// subprocess so they can kill it mid-flight and restart it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/strata-net/strata/cni/server"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/podipam"
)

func main() {
	socket := flag.String("socket", "", "CNI socket path")
	db := flag.String("db", "", "IPAM store path")
	cidr := flag.String("cidr", "10.244.1.0/24", "pod CIDR")
	mtu := flag.Int("mtu", 1500, "pod MTU")
	flag.Parse()
	if err := run(*socket, *db, *cidr, *mtu); err != nil {
		fmt.Fprintln(os.Stderr, "testagent:", err)
		os.Exit(1)
	}
}

func run(socket, db, cidr string, mtu int) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return fmt.Errorf("-cidr: %w", err)
	}
	store, err := ipamstore.Open(db)
	if err != nil {
		return err
	}
	defer func() { _ = store.Close() }()
	ipam, err := podipam.New(p, store, podipam.Options{MTU: mtu, Logger: log})
	if err != nil {
		return err
	}
	l, err := server.Listen(socket)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Println("ready")
	return server.New(ipam, server.Options{Logger: log}).Serve(ctx, l)
}

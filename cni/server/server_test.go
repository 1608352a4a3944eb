package server

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/podipam"
)

// serve runs a server for a podipam role over cidr on a temp socket.
func serve(t *testing.T, cidr string) (*wire.Client, *podipam.IPAM, string) {
	t.Helper()
	return serveWith(t, cidr, Options{})
}

func serveWith(t *testing.T, cidr string, opts Options) (*wire.Client, *podipam.IPAM, string) {
	t.Helper()
	dir := t.TempDir()
	store, err := ipamstore.Open(filepath.Join(dir, "ipam.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ipam, err := podipam.New(netip.MustParsePrefix(cidr), store, podipam.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "run", "cni.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	opts.AllowUID = os.Getuid()
	go func() { done <- New(ipam, opts).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &wire.Client{Socket: sock}, ipam, sock
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestVerbs(t *testing.T) {
	c, ipam, sock := serve(t, "10.244.1.0/29") // 5 pod addresses
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	if st, err := c.Status(ctx(t)); err != nil || !st.Ready || st.Role != ipam.Name() {
		t.Fatalf("status %+v %v", st, err)
	}
	a, err := c.Add(ctx(t), wire.AddRequest{ContainerID: "c1", IfName: "eth0", PodNamespace: "ns", PodName: "p"})
	if err != nil || a.Addr != netip.MustParsePrefix("10.244.1.2/32") || a.Gateway != podipam.DefaultGateway || a.Datapath == "" {
		t.Fatalf("add: %+v %v", a, err)
	}
	if again, err := c.Add(ctx(t), wire.AddRequest{ContainerID: "c1", IfName: "eth0"}); err != nil || again.Addr != a.Addr {
		t.Fatalf("repeated add: %+v %v", again, err)
	}
	if got, err := c.Check(ctx(t), wire.Attachment{ContainerID: "c1", IfName: "eth0"}); err != nil || got.Addr != a.Addr {
		t.Fatalf("check: %+v %v", got, err)
	}
	var we *wire.Error
	if _, err := c.Check(ctx(t), wire.Attachment{ContainerID: "nope", IfName: "eth0"}); !errors.As(err, &we) || we.Code != wire.CodeUnknownAttachment {
		t.Fatalf("check unknown: %v", err)
	}
	if _, err := c.Add(ctx(t), wire.AddRequest{IfName: "eth0"}); !errors.As(err, &we) || we.Code != wire.CodeInvalidRequest || !strings.Contains(we.Message, "containerID") {
		t.Fatalf("add without containerID: %v", err)
	}
	for _, id := range []string{"c2", "c3", "c4", "c5"} {
		if _, err := c.Add(ctx(t), wire.AddRequest{ContainerID: id, IfName: "eth0"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Add(ctx(t), wire.AddRequest{ContainerID: "c6", IfName: "eth0"}); !errors.As(err, &we) || we.Code != wire.CodeNoAddresses {
		t.Fatalf("add on a full CIDR: %v, want code %d", err, wire.CodeNoAddresses)
	}
	if st, err := c.Status(ctx(t)); err != nil || st.Ready || st.Code != wire.CodeNoAddresses {
		t.Fatalf("status when full: %+v %v", st, err)
	}
	keep := []wire.Attachment{{ContainerID: "c1", IfName: "eth0"}, {ContainerID: "c3", IfName: "eth0"}}
	// GC's dry run lists the stale attachments and releases none: the
	// plugin removes their links before it releases them (DEL's order).
	stale, err := c.Stale(ctx(t), keep)
	if err != nil || len(stale) != 3 {
		t.Fatalf("stale: %+v %v, want c2, c4, c5", stale, err)
	}
	if all, _ := ipam.Allocations(ctx(t)); len(all) != 5 {
		t.Fatalf("the dry run released addresses: %d allocations left, want 5", len(all))
	}
	gc, err := c.GC(ctx(t), keep)
	if err != nil || len(gc.Released) != 3 {
		t.Fatalf("gc: %+v %v", gc, err)
	}
	if _, err := c.Del(ctx(t), wire.Attachment{ContainerID: "c1", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Del(ctx(t), wire.Attachment{ContainerID: "c1", IfName: "eth0"}); err != nil {
		t.Fatalf("second del: %v", err)
	}
	left, _ := ipam.Allocations(ctx(t))
	if len(left) != 1 || left[0].ContainerID != "c3" {
		t.Fatalf("left %+v, want only c3", left)
	}
}

func TestMissingAgentNamesSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "absent.sock")
	c := &wire.Client{Socket: sock, DialWait: 100 * time.Millisecond}
	_, err := c.Add(ctx(t), wire.AddRequest{ContainerID: "a", IfName: "eth0"})
	if !errors.Is(err, wire.ErrAgentUnreachable) || !strings.Contains(err.Error(), sock) {
		t.Fatalf("got %v, want ErrAgentUnreachable naming %s", err, sock)
	}
}

func TestListenRefusesLiveSocketAndReplacesStale(t *testing.T) {
	_, _, sock := serve(t, "10.0.0.0/24")
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	stale := filepath.Join(t.TempDir(), "stale.sock")
	l, err := Listen(stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	l.Close()
	l2, err := Listen(stale)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	if _, err := Listen("relative.sock"); err == nil {
		t.Fatal("relative socket path accepted")
	}
}

// TestAddCarriesBlocked: ADD asks the policy with the pod's namespace and
// name, and the answer reaches the plugin in Allocation.Blocked.
func TestAddCarriesBlocked(t *testing.T) {
	type pod struct{ ns, name string }
	var asked []pod
	c, _, _ := serveWith(t, "10.244.1.0/29", Options{Blocked: func(_ context.Context, ns, name string) []netip.Prefix {
		asked = append(asked, pod{ns, name})
		if name == "allowed" {
			return nil
		}
		return []netip.Prefix{wire.MetadataPrefix}
	}})
	a, err := c.Add(ctx(t), wire.AddRequest{ContainerID: "c1", IfName: "eth0", Netns: "/x", PodNamespace: "ns1", PodName: "denied"})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Blocked) != 1 || a.Blocked[0] != wire.MetadataPrefix {
		t.Errorf("denied pod: Blocked %v, want [%s]", a.Blocked, wire.MetadataPrefix)
	}
	a, err = c.Add(ctx(t), wire.AddRequest{ContainerID: "c2", IfName: "eth0", Netns: "/x", PodNamespace: "ns1", PodName: "allowed"})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Blocked) != 0 {
		t.Errorf("allowed pod: Blocked %v, want none", a.Blocked)
	}
	if len(asked) != 2 || asked[0] != (pod{"ns1", "denied"}) {
		t.Errorf("policy asked for %v", asked)
	}
}

//go:build privileged

package plugin

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"

	"github.com/strata-net/strata/cni/server"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/podipam"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/internal/testutil"
)

// releaseWatcher records, for each release, whether the attachment's host
// veth still existed in the node namespace at that moment.
type releaseWatcher struct {
	role.Role
	node nsutil.NS
	mu   sync.Mutex
	seen map[string]bool // containerID -> host veth present at release
}

func (r *releaseWatcher) Release(ctx context.Context, containerID, ifName string) error {
	present := false
	_ = r.node.Do(func() error {
		_, err := netlink.LinkByName(hostVethName(containerID, ifName))
		present = err == nil
		return nil
	})
	r.mu.Lock()
	r.seen[containerID] = present
	r.mu.Unlock()
	return r.Role.Release(ctx, containerID, ifName)
}

// TestPrivilegedGCRemovesLinksBeforeReleasing: GC follows DEL's order, so
// a stale pod's address is never free while its host veth still routes it.
func TestPrivilegedGCRemovesLinksBeforeReleasing(t *testing.T) {
	testutil.RequireRoot(t)
	node, err := nsutil.Create(nsutil.OwnedName("gcn"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsutil.Delete(node.Name) })
	dir := t.TempDir()
	st, err := ipamstore.Open(filepath.Join(dir, "ipam.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ipam, err := podipam.New(netip.MustParsePrefix("10.247.1.0/24"), st, podipam.Options{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range []string{"keep", "stale1", "stale2"} {
		if _, err := ipam.Allocate(ctx, role.PodRequest{ContainerID: id, IfName: "eth0"}); err != nil {
			t.Fatal(err)
		}
		// The host side ADD leaves, with its pod end (a pod namespace that
		// is gone leaves nothing else).
		if err := node.Do(func() error {
			return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostVethName(id, "eth0")}, PeerName: "p" + id})
		}); err != nil {
			t.Fatal(err)
		}
	}
	w := &releaseWatcher{Role: ipam, node: node, seen: map[string]bool{}}
	sock := filepath.Join(dir, "cni.sock")
	l, err := server.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = server.New(w, server.Options{}).Serve(sctx, l) }()
	t.Cleanup(func() { stop(); <-done })

	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"strata","type":"strata-cni","socket":%q,
		"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]}`, sock)
	if err := node.Do(func() error { return cmdGC(&skel.CmdArgs{StdinData: []byte(conf)}) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.seen) != 2 {
		t.Fatalf("released %v, want stale1 and stale2 only", w.seen)
	}
	for id, present := range w.seen {
		if present {
			t.Errorf("%s's address was released while its host veth %s still existed", id, hostVethName(id, "eth0"))
		}
	}
	left, _ := ipam.Allocations(ctx)
	if len(left) != 1 || left[0].ContainerID != "keep" {
		t.Fatalf("allocations after GC: %+v, want only keep", left)
	}
	_ = node.Do(func() error {
		if _, err := netlink.LinkByName(hostVethName("keep", "eth0")); err != nil {
			t.Errorf("GC removed the kept pod's veth: %v", err)
		}
		return nil
	})
}

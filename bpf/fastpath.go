package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-net/strata/internal/nsutil"
)

// AttachMode says how programs are hooked to interfaces.
type AttachMode string

const (
	// AttachAuto uses TCX when the kernel has it, else clsact + cls_bpf.
	AttachAuto AttachMode = ""
	// AttachTCX uses TCX links (kernel 6.6+).
	AttachTCX AttachMode = "tcx"
	// AttachLegacyTC uses a clsact qdisc with a direct-action cls_bpf filter.
	AttachLegacyTC AttachMode = "tc"
)

// Options configure Load.
type Options struct {
	// NS is the node's network namespace, where the pod veths and uplinks
	// live. Nil means the caller's namespace.
	NS *nsutil.NS
	// Attach picks the hook; the zero value probes for TCX.
	Attach AttachMode
	// Disabled loads and attaches everything but starts with the fast path
	// switched off (every packet goes to the stack) until SetEnabled(true).
	Disabled bool
	Logger   *slog.Logger
}

// Endpoint is a pod on this node, as the fast path needs it.
type Endpoint struct {
	// HostIfindex is the host side of the pod's veth in the node namespace.
	HostIfindex int
	// PodMAC is the pod interface's MAC; HostMAC is the host-side veth's
	// (the pod's gateway). Both are written into redirected frames.
	PodMAC  net.HardwareAddr
	HostMAC net.HardwareAddr
}

// Pod is one pod attachment for AddPod.
type Pod struct {
	HostIfname string
	PodMAC     net.HardwareAddr
	IPs        []netip.Addr
}

// filterPriority and filterHandle identify Strata's cls_bpf filter in legacy
// mode, so Detach removes only our own filter.
const (
	filterPriority = 0x5a1
	filterHandle   = 0x5a1
)

type attachment struct {
	ifname  string
	ifindex int
	prog    string
	tcx     link.Link // nil in legacy mode
}

// Fastpath is the loaded fast path of one node namespace.
type Fastpath struct {
	mu       sync.Mutex
	objs     fastpathObjects
	ns       *nsutil.NS
	mode     AttachMode
	attached map[string]*attachment
	log      *slog.Logger
	closed   bool
}

// Supported returns nil when the running kernel has what the fast path needs
// (tc programs, bpf_redirect_peer, bpf_redirect_neigh, bpf_fib_lookup and
// nf_conntrack's BPF kfuncs), else an error naming what is missing. The agent
// calls it before turning the fast path on and reports the answer in its
// plan and status. It ends by loading the real programs once, so a pass
// means Load will work.
func Supported() error {
	if err := features.HaveProgramType(ebpf.SchedCLS); err != nil {
		return fmt.Errorf("bpf fast path: kernel cannot load tc programs: %w", err)
	}
	for _, h := range []asm.BuiltinFunc{asm.FnRedirectPeer, asm.FnRedirectNeigh, asm.FnFibLookup} {
		if err := features.HaveProgramHelper(ebpf.SchedCLS, h); err != nil {
			return fmt.Errorf("bpf fast path: kernel lacks helper %s (needs Linux 5.10+): %w", h, err)
		}
	}
	var objs fastpathObjects
	if err := loadFastpathObjects(&objs, nil); err != nil {
		return fmt.Errorf("bpf fast path: programs do not load (they need nf_conntrack's BPF kfuncs, Linux 6.0+ with BTF and nf_conntrack loaded): %w", err)
	}
	return objs.Close()
}

// Load loads the programs and maps. Nothing is attached yet.
func Load(opts Options) (*Fastpath, error) {
	switch opts.Attach {
	case AttachAuto, AttachTCX, AttachLegacyTC:
	default:
		return nil, fmt.Errorf("bpf: Options.Attach %q is not one of \"\", %q, %q", opts.Attach, AttachTCX, AttachLegacyTC)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("bpf: lift memlock rlimit: %w", err)
	}
	f := &Fastpath{ns: opts.NS, mode: opts.Attach, attached: map[string]*attachment{}, log: opts.Logger}
	if f.log == nil {
		f.log = slog.Default()
	}
	if err := loadFastpathObjects(&f.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("bpf: load fast path (verifier): %+v", verr)
		}
		if perr := Supported(); perr != nil {
			return nil, perr
		}
		return nil, fmt.Errorf("bpf: load fast path: %w", err)
	}
	if err := f.SetEnabled(!opts.Disabled); err != nil {
		_ = f.objs.Close()
		return nil, err
	}
	return f, nil
}

// Mode is the attach mode in use (resolved after the first attach in auto).
func (f *Fastpath) Mode() AttachMode {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mode
}

func (f *Fastpath) inNS(fn func() error) error {
	if f.ns == nil {
		return fn()
	}
	return f.ns.Do(fn)
}

// AttachPod hooks the from-pod program to the ingress of a pod's host-side
// veth. Attaching twice is a no-op; if the veth was recreated under the same
// name, the stale attachment is replaced.
func (f *Fastpath) AttachPod(hostIfname string) error {
	return f.attach(hostIfname, fastpathProgFromPod, f.objs.FromPod)
}

// AttachUplink hooks the from-netdev program to the ingress of an uplink or
// VXLAN device, so traffic arriving for local pods skips the host stack too.
func (f *Fastpath) AttachUplink(ifname string) error {
	return f.attach(ifname, fastpathProgFromNetdev, f.objs.FromNetdev)
}

func (f *Fastpath) attach(ifname, progName string, prog *ebpf.Program) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("bpf: fast path is closed")
	}
	if a, ok := f.attached[ifname]; ok {
		// A pod whose DEL was missed may come back with a new veth of the
		// same name: an attachment to a vanished ifindex is stale.
		var cur int
		_ = f.inNS(func() error {
			if l, err := netlink.LinkByName(ifname); err == nil {
				cur = l.Attrs().Index
			}
			return nil
		})
		switch {
		case cur == a.ifindex && a.prog == progName:
			return nil
		case cur == a.ifindex:
			return fmt.Errorf("bpf: %s already has %s attached; Detach it first", ifname, a.prog)
		default:
			if err := f.detachLocked(ifname); err != nil {
				return err
			}
		}
	}
	a := &attachment{ifname: ifname, prog: progName}
	err := f.inNS(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("find interface %s: %w", ifname, err)
		}
		a.ifindex = l.Attrs().Index
		if f.mode != AttachLegacyTC {
			tl, err := link.AttachTCX(link.TCXOptions{Interface: a.ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
			switch {
			case err == nil:
				a.tcx = tl
				f.mode = AttachTCX
				return nil
			case f.mode == AttachAuto && errors.Is(err, ebpf.ErrNotSupported):
				f.log.Info("bpf: TCX not available, falling back to clsact + cls_bpf", "error", err)
				f.mode = AttachLegacyTC
			default:
				return fmt.Errorf("attach TCX ingress on %s: %w", ifname, err)
			}
		}
		return attachLegacy(l, prog, progName)
	})
	if err != nil {
		return fmt.Errorf("bpf: %w", err)
	}
	f.attached[ifname] = a
	return nil
}

func attachLegacy(l netlink.Link, prog *ebpf.Program, name string) error {
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscReplace(q); err != nil {
		return fmt.Errorf("add clsact qdisc on %s: %w", l.Attrs().Name, err)
	}
	flt := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: l.Attrs().Index,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    filterHandle,
			Protocol:  unix.ETH_P_ALL,
			Priority:  filterPriority,
		},
		Fd:           prog.FD(),
		Name:         "strata-" + name,
		DirectAction: true,
	}
	if err := netlink.FilterReplace(flt); err != nil {
		return fmt.Errorf("add cls_bpf ingress filter on %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// Detach unhooks whatever Strata attached to ifname. Traffic then takes the
// kernel stack at once. Detaching an unknown or vanished interface is not an
// error.
func (f *Fastpath) Detach(ifname string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.detachLocked(ifname)
}

func (f *Fastpath) detachLocked(ifname string) error {
	a, ok := f.attached[ifname]
	if !ok {
		return nil
	}
	delete(f.attached, ifname)
	if a.tcx != nil {
		// Closing the link fd detaches; it also goes when the device goes.
		if err := a.tcx.Close(); err != nil {
			return fmt.Errorf("bpf: detach TCX from %s: %w", ifname, err)
		}
		return nil
	}
	err := f.inNS(func() error {
		l, err := netlink.LinkByIndex(a.ifindex)
		if err != nil {
			return nil // the veth went with its pod: nothing left to remove
		}
		flt := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{
			LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS,
			Handle: filterHandle, Protocol: unix.ETH_P_ALL, Priority: filterPriority,
		}}
		if err := netlink.FilterDel(flt); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove cls_bpf filter from %s: %w", ifname, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bpf: %w", err)
	}
	return nil
}

// Attached lists the interfaces the fast path is hooked to, sorted.
func (f *Fastpath) Attached() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.attached))
	for k := range f.attached {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// AddPod attaches the from-pod program to the pod's host veth and writes an
// endpoint for each of its addresses (CNI ADD). On error nothing is left.
func (f *Fastpath) AddPod(p Pod) error {
	if p.HostIfname == "" {
		return errors.New("bpf: Pod.HostIfname is empty; pass the host-side veth name")
	}
	if len(p.PodMAC) != 6 {
		return fmt.Errorf("bpf: Pod.PodMAC %q is not a 6-byte MAC; pass the pod interface's address", p.PodMAC)
	}
	if len(p.IPs) == 0 {
		return errors.New("bpf: Pod.IPs is empty; pass the pod's addresses")
	}
	var ep Endpoint
	if err := f.inNS(func() error {
		l, err := netlink.LinkByName(p.HostIfname)
		if err != nil {
			return fmt.Errorf("find host veth %s: %w", p.HostIfname, err)
		}
		ep = Endpoint{HostIfindex: l.Attrs().Index, PodMAC: p.PodMAC, HostMAC: l.Attrs().HardwareAddr}
		return nil
	}); err != nil {
		return fmt.Errorf("bpf: %w", err)
	}
	var done []netip.Addr
	undo := func() {
		for _, ip := range done {
			_ = f.RemoveEndpoint(ip)
		}
	}
	for _, ip := range p.IPs {
		if err := f.UpsertEndpoint(ip, ep); err != nil {
			undo()
			return err
		}
		done = append(done, ip)
	}
	if err := f.AttachPod(p.HostIfname); err != nil {
		undo()
		return err
	}
	return nil
}

// RemovePod removes the pod's endpoints and counters and detaches from its
// veth (CNI DEL). Removing a pod that is already gone is not an error.
func (f *Fastpath) RemovePod(hostIfname string, ips ...netip.Addr) error {
	var errs []error
	for _, ip := range ips {
		errs = append(errs, f.RemoveEndpoint(ip))
	}
	errs = append(errs, f.Detach(hostIfname))
	return errors.Join(errs...)
}

// Sync makes the fast path match the node's live pods: every pod is added
// (idempotent), endpoints of pods not listed are removed and their veths
// detached. The agent calls it at start (maps are not pinned, so a restarted
// agent begins empty) and after CNI GC. Uplinks are left alone. Pods that
// fail are reported together; the others are still synced.
func (f *Fastpath) Sync(pods []Pod) error {
	var errs []error
	want := map[netip.Addr]bool{}
	ifs := map[string]bool{}
	for _, p := range pods {
		if err := f.AddPod(p); err != nil {
			errs = append(errs, fmt.Errorf("pod on %s: %w", p.HostIfname, err))
			continue
		}
		ifs[p.HostIfname] = true
		for _, ip := range p.IPs {
			want[ip.Unmap()] = true
		}
	}
	eps, err := f.Endpoints()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for ip := range eps {
		if !want[ip] {
			errs = append(errs, f.RemoveEndpoint(ip))
		}
	}
	f.mu.Lock()
	var stale []string
	for name, a := range f.attached {
		if a.prog == fastpathProgFromPod && !ifs[name] {
			stale = append(stale, name)
		}
	}
	f.mu.Unlock()
	for _, name := range stale {
		errs = append(errs, f.Detach(name))
	}
	return errors.Join(errs...)
}

func endpointKey(ip netip.Addr) fastpathEndpointKey {
	b := ip.As16() // IPv4 becomes IPv4-mapped, as the C side builds it
	var k fastpathEndpointKey
	for i := range k.Addr {
		k.Addr[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return k
}

func keyAddr(k fastpathEndpointKey) netip.Addr {
	var b [16]byte
	for i, w := range k.Addr {
		binary.NativeEndian.PutUint32(b[4*i:], w)
	}
	return netip.AddrFrom16(b).Unmap()
}

// UpsertEndpoint writes (or replaces) the endpoint for a pod address.
func (f *Fastpath) UpsertEndpoint(ip netip.Addr, ep Endpoint) error {
	if !ip.IsValid() {
		return errors.New("bpf: endpoint address is invalid; pass the pod's IP")
	}
	if ep.HostIfindex <= 0 {
		return fmt.Errorf("bpf: endpoint %s: HostIfindex %d must be the host veth's index", ip, ep.HostIfindex)
	}
	if len(ep.PodMAC) != 6 || len(ep.HostMAC) != 6 {
		return fmt.Errorf("bpf: endpoint %s: PodMAC %q and HostMAC %q must be 6-byte MACs", ip, ep.PodMAC, ep.HostMAC)
	}
	v := fastpathEndpoint{Ifindex: uint32(ep.HostIfindex)}
	copy(v.PodMac[:], ep.PodMAC)
	copy(v.HostMac[:], ep.HostMAC)
	k := endpointKey(ip)
	if err := f.objs.Endpoints.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: write endpoint %s: %w", ip, err)
	}
	return nil
}

// RemoveEndpoint deletes a pod address's endpoint and its counters. Removing
// an absent entry is not an error.
func (f *Fastpath) RemoveEndpoint(ip netip.Addr) error {
	k := endpointKey(ip)
	var errs []error
	if err := f.objs.Endpoints.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("bpf: delete endpoint %s: %w", ip, err))
	}
	if err := f.objs.PodCounters.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("bpf: delete counters of %s: %w", ip, err))
	}
	return errors.Join(errs...)
}

func prefixKey(p netip.Prefix) fastpathPodPrefix {
	p = p.Masked()
	k := fastpathPodPrefix{Prefixlen: uint32(p.Bits())}
	if p.Addr().Is4() {
		k.Prefixlen += 96 // stored IPv4-mapped
	}
	k.Addr = endpointKey(p.Addr()).Addr
	return k
}

// SetPodPrefixes replaces the set of destination prefixes that may be
// forwarded by FIB lookup: the cluster's pod CIDRs (edge pools, ENI pod
// vSwitches). Destinations outside them (ClusterIPs, the internet) always go
// through the stack, where kube-proxy and masquerading live. Local pods in
// the endpoint map are redirected regardless.
func (f *Fastpath) SetPodPrefixes(prefixes []netip.Prefix) error {
	want := map[fastpathPodPrefix]bool{}
	for _, p := range prefixes {
		if !p.IsValid() {
			return fmt.Errorf("bpf: pod prefix %q is invalid; pass CIDRs like 10.244.0.0/16", p)
		}
		want[prefixKey(p)] = true
	}
	var have []fastpathPodPrefix
	var k fastpathPodPrefix
	var v uint8
	it := f.objs.PodPrefixes.Iterate()
	for it.Next(&k, &v) {
		have = append(have, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("bpf: list pod prefixes: %w", err)
	}
	for _, k := range have {
		if !want[k] {
			if err := f.objs.PodPrefixes.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("bpf: delete pod prefix: %w", err)
			}
		}
	}
	for k := range want {
		one := uint8(1)
		if err := f.objs.PodPrefixes.Update(&k, &one, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("bpf: write pod prefix: %w", err)
		}
	}
	return nil
}

// PodPrefixes lists the prefixes set by SetPodPrefixes.
func (f *Fastpath) PodPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	var k fastpathPodPrefix
	var v uint8
	it := f.objs.PodPrefixes.Iterate()
	for it.Next(&k, &v) {
		a := keyAddr(fastpathEndpointKey{Addr: k.Addr})
		bits := int(k.Prefixlen)
		if a.Is4() {
			bits -= 96
		}
		out = append(out, netip.PrefixFrom(a, bits))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("bpf: list pod prefixes: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

// Endpoints returns every endpoint in the map.
func (f *Fastpath) Endpoints() (map[netip.Addr]Endpoint, error) {
	out := map[netip.Addr]Endpoint{}
	var k fastpathEndpointKey
	var v fastpathEndpoint
	it := f.objs.Endpoints.Iterate()
	for it.Next(&k, &v) {
		out[keyAddr(k)] = Endpoint{
			HostIfindex: int(v.Ifindex),
			PodMAC:      append(net.HardwareAddr(nil), v.PodMac[:]...),
			HostMAC:     append(net.HardwareAddr(nil), v.HostMac[:]...),
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("bpf: list endpoints: %w", err)
	}
	return out, nil
}

// SetEnabled switches the fast path on or off at run time without detaching:
// when off, every packet goes to the kernel stack untouched.
func (f *Fastpath) SetEnabled(on bool) error {
	var cfg fastpathConfig
	if on {
		cfg.Enabled = 1
	}
	if err := f.objs.Settings.Update(uint32(0), &cfg, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: switch fast path enabled=%v: %w", on, err)
	}
	return nil
}

// Enabled reports the run-time switch.
func (f *Fastpath) Enabled() (bool, error) {
	var cfg fastpathConfig
	if err := f.objs.Settings.Lookup(uint32(0), &cfg); err != nil {
		return false, fmt.Errorf("bpf: read fast path switch: %w", err)
	}
	return cfg.Enabled != 0, nil
}

// Close detaches every program and frees the maps. Traffic falls back to the
// kernel stack.
func (f *Fastpath) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	var errs []error
	for name := range f.attached {
		errs = append(errs, f.detachLocked(name))
	}
	errs = append(errs, f.objs.Close())
	return errors.Join(errs...)
}

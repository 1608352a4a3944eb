package bgp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/strata-net/strata/internal/nlretry"
	"github.com/strata-net/strata/internal/nsutil"
	"github.com/strata-net/strata/internal/rtproto"
)

// batchSize is how many route messages go into one sendmsg. The kernel
// handles the whole buffer in one call and queues one ack per message, so a
// batch costs one round trip instead of batchSize.
const batchSize = 2000

// Installer programs learned routes into a kernel routing table, stamped
// with rtproto.BGP. It writes RTM_NEWROUTE/RTM_DELROUTE requests itself and
// sends them in batches over one netlink socket.
type Installer struct {
	nsPath string
	table  int

	repMu sync.Mutex
	rep   InstallReport

	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte
	rx  []byte
}

// NewInstaller opens a netlink socket in the namespace at nsPath (empty: the
// current one) for routing table table (0: main).
func NewInstaller(nsPath string, table int) (*Installer, error) {
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	in := &Installer{nsPath: nsPath, table: table, fd: -1, rx: make([]byte, 1<<20)}
	open := func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("open netlink socket: %w", err)
		}
		// Room for a whole batch of acks (and errors) without ENOBUFS.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
		_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			_ = unix.Close(fd)
			return fmt.Errorf("bind netlink socket: %w", err)
		}
		in.fd = fd
		return nil
	}
	var err error
	if nsPath == "" {
		err = open()
	} else {
		err = nsutil.NS{Name: nsPath, Path: nsPath}.Do(open)
	}
	if err != nil {
		return nil, fmt.Errorf("bgp installer: %w", err)
	}
	return in, nil
}

// Close releases the socket. Installed routes stay.
func (in *Installer) Close() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.fd < 0 {
		return nil
	}
	err := unix.Close(in.fd)
	in.fd = -1
	return err
}

// Apply installs routes with next hops (replacing what is there, with ECMP
// for several next hops) and deletes routes without next hops.
func (in *Installer) Apply(routes []Route) error {
	_, err := in.apply(routes)
	return err
}

// apply is Apply that also says which routes failed and why (a route of a
// batch the kernel never saw counts as failed with the batch's error).
func (in *Installer) apply(routes []Route) (map[netip.Prefix]error, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	failed := map[netip.Prefix]error{}
	if in.fd < 0 {
		err := errors.New("bgp installer: closed")
		for _, r := range routes {
			failed[r.Prefix.Masked()] = err
		}
		return failed, err
	}
	var errs []error
	for start := 0; start < len(routes); start += batchSize {
		end := min(start+batchSize, len(routes))
		routeErrs, err := in.sendBatch(routes[start:end], failed)
		errs = append(errs, routeErrs...)
		if err != nil {
			// A socket error leaves the fate of the batch unknown: every
			// route in it counts as failed.
			errs = append(errs, err)
			for _, r := range routes[start:end] {
				if _, ok := failed[r.Prefix.Masked()]; !ok {
					failed[r.Prefix.Masked()] = err
				}
			}
		}
	}
	return failed, errors.Join(errs...)
}

// sendBatch writes one batch. It returns the per-route errors (also put in
// failed) and an error of the batch as a whole.
func (in *Installer) sendBatch(routes []Route, failed map[netip.Prefix]error) ([]error, error) {
	in.buf = in.buf[:0]
	first := in.seq + 1
	var errs []error
	var sent []int // index into routes per sequence number
	last := 0
	for i, r := range routes {
		in.seq++
		start := len(in.buf)
		var err error
		in.buf, err = appendRouteMsg(in.buf, r, in.table, in.seq)
		if err != nil {
			errs = append(errs, err)
			failed[r.Prefix.Masked()] = err
			in.seq-- // nothing sent under this number
			continue
		}
		// Only the last message asks for an ack: the kernel handles the
		// buffer in order and reports failures of the others anyway, so
		// that ack is a barrier and success costs no reply at all.
		binary.NativeEndian.PutUint16(in.buf[start+6:], binary.NativeEndian.Uint16(in.buf[start+6:])&^unix.NLM_F_ACK)
		last = start
		sent = append(sent, i)
	}
	n := int(in.seq - first + 1)
	if n <= 0 {
		return errs, nil
	}
	binary.NativeEndian.PutUint16(in.buf[last+6:], binary.NativeEndian.Uint16(in.buf[last+6:])|unix.NLM_F_ACK)
	if err := unix.Sendto(in.fd, in.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return errs, fmt.Errorf("bgp installer: send %d route messages: %w", n, err)
	}
	// Read errors until the barrier ack of the last message.
	for done := false; !done; {
		m, _, err := unix.Recvfrom(in.fd, in.rx, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return errs, fmt.Errorf("bgp installer: read acks of %d messages: %w", n, err)
		}
		msgs, err := syscall.ParseNetlinkMessage(in.rx[:m])
		if err != nil {
			return errs, fmt.Errorf("bgp installer: parse acks: %w", err)
		}
		for _, msg := range msgs {
			if msg.Header.Type != unix.NLMSG_ERROR || msg.Header.Seq < first || msg.Header.Seq > in.seq {
				continue
			}
			if msg.Header.Seq == in.seq {
				done = true
			}
			if len(msg.Data) < 4 {
				continue
			}
			code := -int32(binary.NativeEndian.Uint32(msg.Data[:4]))
			if code == 0 {
				continue
			}
			errno := unix.Errno(code)
			r := routes[sent[msg.Header.Seq-first]]
			if errno == unix.ESRCH && len(r.NextHops) == 0 {
				continue // deleting a route that is already gone
			}
			e := fmt.Errorf("bgp installer: %s via %v: %w", r.Prefix, r.NextHops, errno)
			errs = append(errs, e)
			failed[r.Prefix.Masked()] = e
		}
	}
	return errs, nil
}

// appendRouteMsg encodes one RTM_NEWROUTE (replace) or RTM_DELROUTE.
func appendRouteMsg(b []byte, r Route, table int, seq uint32) ([]byte, error) {
	p := r.Prefix.Masked()
	if !p.IsValid() {
		return b, fmt.Errorf("bgp installer: invalid prefix %v", r.Prefix)
	}
	family := byte(unix.AF_INET)
	if p.Addr().Is6() {
		family = unix.AF_INET6
	}
	for _, nh := range r.NextHops {
		if nh.Is4() != p.Addr().Is4() {
			return b, fmt.Errorf("bgp installer: %s: next hop %s is another address family", p, nh)
		}
	}
	start := len(b)
	typ := uint16(unix.RTM_NEWROUTE)
	flags := uint16(unix.NLM_F_REQUEST | unix.NLM_F_ACK | unix.NLM_F_CREATE | unix.NLM_F_REPLACE)
	scope, rtype := byte(unix.RT_SCOPE_UNIVERSE), byte(unix.RTN_UNICAST)
	if len(r.NextHops) == 0 {
		typ = unix.RTM_DELROUTE
		flags = unix.NLM_F_REQUEST | unix.NLM_F_ACK
		scope, rtype = unix.RT_SCOPE_NOWHERE, 0
	}
	tbl := byte(unix.RT_TABLE_UNSPEC)
	if table < 256 {
		tbl = byte(table)
	}
	b = binary.NativeEndian.AppendUint32(b, 0) // length, patched below
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = append(b, family, byte(p.Bits()), 0, 0, tbl, byte(rtproto.BGP), scope, rtype)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = appendAttr(b, unix.RTA_DST, p.Addr().AsSlice())
	b = appendAttr(b, unix.RTA_TABLE, binary.NativeEndian.AppendUint32(nil, uint32(table)))
	switch len(r.NextHops) {
	case 0:
	case 1:
		b = appendAttr(b, unix.RTA_GATEWAY, r.NextHops[0].AsSlice())
	default:
		var mp []byte
		for _, nh := range r.NextHops {
			gw := appendAttr(nil, unix.RTA_GATEWAY, nh.AsSlice())
			mp = binary.NativeEndian.AppendUint16(mp, uint16(8+len(gw))) // rtnh_len
			mp = append(mp, 0, 0)                                        // flags, hops (weight 1)
			mp = binary.NativeEndian.AppendUint32(mp, 0)                 // ifindex: resolved from the gateway
			mp = append(mp, gw...)
		}
		b = appendAttr(b, unix.RTA_MULTIPATH, mp)
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b, nil
}

func appendAttr(b []byte, typ uint16, data []byte) []byte {
	l := 4 + len(data)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for l%4 != 0 {
		b = append(b, 0)
		l++
	}
	return b
}

// Installed dumps the routes this installer owns (rtproto.BGP) in its table.
func (in *Installer) Installed() ([]Route, error) {
	var out []Route
	err := in.inNS(func(h *netlink.Handle) error {
		byPrefix := map[netip.Prefix]int{}
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			rs, err := nlretry.Dump(func() ([]netlink.Route, error) {
				return h.RouteListFiltered(fam, &netlink.Route{Table: in.table, Protocol: rtproto.BGP},
					netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
			})
			if err != nil {
				return fmt.Errorf("dump bgp routes: %w", err)
			}
			for _, r := range rs {
				if r.Dst == nil {
					continue
				}
				a, _ := netip.AddrFromSlice(r.Dst.IP)
				ones, _ := r.Dst.Mask.Size()
				p := netip.PrefixFrom(a.Unmap(), ones)
				var hops []netip.Addr
				if gw, ok := netip.AddrFromSlice(r.Gw); ok {
					hops = append(hops, gw.Unmap())
				}
				for _, nh := range r.MultiPath {
					if gw, ok := netip.AddrFromSlice(nh.Gw); ok {
						hops = append(hops, gw.Unmap())
					}
				}
				// IPv6 ECMP routes dump as one entry per sibling.
				if i, ok := byPrefix[p]; ok {
					out[i].NextHops = append(out[i].NextHops, hops...)
					continue
				}
				byPrefix[p] = len(out)
				out = append(out, Route{Prefix: p, NextHops: hops})
			}
		}
		return nil
	})
	return out, err
}

// Sync makes the table hold exactly want: it installs want and deletes every
// other rtproto.BGP route (leftovers of an earlier run).
func (in *Installer) Sync(want []Route) error {
	have, err := in.Installed()
	if err != nil {
		return err
	}
	keep := make(map[netip.Prefix]bool, len(want))
	for _, r := range want {
		keep[r.Prefix.Masked()] = true
	}
	ops := append([]Route(nil), want...)
	for _, r := range have {
		if !keep[r.Prefix] {
			ops = append(ops, Route{Prefix: r.Prefix})
		}
	}
	return in.Apply(ops)
}

// Flush deletes every rtproto.BGP route in the table.
func (in *Installer) Flush() error { return in.Sync(nil) }

func (in *Installer) inNS(fn func(*netlink.Handle) error) error {
	if in.nsPath == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		return fn(h)
	}
	return nsutil.NS{Name: in.nsPath, Path: in.nsPath}.Do(func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		return fn(h)
	})
}

// RouteSource is what RunInstaller follows: *Speaker.
type RouteSource interface {
	Watch(ctx context.Context, fn func([]Route))
	Learned() []Route
	GracefulRestartState() RestartState
}

// InstallOptions tune RunInstaller.
type InstallOptions struct {
	// Keep leaves the routes in place when ctx ends (graceful restart);
	// otherwise they are flushed.
	Keep bool
	// SweepStale removes rtproto.BGP routes nobody announces (an earlier
	// run's) once every configured peer has sent End-of-RIB, or when the
	// peers' graceful-restart time has passed since the start. Until then
	// they keep forwarding.
	SweepStale bool
	// Backoff paces the retries of a route that failed to install; the
	// zero value means 1 s doubling up to 60 s, with 10% jitter.
	Backoff wait.Backoff
	Log     *slog.Logger
}

// DefaultInstallBackoff is the retry pacing of a failed route.
var DefaultInstallBackoff = wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.1, Steps: 64, Cap: time.Minute}

// FailedRoute is a learned route the kernel refused, retried until it holds.
type FailedRoute struct {
	Prefix    netip.Prefix
	NextHops  []netip.Addr // empty: a delete that failed
	Error     string
	Attempts  int
	Since     time.Time
	NextRetry time.Time
}

// InstallReport is the installer's state for status and metrics.
type InstallReport struct {
	Failing []FailedRoute
	// ErrorsTotal counts every failed route write since start.
	ErrorsTotal uint64
	// StaleWaiting is true while routes of an earlier run are kept,
	// waiting for End-of-RIB or the restart time; Stale says how it went.
	StaleWaiting bool
	Stale        string
}

// Report returns the installer's current state.
func (in *Installer) Report() InstallReport {
	in.repMu.Lock()
	defer in.repMu.Unlock()
	r := in.rep
	r.Failing = slices.Clone(r.Failing)
	return r
}

type retryState struct {
	route    Route
	err      string
	attempts int
	since    time.Time
	next     time.Time
	backoff  wait.Backoff
}

// RunInstaller keeps the kernel in step with the source's learned routes
// until ctx ends. Changes that arrive while a batch is being written are
// coalesced per prefix into the next batch. A route the kernel refuses is
// retried with backoff until it holds or a newer change replaces it, and
// shows in Report meanwhile. See InstallOptions for stale routes and exit.
func RunInstaller(ctx context.Context, src RouteSource, in *Installer, opts InstallOptions) error {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	if opts.Backoff.Duration <= 0 {
		opts.Backoff = DefaultInstallBackoff
	}
	var mu sync.Mutex
	pending := map[netip.Prefix]Route{}
	kick := make(chan struct{}, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src.Watch(wctx, func(rs []Route) {
		mu.Lock()
		for _, r := range rs {
			pending[r.Prefix] = r
		}
		mu.Unlock()
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	start := time.Now()
	failing := map[netip.Prefix]*retryState{}
	var errorsTotal uint64
	report := func(staleWaiting bool, stale string) {
		fs := make([]FailedRoute, 0, len(failing))
		for p, st := range failing {
			fs = append(fs, FailedRoute{Prefix: p, NextHops: slices.Clone(st.route.NextHops), Error: st.err,
				Attempts: st.attempts, Since: st.since, NextRetry: st.next})
		}
		slices.SortFunc(fs, func(a, b FailedRoute) int { return comparePrefix(a.Prefix, b.Prefix) })
		in.repMu.Lock()
		in.rep = InstallReport{Failing: fs, ErrorsTotal: errorsTotal, StaleWaiting: staleWaiting, Stale: stale}
		in.repMu.Unlock()
	}
	staleWaiting, stale := opts.SweepStale, "not swept: this installer does not remove routes of an earlier run"
	if opts.SweepStale {
		stale = "keeping routes of an earlier run until every peer sends End-of-RIB or the restart time passes"
	}
	apply := func(batch []Route) {
		if len(batch) == 0 {
			return
		}
		failed, _ := in.apply(batch)
		now := time.Now()
		var newFailures, recovered int
		for _, r := range batch {
			p := r.Prefix.Masked()
			err, bad := failed[p]
			st := failing[p]
			if !bad {
				if st != nil {
					recovered++
					delete(failing, p)
				}
				continue
			}
			errorsTotal++
			if st == nil {
				st = &retryState{since: now, backoff: opts.Backoff}
				failing[p] = st
				newFailures++
			}
			st.route, st.err = r, err.Error()
			st.attempts++
			st.next = now.Add(st.backoff.Step())
		}
		if newFailures > 0 {
			log.Warn("bgp: kernel refused learned routes; retrying with backoff (see strata bgp peers)",
				"new", newFailures, "failing", len(failing), "example", firstError(failed))
		}
		if recovered > 0 {
			log.Info("bgp: learned routes installed after retries", "routes", recovered, "still_failing", len(failing))
		}
		report(staleWaiting, stale)
	}
	sweep := func(why string) {
		have, err := in.Installed()
		if err != nil {
			stale = "could not list routes to sweep: " + err.Error() + " (retrying)"
			report(staleWaiting, stale)
			return
		}
		want := src.Learned()
		keep := make(map[netip.Prefix]bool, len(want))
		for _, r := range want {
			keep[r.Prefix] = true
		}
		var gone []Route
		for _, r := range have {
			if !keep[r.Prefix] {
				gone = append(gone, Route{Prefix: r.Prefix})
			}
		}
		staleWaiting = false
		stale = fmt.Sprintf("%s at %s: removed %d stale routes", why, time.Now().UTC().Format(time.RFC3339), len(gone))
		log.Info("bgp: swept routes of an earlier run", "reason", why, "removed", len(gone))
		apply(gone)
		report(staleWaiting, stale)
	}
	report(staleWaiting, stale)
	var sweepC <-chan time.Time
	if opts.SweepStale {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		sweepC = t.C
	}
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			if opts.Keep {
				return nil
			}
			return in.Flush()
		case <-sweepC:
			if !staleWaiting {
				sweepC = nil
				break
			}
			st := src.GracefulRestartState()
			switch {
			case st.Peers > 0 && len(st.Waiting) == 0:
				sweep("every peer sent End-of-RIB")
			case time.Since(start) >= st.RestartTime:
				sweep(fmt.Sprintf("graceful-restart time %s passed (no End-of-RIB from %v)", st.RestartTime, st.Waiting))
			default:
				msg := fmt.Sprintf("keeping routes of an earlier run until End-of-RIB from %v or %s", st.Waiting,
					start.Add(st.RestartTime).UTC().Format(time.RFC3339))
				if st.Peers == 0 {
					msg = fmt.Sprintf("keeping routes of an earlier run: no peers configured yet; until %s", start.Add(st.RestartTime).UTC().Format(time.RFC3339))
				}
				if msg != stale {
					stale = msg
					report(staleWaiting, stale)
				}
			}
		case <-kick:
			mu.Lock()
			batch := make([]Route, 0, len(pending))
			for _, r := range pending {
				batch = append(batch, r)
			}
			clear(pending)
			mu.Unlock()
			apply(batch)
		case <-retry.C:
			now := time.Now()
			var due []Route
			for _, st := range failing {
				if !st.next.After(now) {
					due = append(due, st.route)
				}
			}
			apply(due)
		}
		// A newer change for a failing prefix supersedes its retry.
		mu.Lock()
		for p := range pending {
			delete(failing, p)
		}
		mu.Unlock()
		next := time.Hour
		for _, st := range failing {
			next = min(next, max(time.Until(st.next), 0))
		}
		if !retry.Stop() {
			select {
			case <-retry.C:
			default:
			}
		}
		retry.Reset(next)
	}
}

func firstError(m map[netip.Prefix]error) string {
	for _, e := range m {
		return e.Error()
	}
	return ""
}

package bgp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

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
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.fd < 0 {
		return errors.New("bgp installer: closed")
	}
	var errs []error
	for start := 0; start < len(routes); start += batchSize {
		end := min(start+batchSize, len(routes))
		if err := in.sendBatch(routes[start:end]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (in *Installer) sendBatch(routes []Route) error {
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
		return errors.Join(errs...)
	}
	binary.NativeEndian.PutUint16(in.buf[last+6:], binary.NativeEndian.Uint16(in.buf[last+6:])|unix.NLM_F_ACK)
	if err := unix.Sendto(in.fd, in.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return errors.Join(append(errs, fmt.Errorf("bgp installer: send %d route messages: %w", n, err))...)
	}
	// Read errors until the barrier ack of the last message.
	for done := false; !done; {
		m, _, err := unix.Recvfrom(in.fd, in.rx, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return errors.Join(append(errs, fmt.Errorf("bgp installer: read acks of %d messages: %w", n, err))...)
		}
		msgs, err := syscall.ParseNetlinkMessage(in.rx[:m])
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("bgp installer: parse acks: %w", err))...)
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
			errs = append(errs, fmt.Errorf("bgp installer: %s via %v: %w", r.Prefix, r.NextHops, errno))
		}
	}
	return errors.Join(errs...)
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

// RunInstaller keeps the kernel in step with the speaker's learned routes
// until ctx ends. Changes that arrive while a batch is being written are
// coalesced per prefix into the next batch. After settle it removes
// rtproto.BGP routes nobody announced (an earlier run's leftovers; waiting
// first keeps forwarding up across an agent restart). On exit the routes
// stay when keep is true (graceful restart) and are flushed otherwise.
func RunInstaller(ctx context.Context, s *Speaker, in *Installer, settle time.Duration, keep bool, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	var mu sync.Mutex
	pending := map[netip.Prefix]Route{}
	kick := make(chan struct{}, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.Watch(wctx, func(rs []Route) {
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
	var settleC <-chan time.Time
	if settle > 0 {
		t := time.NewTimer(settle)
		defer t.Stop()
		settleC = t.C
	}
	for {
		select {
		case <-ctx.Done():
			if keep {
				return nil
			}
			return in.Flush()
		case <-settleC:
			if err := in.Sync(s.Learned()); err != nil {
				log.Warn("bgp: remove stale kernel routes", "err", err)
			}
		case <-kick:
			mu.Lock()
			batch := make([]Route, 0, len(pending))
			for _, r := range pending {
				batch = append(batch, r)
			}
			clear(pending)
			mu.Unlock()
			if err := in.Apply(batch); err != nil {
				log.Warn("bgp: install learned routes", "routes", len(batch), "err", err)
			}
		}
	}
}

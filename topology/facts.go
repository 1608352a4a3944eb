package topology

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Location says where a node runs.
type Location string

const (
	LocationCloud Location = "cloud" // Alibaba ECS in a VPC
	LocationENS   Location = "ens"   // Alibaba Edge Node Service
	LocationIDC   Location = "idc"   // a customer data centre / edge site
)

// Interconnect says how a node's pool reaches the cloud VPC.
type Interconnect string

const (
	InterconnectLeasedLine Interconnect = "leased-line" // Express Connect: pod routes are exchanged (BGP)
	InterconnectInternet   Interconnect = "internet"    // L3-only WAN: node IPs meet, pod CIDRs do not
)

// ENIMode selects the cloud datapath when the node has ENIs.
type ENIMode string

const (
	ENIModeMultiIP   ENIMode = "multi-ip"  // pods take ENI secondary IPs (default)
	ENIModeExclusive ENIMode = "exclusive" // each pod gets a whole ENI
)

// Label and annotation keys. Labels are what operators declare; annotations
// are what the agent discovers and publishes (see Format).
const (
	LabelLocation     = "strata.io/location"     // cloud | ens | idc
	LabelPool         = "strata.io/pool"         // node pool name (DNS label)
	LabelInterconnect = "strata.io/interconnect" // leased-line | internet
	LabelENIMode      = "strata.io/eni-mode"     // multi-ip | exclusive
	// LabelWANGateway marks a node that may relay WAN traffic for pairs
	// where neither side is reachable from the internet (true | false).
	LabelWANGateway = "strata.io/wan-gateway"

	AnnotationUnderlayIPs  = "strata.io/underlay-ips" // comma-separated IPs, first is primary
	AnnotationWANIP        = "strata.io/wan-ip"       // one IP
	AnnotationVTEPMAC      = "strata.io/vtep-mac"     // 02:aa:bb:cc:dd:ee
	AnnotationVTEPPort     = "strata.io/vtep-port"    // 1-65535
	AnnotationPodCIDR      = "strata.io/pod-cidr"     // one CIDR (edge nodes)
	AnnotationPodPrefixes  = "strata.io/pod-prefixes" // comma-separated CIDRs (cloud: /32s or /28s)
	AnnotationProbeIP      = "strata.io/probe-ip"     // the node's reserved pod-side probe address
	AnnotationCapabilities = "strata.io/capabilities" // comma list: eni, eni-quota=N, ipvlan, tcx, bgp-peers=N
	AnnotationDatapath     = "strata.io/datapath"     // published by the agent: the chosen datapath (informational)
	// AnnotationWANPublicKey is the node's WireGuard public key (base64 of
	// 32 bytes), published by the agent; the private key never leaves the node.
	AnnotationWANPublicKey = "strata.io/wan-public-key"
	// AnnotationPublicEndpoint is ip:port where the internet reaches the
	// node's WAN device (an EIP, an ENS public IP, or a port forward on the
	// site router); declared by the operator or learned by the agent.
	// Without it the node is behind NAT: it initiates, with keepalives.
	AnnotationPublicEndpoint = "strata.io/public-endpoint"
)

// WANKeyLen is the length of a WireGuard public key in bytes.
const WANKeyLen = 32

// Capabilities are what the node can do.
type Capabilities struct {
	ENI      bool `json:"eni,omitempty"`
	ENIQuota int  `json:"eniQuota,omitempty"`
	IPVlan   bool `json:"ipvlan,omitempty"`
	TCX      bool `json:"tcx,omitempty"`
	BGPPeers int  `json:"bgpPeers,omitempty"` // BGP peers configured for this node
}

// NodeFacts is everything topology knows about one node apart from probes.
// A zero field means "not known"; Decide never assumes native for a node
// whose native facts are missing.
type NodeFacts struct {
	Name         string         `json:"name"`
	Location     Location       `json:"location,omitempty"`
	Pool         string         `json:"pool,omitempty"`
	Interconnect Interconnect   `json:"interconnect,omitempty"`
	ENIMode      ENIMode        `json:"eniMode,omitempty"`
	UnderlayIPs  []netip.Addr   `json:"underlayIPs,omitempty"`
	WANIP        netip.Addr     `json:"wanIP,omitzero"`    // informational: a WAN IP alone is not reachable from outside
	VTEPMAC      string         `json:"vtepMAC,omitempty"` // canonical lower-case form
	VTEPPort     uint16         `json:"vtepPort,omitempty"`
	PodCIDR      netip.Prefix   `json:"podCIDR,omitzero"`
	PodPrefixes  []netip.Prefix `json:"podPrefixes,omitempty"`
	ProbeIP      netip.Addr     `json:"probeIP,omitzero"`
	Capabilities Capabilities   `json:"capabilities,omitzero"`
	// WANGateway: the node may relay WAN traffic (label, operator-declared).
	WANGateway bool `json:"wanGateway,omitempty"`
	// WANPublicKey is the node's WireGuard public key, base64 (annotation).
	WANPublicKey string `json:"wanPublicKey,omitempty"`
	// PublicEndpoint is where the internet reaches the node's WAN device;
	// zero when it is not reachable from outside (behind NAT).
	PublicEndpoint netip.AddrPort `json:"publicEndpoint,omitzero"`
}

// PodAddrs is every pod prefix the node owns (the CIDR first).
func (f *NodeFacts) PodAddrs() []netip.Prefix {
	out := make([]netip.Prefix, 0, 1+len(f.PodPrefixes))
	if f.PodCIDR.IsValid() {
		out = append(out, f.PodCIDR)
	}
	return append(out, f.PodPrefixes...)
}

// Underlay is the node's primary underlay IP, or the zero Addr.
func (f *NodeFacts) Underlay() netip.Addr {
	if len(f.UnderlayIPs) == 0 {
		return netip.Addr{}
	}
	return f.UnderlayIPs[0]
}

// ProbeKind says what a probe measured.
type ProbeKind string

const (
	// ProbeNative: pod-side address to pod-side address, forced on the
	// native path. Feeds the health of the link between the two pools.
	ProbeNative ProbeKind = "native"
	// ProbeNodeIP: node IP reachability of the peer (memberlist liveness).
	// Memberlist already debounces (suspicion), so one result decides.
	ProbeNodeIP ProbeKind = "node-ip"
	// ProbeWAN: From to To through the WAN tunnel (the agent probes the
	// gateways every 100 ms). Feeds which gateways From may relay through.
	ProbeWAN ProbeKind = "wan"
)

// ProbeResult is one measurement reported by the prober.
type ProbeResult struct {
	From string    `json:"from"`
	To   string    `json:"to"`
	Kind ProbeKind `json:"kind"`
	OK   bool      `json:"ok"`
	At   time.Time `json:"at"`
}

// Facts is the whole input of Decide. Time comes in here: Decide never reads
// the clock.
type Facts struct {
	Now    time.Time     `json:"now"`
	Nodes  []NodeFacts   `json:"nodes"`
	Probes []ProbeResult `json:"probes,omitempty"` // in time order
	// Authority, when set, turns the pod prefix ownership checks on.
	Authority *Authority `json:"authority,omitempty"`
}

// FieldError is a malformed label or annotation.
type FieldError struct {
	Node, Key, Value, Want string
	Err                    error
}

func (e *FieldError) Error() string {
	msg := fmt.Sprintf("node %s: %s=%q is malformed: want %s", e.Node, e.Key, e.Value, e.Want)
	if e.Err != nil {
		msg += " (" + e.Err.Error() + ")"
	}
	return msg
}

func (e *FieldError) Unwrap() error { return e.Err }

// ParseNode builds a node's facts from its name, labels and annotations.
// Missing keys leave fields unknown; present but malformed values are errors
// naming the node, the key and the expected form. All errors are returned
// together, and on any error the returned facts must not be used.
func ParseNode(name string, labels, annotations map[string]string) (NodeFacts, error) {
	f := NodeFacts{Name: name}
	var errs []error
	bad := func(key, val, want string, err error) {
		errs = append(errs, &FieldError{Node: name, Key: key, Value: val, Want: want, Err: err})
	}
	if name == "" {
		return f, errors.New("node name is empty: every node needs its Kubernetes name")
	}
	if v, ok := labels[LabelLocation]; ok {
		switch l := Location(v); l {
		case LocationCloud, LocationENS, LocationIDC:
			f.Location = l
		default:
			bad(LabelLocation, v, "one of cloud, ens, idc", nil)
		}
	}
	if v, ok := labels[LabelPool]; ok {
		if !validPoolName(v) {
			bad(LabelPool, v, "a DNS label: 1-63 of a-z, 0-9, '-', not starting or ending with '-'", nil)
		} else {
			f.Pool = v
		}
	}
	if v, ok := labels[LabelInterconnect]; ok {
		switch ic := Interconnect(v); ic {
		case InterconnectLeasedLine, InterconnectInternet:
			f.Interconnect = ic
		default:
			bad(LabelInterconnect, v, "one of leased-line, internet", nil)
		}
	}
	if v, ok := labels[LabelENIMode]; ok {
		switch m := ENIMode(v); m {
		case ENIModeMultiIP, ENIModeExclusive:
			f.ENIMode = m
		default:
			bad(LabelENIMode, v, "one of multi-ip, exclusive", nil)
		}
	}
	if v, ok := labels[LabelWANGateway]; ok {
		switch strings.TrimSpace(v) {
		case "true":
			f.WANGateway = true
		case "false":
		default:
			bad(LabelWANGateway, v, "true or false", nil)
		}
	}
	if v, ok := annotations[AnnotationWANPublicKey]; ok {
		if err := checkWANKey(strings.TrimSpace(v)); err != nil {
			bad(AnnotationWANPublicKey, v, "the node's WireGuard public key, base64 of 32 bytes (44 characters ending in '='), as the agent publishes it", err)
		} else {
			f.WANPublicKey = strings.TrimSpace(v)
		}
	}
	if v, ok := annotations[AnnotationPublicEndpoint]; ok {
		if ep, err := parsePublicEndpoint(v); err != nil {
			bad(AnnotationPublicEndpoint, v, "ip:port reachable from the internet, e.g. 203.0.113.11:51871 or [2001:db8::1]:51871 (leave it out when the node is behind NAT)", err)
		} else {
			f.PublicEndpoint = ep
		}
	}
	if v, ok := annotations[AnnotationUnderlayIPs]; ok {
		for _, s := range splitList(v) {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				bad(AnnotationUnderlayIPs, v, "comma-separated IP addresses, e.g. 10.0.1.11,fd00::11", err)
				break
			}
			f.UnderlayIPs = append(f.UnderlayIPs, a)
		}
	}
	parseAddr := func(key string, dst *netip.Addr) {
		if v, ok := annotations[key]; ok {
			a, err := netip.ParseAddr(strings.TrimSpace(v))
			if err != nil || a.Zone() != "" {
				bad(key, v, "one IP address, e.g. 203.0.113.7", err)
				return
			}
			*dst = a
		}
	}
	parseAddr(AnnotationWANIP, &f.WANIP)
	parseAddr(AnnotationProbeIP, &f.ProbeIP)
	if v, ok := annotations[AnnotationVTEPMAC]; ok {
		hw, err := net.ParseMAC(strings.TrimSpace(v))
		if err != nil || len(hw) != 6 {
			bad(AnnotationVTEPMAC, v, "a 48-bit MAC, e.g. 02:42:ac:11:00:02", err)
		} else {
			f.VTEPMAC = hw.String()
		}
	}
	if v, ok := annotations[AnnotationVTEPPort]; ok {
		p, err := strconv.ParseUint(strings.TrimSpace(v), 10, 16)
		if err != nil || p == 0 {
			bad(AnnotationVTEPPort, v, "a UDP port 1-65535, e.g. 4789", err)
		} else {
			f.VTEPPort = uint16(p)
		}
	}
	if v, ok := annotations[AnnotationPodCIDR]; ok {
		p, err := netip.ParsePrefix(strings.TrimSpace(v))
		if err != nil || p != p.Masked() {
			bad(AnnotationPodCIDR, v, "one network prefix with host bits zero, e.g. 10.244.1.0/24", err)
		} else {
			f.PodCIDR = p
		}
	}
	if v, ok := annotations[AnnotationPodPrefixes]; ok {
		for _, s := range splitList(v) {
			p, err := netip.ParsePrefix(s)
			if err != nil || p != p.Masked() {
				bad(AnnotationPodPrefixes, v, "comma-separated prefixes with host bits zero, e.g. 10.0.64.5/32,10.0.64.16/28", err)
				f.PodPrefixes = nil
				break
			}
			f.PodPrefixes = append(f.PodPrefixes, p)
		}
	}
	if v, ok := annotations[AnnotationCapabilities]; ok {
		c, err := parseCapabilities(v)
		if err != nil {
			bad(AnnotationCapabilities, v, "comma list of eni, eni-quota=N, ipvlan, tcx, bgp-peers=N", err)
		} else {
			f.Capabilities = c
		}
	}
	return f, errors.Join(errs...)
}

// checkWANKey accepts the standard base64 of exactly WANKeyLen bytes, the
// form WireGuard tools print.
func checkWANKey(s string) error {
	enc := base64.StdEncoding.Strict()
	if s == "" {
		return errors.New("empty")
	}
	if want := enc.EncodedLen(WANKeyLen); len(s) != want {
		return fmt.Errorf("%d characters, want %d (%d bytes)", len(s), want, WANKeyLen)
	}
	var buf [WANKeyLen + 2]byte // no allocation: checked for every node
	n, err := enc.Decode(buf[:], []byte(s))
	if err != nil {
		return err
	}
	if n != WANKeyLen {
		return fmt.Errorf("decodes to %d bytes, want %d", n, WANKeyLen)
	}
	return nil
}

// parsePublicEndpoint parses ip:port and refuses what no peer on the
// internet could send to: port 0, the unspecified, loopback, multicast or
// link-local addresses, and zones. IPv4-mapped IPv6 is unmapped.
func parsePublicEndpoint(v string) (netip.AddrPort, error) {
	ep, err := netip.ParseAddrPort(strings.TrimSpace(v))
	if err != nil {
		return netip.AddrPort{}, err
	}
	ep = netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())
	if err := checkPublicEndpoint(ep); err != nil {
		return netip.AddrPort{}, err
	}
	return ep, nil
}

func checkPublicEndpoint(ep netip.AddrPort) error {
	a := ep.Addr()
	switch {
	case !a.IsValid():
		return errors.New("no address")
	case ep.Port() == 0:
		return errors.New("port 0")
	case a.Zone() != "":
		return errors.New("an address with a zone is not reachable from the internet")
	case a.Is4In6():
		return errors.New("IPv4-mapped IPv6: give the IPv4 address")
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast():
		return fmt.Errorf("%s is not an address a peer can send to", a)
	case a.Is4() && a.As4()[0] == 0, a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%s is not an address a peer can send to", a)
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func validPoolName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}

func parseCapabilities(v string) (Capabilities, error) {
	var c Capabilities
	seen := map[string]bool{}
	for _, tok := range splitList(v) {
		k, val, hasVal := strings.Cut(tok, "=")
		if seen[k] {
			return Capabilities{}, fmt.Errorf("%q given twice", k)
		}
		seen[k] = true
		num := func() (int, error) {
			if !hasVal {
				return 0, fmt.Errorf("%s needs =N", k)
			}
			n, err := strconv.ParseUint(val, 10, 16)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", k, err)
			}
			return int(n), nil
		}
		flag := func() error {
			if hasVal {
				return fmt.Errorf("%s takes no value", k)
			}
			return nil
		}
		var err error
		switch k {
		case "eni":
			c.ENI, err = true, flag()
		case "ipvlan":
			c.IPVlan, err = true, flag()
		case "tcx":
			c.TCX, err = true, flag()
		case "eni-quota":
			c.ENIQuota, err = num()
		case "bgp-peers":
			c.BGPPeers, err = num()
		default:
			err = fmt.Errorf("unknown capability %q", k)
		}
		if err != nil {
			return Capabilities{}, err
		}
	}
	return c, nil
}

func formatCapabilities(c Capabilities) string {
	var parts []string
	if c.ENI {
		parts = append(parts, "eni")
	}
	if c.ENIQuota > 0 {
		parts = append(parts, "eni-quota="+strconv.Itoa(c.ENIQuota))
	}
	if c.IPVlan {
		parts = append(parts, "ipvlan")
	}
	if c.TCX {
		parts = append(parts, "tcx")
	}
	if c.BGPPeers > 0 {
		parts = append(parts, "bgp-peers="+strconv.Itoa(c.BGPPeers))
	}
	return strings.Join(parts, ",")
}

// Format is ParseNode's inverse: the labels and annotations that carry f.
// Unknown (zero) fields are left out, so Format then ParseNode gives f back.
func Format(f NodeFacts) (labels, annotations map[string]string) {
	labels, annotations = map[string]string{}, map[string]string{}
	set := func(m map[string]string, k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set(labels, LabelLocation, string(f.Location))
	set(labels, LabelPool, f.Pool)
	set(labels, LabelInterconnect, string(f.Interconnect))
	set(labels, LabelENIMode, string(f.ENIMode))
	if f.WANGateway {
		labels[LabelWANGateway] = "true"
	}
	set(annotations, AnnotationWANPublicKey, f.WANPublicKey)
	if f.PublicEndpoint.IsValid() {
		annotations[AnnotationPublicEndpoint] = f.PublicEndpoint.String()
	}
	join := func(n int, at func(int) string) string {
		s := make([]string, n)
		for i := range n {
			s[i] = at(i)
		}
		return strings.Join(s, ",")
	}
	set(annotations, AnnotationUnderlayIPs, join(len(f.UnderlayIPs), func(i int) string { return f.UnderlayIPs[i].String() }))
	if f.WANIP.IsValid() {
		annotations[AnnotationWANIP] = f.WANIP.String()
	}
	if f.ProbeIP.IsValid() {
		annotations[AnnotationProbeIP] = f.ProbeIP.String()
	}
	set(annotations, AnnotationVTEPMAC, f.VTEPMAC)
	if f.VTEPPort != 0 {
		annotations[AnnotationVTEPPort] = strconv.Itoa(int(f.VTEPPort))
	}
	if f.PodCIDR.IsValid() {
		annotations[AnnotationPodCIDR] = f.PodCIDR.String()
	}
	set(annotations, AnnotationPodPrefixes, join(len(f.PodPrefixes), func(i int) string { return f.PodPrefixes[i].String() }))
	set(annotations, AnnotationCapabilities, formatCapabilities(f.Capabilities))
	return labels, annotations
}

// missingNative lists the facts a node lacks for the native path; missing
// overlay facts are reported by missingOverlay. Both are sorted.
func (f *NodeFacts) missingBase() []string {
	var m []string
	if f.Location == "" {
		m = append(m, LabelLocation)
	}
	if f.Pool == "" {
		m = append(m, LabelPool)
	}
	if len(f.UnderlayIPs) == 0 {
		m = append(m, AnnotationUnderlayIPs)
	}
	if !f.PodCIDR.IsValid() && len(f.PodPrefixes) == 0 {
		m = append(m, AnnotationPodCIDR+" or "+AnnotationPodPrefixes)
	}
	return m
}

func (f *NodeFacts) missingOverlay() []string {
	var m []string
	if f.VTEPMAC == "" {
		m = append(m, AnnotationVTEPMAC)
	}
	if f.VTEPPort == 0 {
		m = append(m, AnnotationVTEPPort)
	}
	return m
}

func (f *NodeFacts) missingNative() []string {
	var m []string
	if !f.ProbeIP.IsValid() {
		m = append(m, AnnotationProbeIP)
	} else if !f.probeInPodSpace() {
		// A probe from outside the pod space would not test the pod path.
		m = append(m, AnnotationProbeIP+" inside the pod addresses")
	}
	if f.Location != LocationCloud && f.Interconnect == "" {
		m = append(m, LabelInterconnect)
	}
	return m
}

func (f *NodeFacts) probeInPodSpace() bool {
	if f.PodCIDR.IsValid() && f.PodCIDR.Contains(f.ProbeIP) {
		return true
	}
	for _, p := range f.PodPrefixes {
		if p.Contains(f.ProbeIP) {
			return true
		}
	}
	return false
}

func cloneFacts(f NodeFacts) NodeFacts {
	f.UnderlayIPs = slices.Clone(f.UnderlayIPs)
	f.PodPrefixes = slices.Clone(f.PodPrefixes)
	return f
}

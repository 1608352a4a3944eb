package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"time"
)

// Config starts a Speaker.
type Config struct {
	// RouterID is the BGP identifier (an IPv4 address).
	RouterID netip.Addr
	// ASN is the local autonomous system number.
	ASN uint32
	// ListenPort is the TCP port to accept sessions on. 0 means do not
	// listen (the speaker only dials out); BGP's 179 is only used when asked.
	ListenPort int
	// ListenAddresses restricts the listener; empty means all addresses.
	ListenAddresses []string
	// NetNS, when set, is the path of a network namespace the listening
	// sockets are created in (see docs/bgp.md: in-process speakers in test
	// namespaces must use passive peers, because gobgp dials from goroutines
	// that Strata cannot pin to a namespace).
	NetNS string
	// PodCIDRs are the node's own pod prefixes: a peer's route inside one
	// is rejected (see JudgeImport).
	PodCIDRs []netip.Prefix
	// UnderlayIPs are the node's underlay addresses: a peer's route that
	// overlaps the subnet one of them lives in is rejected.
	UnderlayIPs []netip.Addr
	// ProtectedRefresh is how often the node's interface addresses are
	// read again for the import policy (0: 5 s).
	ProtectedRefresh time.Duration
}

// Validate checks the configuration and names the field to fix.
func (c Config) Validate() error {
	var errs []error
	if !c.RouterID.Is4() {
		errs = append(errs, fmt.Errorf("RouterID %q: must be an IPv4 address (use the node's IPv4 address)", c.RouterID))
	}
	if err := ValidateASN(c.ASN); err != nil {
		errs = append(errs, fmt.Errorf("ASN: %w", err))
	}
	if c.ListenPort < 0 || c.ListenPort > 65535 {
		errs = append(errs, fmt.Errorf("ListenPort %d: must be 0 (no listener) or 1..65535", c.ListenPort))
	}
	for i, p := range c.PodCIDRs {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("PodCIDRs[%d] %q: not a CIDR", i, p))
		}
	}
	return errors.Join(errs...)
}

// ValidateASN rejects the reserved ASNs 0 and 4294967295.
func ValidateASN(asn uint32) error {
	if asn == 0 || asn == 4294967295 {
		return fmt.Errorf("%d is reserved: use 1..4294967294 (private ranges 64512-65534, 4200000000-4294967294)", asn)
	}
	return nil
}

// defaultHoldTime is the hold time of a peer that sets none (RFC 4271's
// suggested 90 s).
const defaultHoldTime = 90 * time.Second

// defaultRestartTime is the graceful-restart time of a peer that sets none.
const defaultRestartTime = 120 * time.Second

// PeerConfig describes one BGP neighbour.
type PeerConfig struct {
	Address netip.Addr
	ASN     uint32
	// LocalASN overrides the speaker's ASN for this session (0: speaker's).
	LocalASN uint32
	// Password enables TCP MD5 signatures (RFC 2385) when non-empty.
	Password string
	// HoldTime and KeepaliveTime: zero means 90 s and a third of the hold time.
	HoldTime      time.Duration
	KeepaliveTime time.Duration
	// ConnectRetry: zero means 5 s.
	ConnectRetry time.Duration
	// GracefulRestart advertises the GR capability with RestartTime (zero
	// means 120 s), so peers keep our routes while the agent restarts.
	GracefulRestart bool
	RestartTime     time.Duration
	// MultihopTTL > 1 enables eBGP multihop with that TTL.
	MultihopTTL uint8
	// Passive waits for the peer to connect instead of dialling.
	Passive bool
	// RemotePort is the peer's port when it is not 179.
	RemotePort uint16
	// LocalAddress is the source address to dial from (optional).
	LocalAddress netip.Addr
	// Import opens the built-in import rejections for some prefixes.
	Import ImportPolicy
	// MaxPrefixes is how many prefixes the peer may send (0: 10000). One
	// more and gobgp closes the session with a Cease and keeps it down.
	MaxPrefixes uint32
}

// DefaultMaxPrefixes is a peer's prefix limit when none is set.
const DefaultMaxPrefixes = 10000

// maxPrefixes is the effective limit.
func (p PeerConfig) maxPrefixes() uint32 {
	if p.MaxPrefixes == 0 {
		return DefaultMaxPrefixes
	}
	return p.MaxPrefixes
}

// Equal reports whether two peer configurations are the same.
func (p PeerConfig) Equal(o PeerConfig) bool {
	return p.sameSession(o) && p.Import.equal(o.Import)
}

// sameSession reports whether p and o differ at most in their import
// policy, which the speaker applies without touching the session.
func (p PeerConfig) sameSession(o PeerConfig) bool {
	a, b := p, o
	a.Import, b.Import = ImportPolicy{}, ImportPolicy{}
	return reflect.DeepEqual(a, b)
}

// Validate checks a peer and names the field to fix.
func (p PeerConfig) Validate() error {
	var errs []error
	if !p.Address.IsValid() || p.Address.IsUnspecified() || p.Address.IsMulticast() {
		errs = append(errs, fmt.Errorf("address %q: must be a unicast IPv4 or IPv6 address", p.Address))
	}
	if err := ValidateASN(p.ASN); err != nil {
		errs = append(errs, fmt.Errorf("ASN: %w", err))
	}
	if p.LocalASN != 0 {
		if err := ValidateASN(p.LocalASN); err != nil {
			errs = append(errs, fmt.Errorf("LocalASN: %w", err))
		}
	}
	if p.HoldTime != 0 && p.HoldTime < 3*time.Second {
		errs = append(errs, fmt.Errorf("HoldTime %s: must be 0 (default 90s) or at least 3s (RFC 4271)", p.HoldTime))
	}
	if p.HoldTime > 65535*time.Second {
		errs = append(errs, fmt.Errorf("HoldTime %s: must be at most 65535s", p.HoldTime))
	}
	hold := p.HoldTime
	if hold == 0 {
		hold = defaultHoldTime
	}
	if p.KeepaliveTime < 0 || p.KeepaliveTime != 0 && hold > 0 && p.KeepaliveTime >= hold {
		errs = append(errs, fmt.Errorf("KeepaliveTime %s: must be 0 (a third of the hold time) or positive and shorter than the hold time %s (a third is usual)", p.KeepaliveTime, hold))
	}
	if p.ConnectRetry < 0 {
		errs = append(errs, fmt.Errorf("ConnectRetry %s: must be 0 (default 5s) or positive", p.ConnectRetry))
	}
	if len(p.Password) > 80 {
		errs = append(errs, fmt.Errorf("password: TCP MD5 keys are at most 80 bytes, got %d", len(p.Password)))
	}
	if p.RestartTime < 0 || p.RestartTime > 4095*time.Second {
		errs = append(errs, fmt.Errorf("RestartTime %s: must be 0 (default 120s) up to 4095s, what the GR capability holds", p.RestartTime))
	}
	if err := p.Import.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Advertisement is one prefix the node originates.
type Advertisement struct {
	Prefix netip.Prefix
	// NextHop: the zero value means next-hop self (the session's local
	// address).
	NextHop netip.Addr
	// Communities are RFC 1997 communities as ASN<<16|value.
	Communities []uint32
	// LocalPref is sent to iBGP peers when non-zero.
	LocalPref uint32
}

// Route is a learned destination with its best next hops: more than one means
// ECMP across peers that offered equally good paths. An empty NextHops means
// the destination is gone (withdrawn or its peers are down).
type Route struct {
	Prefix   netip.Prefix
	NextHops []netip.Addr
}

// SessionState is a peer's BGP FSM state.
type SessionState string

const (
	StateUnknown     SessionState = "Unknown"
	StateIdle        SessionState = "Idle"
	StateConnect     SessionState = "Connect"
	StateActive      SessionState = "Active"
	StateOpenSent    SessionState = "OpenSent"
	StateOpenConfirm SessionState = "OpenConfirm"
	StateEstablished SessionState = "Established"
)

// PeerStatus is what the speaker knows about one neighbour.
type PeerStatus struct {
	Address  netip.Addr
	ASN      uint32
	State    SessionState
	Since    time.Time
	Flaps    uint32
	Received uint64 // prefixes currently learned from the peer and accepted
	Accepted uint64 // gobgp's count of the peer's paths (before Strata's import policy)
	Sent     uint64 // prefixes advertised to the peer
	// Rejected counts the peer's prefixes the import policy keeps out of
	// the kernel, per reason; RejectedExample shows one per reason.
	Rejected        map[RejectReason]uint64
	RejectedExample map[RejectReason]string
	// MaxPrefixes is the peer's limit; OverLimit is true when gobgp closed
	// the session because the peer sent more, and keeps it down.
	MaxPrefixes uint32
	OverLimit   bool
	// BadUpdates counts paths from the peer that could not be decoded;
	// LastBadUpdate says what was wrong with the last one.
	BadUpdates    uint64
	LastBadUpdate string
	// Reason says why the session is not established, when known.
	Reason string
}

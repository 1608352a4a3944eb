// Package ecsemu is an emulator of the Alibaba Cloud ECS OpenAPI (RPC style,
// the subset Strata's cloud role uses) and of the ECS metadata service. The
// product talks to it with the real alibaba-cloud-sdk-go client, so it speaks
// the real wire format: signed query parameters in, JSON out, the real error
// codes and HTTP statuses. It models ENI quotas, IPs per ENI, vSwitch
// exhaustion, the asynchronous attach, idempotent ClientTokens, and injected
// faults (throttling, latency, time-outs, per-action errors). A LinkAttacher
// hook turns an attached ENI into a real kernel link in a lab.
//
// It lives under tests/ and must never be imported by product code.
package ecsemu

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// InstanceType is an ECS instance type's network capacity.
type InstanceType struct {
	ID string
	// ENIQuantity is the number of ENIs an instance may have, primary included.
	ENIQuantity int
	// IPsPerENI is the number of private IPv4 addresses per ENI, primary
	// included (EniPrivateIpAddressQuantity).
	IPsPerENI int
}

// VSwitch is a subnet of the VPC. As on ECS its gateway is not the first
// host but the first of the three reserved last addresses (x.x.x.253 of a
// /24, 10.0.79.253 of 10.0.64.0/20); the metadata service serves it.
type VSwitch struct {
	ID     string
	CIDR   string
	ZoneID string
}

// Instance is an ECS instance with its primary ENI.
type Instance struct {
	ID        string
	Type      string
	VSwitchID string
	PrimaryIP string // optional; else the first free address
	MAC       string // optional; else generated
}

// ActionFault makes an action fail with Code at Rate (0..1; 0 means always).
type ActionFault struct {
	Code string
	Rate float64
}

// Faults are injected on every RPC call.
type Faults struct {
	ThrottleRate float64 // share of calls answered with Throttling
	TimeoutRate  float64 // share of calls that hang (half of them after doing the work)
	Timeout      time.Duration
	Latency      time.Duration
	Actions      map[string]ActionFault
	// OmitENIs are left out of every DescribeNetworkInterfaces listing, as
	// an eventually consistent listing may do; the ENIs themselves stay, and
	// a Describe filtered by their NetworkInterfaceId still shows them.
	OmitENIs []string
	// OmitIPs are left out of the PrivateIpSets of every
	// DescribeNetworkInterfaces reply (listed or by ID); they stay assigned.
	OmitIPs []netip.Addr
	// TruncateListings > 0 ends every DescribeNetworkInterfaces listing
	// after that many ENIs: its last page carries no NextToken (or is a
	// short page) while TotalCount still counts every match.
	TruncateListings int
	// OmitENIMetadata are fields under network/interfaces/macs/<mac>/ (e.g.
	// "gateway") the metadata service answers 404 for, for every ENI.
	OmitENIMetadata []string
}

// Config configures an emulator.
type Config struct {
	AccessKeyID     string
	AccessKeySecret string
	// RAMRole, when set, is served by the metadata service; its temporary
	// credentials are accepted by the API.
	RAMRole       string
	RegionID      string
	VPCID         string
	VPCCIDR       string
	InstanceTypes []InstanceType
	VSwitches     []VSwitch
	Instances     []Instance
	// AttachDelay is how long Attaching/Detaching last.
	AttachDelay time.Duration
	Faults      Faults
	Attacher    LinkAttacher
	Seed        uint64
	Logger      *slog.Logger
}

// ENILink describes an ENI to a LinkAttacher.
type ENILink struct {
	ID          string
	MAC         net.HardwareAddr
	DeviceIndex int
}

// LinkAttacher makes an attached ENI real in a lab: typically a veth whose
// peer sits on the vSwitch bridge, with the ENI's MAC, in the node namespace.
type LinkAttacher interface {
	AttachLink(ctx context.Context, instanceID string, eni ENILink) error
	DetachLink(ctx context.Context, instanceID string, eni ENILink) error
}

// ENI states as ECS reports them.
const (
	StatusAvailable = "Available"
	StatusAttaching = "Attaching"
	StatusInUse     = "InUse"
	StatusDetaching = "Detaching"
)

// ENI is the emulator's view of one network interface.
type ENI struct {
	ID          string
	MAC         string
	VSwitchID   string
	InstanceID  string
	Status      string
	Type        string // Primary or Secondary
	PrimaryIP   netip.Addr
	Secondary   []netip.Addr
	Prefixes    []netip.Prefix
	Tags        map[string]string
	DeviceIndex int
	Created     time.Time
	seq         int
}

type vswitch struct {
	VSwitch
	prefix netip.Prefix
	used   map[netip.Addr]bool
	cursor netip.Addr
}

type instance struct {
	Instance
	primaryENI string
}

type cached struct {
	status int
	body   []byte
}

// Emulator is the API and metadata state. It is safe for concurrent use.
type Emulator struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	rng       *rand.Rand
	faults    Faults
	types     map[string]InstanceType
	vswitches map[string]*vswitch
	instances map[string]*instance
	enis      map[string]*ENI
	tokens    map[string]cached
	mdTokens  map[string]time.Time
	calls     map[string]int
	seq       int
	wg        sync.WaitGroup
	stsAK     string
	stsSK     string
	stsToken  string
	gates     map[string]*gate
}

// gate holds one call of an action (see Gate).
type gate struct {
	afterWork bool
	held      chan struct{}
	release   chan bool
	once      sync.Once
}

// Gate holds the next call of action that would be served normally: before
// its work (afterWork false) or after the work is done but before the
// answer (afterWork true). held is closed once the call is held, which lets a
// test kill the client at that exact moment. release(true) lets the call go
// on (if its client is still there); release(false) drops it, so a call held
// before its work is never done and one held after it stays done, unanswered.
func (e *Emulator) Gate(action string, afterWork bool) (held <-chan struct{}, release func(proceed bool)) {
	g := &gate{afterWork: afterWork, held: make(chan struct{}), release: make(chan bool, 1)}
	e.mu.Lock()
	if e.gates == nil {
		e.gates = map[string]*gate{}
	}
	e.gates[action] = g
	e.mu.Unlock()
	return g.held, func(proceed bool) { g.once.Do(func() { g.release <- proceed }) }
}

// hold blocks a gated call; false means drop it.
func (g *gate) hold(ctx context.Context) bool {
	close(g.held)
	select {
	case proceed := <-g.release:
		return proceed && ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}

// New builds an emulator from cfg. It fails on a malformed config, naming the
// field.
func New(cfg Config) (*Emulator, error) {
	if cfg.AccessKeyID == "" || cfg.AccessKeySecret == "" {
		return nil, fmt.Errorf("ecsemu: AccessKeyID and AccessKeySecret are required (the API checks signatures)")
	}
	if cfg.RegionID == "" {
		cfg.RegionID = "cn-hangzhou"
	}
	if cfg.VPCID == "" {
		cfg.VPCID = "vpc-strata"
	}
	if cfg.Faults.Timeout == 0 {
		cfg.Faults.Timeout = 3 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Emulator{
		cfg: cfg, log: log, faults: cfg.Faults,
		rng:       rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed)),
		types:     map[string]InstanceType{},
		vswitches: map[string]*vswitch{},
		instances: map[string]*instance{},
		enis:      map[string]*ENI{},
		tokens:    map[string]cached{},
		mdTokens:  map[string]time.Time{},
		calls:     map[string]int{},
		stsAK:     "STS." + cfg.AccessKeyID,
		stsSK:     cfg.AccessKeySecret + "-sts",
		stsToken:  "sts-token-" + cfg.AccessKeyID,
	}
	for _, t := range cfg.InstanceTypes {
		if t.ID == "" || t.ENIQuantity < 1 || t.IPsPerENI < 1 {
			return nil, fmt.Errorf("ecsemu: InstanceTypes entry %+v needs an ID, ENIQuantity >= 1 and IPsPerENI >= 1", t)
		}
		e.types[t.ID] = t
	}
	for _, v := range cfg.VSwitches {
		p, err := netip.ParsePrefix(v.CIDR)
		if err != nil || !p.Addr().Is4() || p.Bits() > 29 {
			return nil, fmt.Errorf("ecsemu: VSwitches %s: CIDR %q must be an IPv4 prefix of /29 or larger", v.ID, v.CIDR)
		}
		if v.ZoneID == "" {
			v.ZoneID = cfg.RegionID + "-h"
		}
		vs := &vswitch{VSwitch: v, prefix: p.Masked(), used: map[netip.Addr]bool{}}
		vs.cursor = vs.prefix.Addr() // take starts after it: the first host
		e.vswitches[v.ID] = vs
	}
	for _, in := range cfg.Instances {
		if _, ok := e.types[in.Type]; !ok {
			return nil, fmt.Errorf("ecsemu: Instances %s: Type %q is not in InstanceTypes", in.ID, in.Type)
		}
		vs, ok := e.vswitches[in.VSwitchID]
		if !ok {
			return nil, fmt.Errorf("ecsemu: Instances %s: VSwitchID %q is not in VSwitches", in.ID, in.VSwitchID)
		}
		eni := &ENI{ID: e.newID("eni-"), VSwitchID: vs.ID, InstanceID: in.ID, Status: StatusInUse,
			Type: "Primary", Tags: map[string]string{}, Created: time.Now().UTC()}
		if in.MAC != "" {
			hw, err := net.ParseMAC(in.MAC)
			if err != nil {
				return nil, fmt.Errorf("ecsemu: Instances %s: bad MAC %q: %w", in.ID, in.MAC, err)
			}
			eni.MAC = hw.String()
		} else {
			eni.MAC = e.newMAC()
		}
		if in.PrimaryIP != "" {
			a, err := netip.ParseAddr(in.PrimaryIP)
			if err != nil || !vs.prefix.Contains(a) || vs.used[a] {
				return nil, fmt.Errorf("ecsemu: Instances %s: PrimaryIP %q must be a free address of %s", in.ID, in.PrimaryIP, vs.CIDR)
			}
			vs.used[a] = true
			eni.PrimaryIP = a
		} else {
			ips := vs.take(1)
			if ips == nil {
				return nil, fmt.Errorf("ecsemu: Instances %s: vSwitch %s is full", in.ID, vs.ID)
			}
			eni.PrimaryIP = ips[0]
		}
		e.seq++
		eni.seq = e.seq
		e.enis[eni.ID] = eni
		e.instances[in.ID] = &instance{Instance: in, primaryENI: eni.ID}
	}
	return e, nil
}

// SetFaults replaces the injected faults.
func (e *Emulator) SetFaults(f Faults) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if f.Timeout == 0 {
		f.Timeout = 3 * time.Second
	}
	e.faults = f
}

// Calls returns how many RPC calls of action arrived (all actions when "").
func (e *Emulator) Calls(action string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if action != "" {
		return e.calls[action]
	}
	n := 0
	for _, c := range e.calls {
		n += c
	}
	return n
}

// ENIs returns a copy of every ENI, in creation order.
func (e *Emulator) ENIs() []ENI {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]ENI, 0, len(e.enis))
	for _, x := range e.enis {
		c := *x
		c.Secondary = slices.Clone(x.Secondary)
		c.Prefixes = slices.Clone(x.Prefixes)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// STSCredentials are the temporary credentials the metadata service hands
// out for the RAM role.
func (e *Emulator) STSCredentials() (ak, sk, token string) { return e.stsAK, e.stsSK, e.stsToken }

// Wait blocks until pending asynchronous attaches and detaches finish.
func (e *Emulator) Wait() { e.wg.Wait() }

func (e *Emulator) newID(prefix string) string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 20)
	for i := range b {
		b[i] = alphabet[e.rng.IntN(len(alphabet))]
	}
	return prefix + string(b)
}

func (e *Emulator) newMAC() string {
	for {
		m := fmt.Sprintf("00:16:3e:%02x:%02x:%02x", e.rng.IntN(256), e.rng.IntN(256), e.rng.IntN(256))
		dup := false
		for _, x := range e.enis {
			if x.MAC == m {
				dup = true
			}
		}
		if !dup {
			return m
		}
	}
}

// ECS reserves the first address and the last three of every vSwitch
// ("the first IP address and the last three IP addresses of each vSwitch
// CIDR block are reserved", Alibaba Cloud VPC API reference, CreateVSwitch:
// https://www.alibabacloud.com/help/en/vpc/developer-reference/api-vpc-2016-04-28-createvswitch;
// for 192.168.1.0/24 they are .0, .253, .254 and .255). The vSwitch gateway
// an instance sees in metadata (network/interfaces/macs/<mac>/gateway) is
// the first of those last three: .253 of a /24, and for any size the last
// address minus 2. The first host (.1) is an ordinary usable address.

// last is the vSwitch's last (broadcast) address.
func (v *vswitch) last() netip.Addr {
	a := v.prefix.Addr().As4()
	host := uint32(1)<<(32-v.prefix.Bits()) - 1
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// gateway is the vSwitch gateway: the last address minus 2 (see above).
func (v *vswitch) gateway() netip.Addr { return v.last().Prev().Prev() }

// capacity counts usable addresses: all but the first and the last three.
func (v *vswitch) capacity() int {
	return 1<<(32-v.prefix.Bits()) - 4
}

func (v *vswitch) available() int { return v.capacity() - len(v.used) }

// usable: inside the vSwitch, not its first address, below the gateway
// (the last three, gateway included, are reserved).
func (v *vswitch) usable(a netip.Addr) bool {
	return v.prefix.Contains(a) && a != v.prefix.Addr() && a.Less(v.gateway())
}

// take hands out n free addresses round-robin from the cursor, or nil.
func (v *vswitch) take(n int) []netip.Addr {
	if v.available() < n {
		return nil
	}
	var out []netip.Addr
	a := v.cursor
	for len(out) < n {
		a = a.Next()
		if !v.prefix.Contains(a) {
			a = v.prefix.Addr()
			continue
		}
		if v.usable(a) && !v.used[a] {
			v.used[a] = true
			out = append(out, a)
		}
	}
	v.cursor = a
	return out
}

// prefixFree says whether every address of the /28 p is usable and unused.
func (v *vswitch) prefixFree(p netip.Prefix) bool {
	if p.Bits() != 28 || !v.prefix.Contains(p.Addr()) {
		return false
	}
	a := p.Addr()
	for range 16 {
		if !v.usable(a) || v.used[a] {
			return false
		}
		a = a.Next()
	}
	return true
}

func (v *vswitch) takeThisPrefix(p netip.Prefix) {
	a := p.Addr()
	for range 16 {
		v.used[a] = true
		a = a.Next()
	}
}

// takePrefix hands out a free aligned /28, or false.
func (v *vswitch) takePrefix() (netip.Prefix, bool) {
	if v.prefix.Bits() > 28 {
		return netip.Prefix{}, false
	}
	for p := netip.PrefixFrom(v.prefix.Addr(), 28); p.Addr().IsValid() && v.prefix.Contains(p.Addr()); {
		if v.prefixFree(p) {
			v.takeThisPrefix(p)
			return p, true
		}
		next := p.Addr()
		for range 16 {
			next = next.Next()
		}
		p = netip.PrefixFrom(next, 28)
	}
	return netip.Prefix{}, false
}

func (v *vswitch) free(a netip.Addr) { delete(v.used, a) }

func (v *vswitch) freePrefix(p netip.Prefix) {
	a := p.Addr()
	for range 16 {
		delete(v.used, a)
		a = a.Next()
	}
}

// ---- HTTP ----

// DebugENIsPath serves every ENI as JSON ([]ENI), unsigned: it is the
// emulator's own window for tests and the lab, not an ECS API.
const DebugENIsPath = "/_emulator/enis"

// Handler serves the ECS RPC API at "/", the metadata service of the first
// instance at "/latest/" and of any instance at "/i/<instance-id>/latest/",
// and the test view of all ENIs at DebugENIsPath.
func (e *Emulator) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/latest/"):
			id := ""
			if len(e.cfg.Instances) > 0 {
				id = e.cfg.Instances[0].ID
			}
			e.serveMetadata(w, r, id, strings.TrimPrefix(r.URL.Path, "/latest/"))
		case r.URL.Path == DebugENIsPath:
			// the test-side view of the cloud, for accounting checks
			b, _ := json.Marshal(e.ENIs())
			e.writeJSON(w, http.StatusOK, b)
		case strings.HasPrefix(r.URL.Path, "/i/"):
			rest := strings.TrimPrefix(r.URL.Path, "/i/")
			id, p, ok := strings.Cut(rest, "/latest/")
			if !ok {
				http.NotFound(w, r)
				return
			}
			e.serveMetadata(w, r, id, p)
		default:
			e.serveRPC(w, r)
		}
	})
}

// APIError is an ECS error answer.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (a *APIError) Error() string { return a.Code + ": " + a.Message }

func apiErr(status int, code, format string, args ...any) *APIError {
	return &APIError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Error codes the emulator returns, as ECS names them.
const (
	CodeThrottling           = "Throttling"
	CodeENILimit             = "EniPerInstanceLimitExceeded"
	CodeIPCountExceeded      = "InvalidOperation.Ipv4CountExceeded"
	CodeIPNotEnough          = "InvalidVSwitchId.IpNotEnough"
	CodeInvalidENIState      = "InvalidOperation.InvalidEniState"
	CodeENINotFound          = "InvalidEniId.NotFound"
	CodeInstanceNotFound     = "InvalidInstanceId.NotFound"
	CodeVSwitchNotFound      = "InvalidVSwitchId.NotFound"
	CodeIPNotFound           = "InvalidIp.NotFound"
	CodeMissingParameter     = "MissingParameter"
	CodeInvalidParameter     = "InvalidParameter"
	CodeSignatureMismatch    = "SignatureDoesNotMatch"
	CodeAccessKeyNotFound    = "InvalidAccessKeyId.NotFound"
	CodeInvalidSecurityToken = "InvalidSecurityToken.Mismatch"
	CodeUnsupportedAction    = "InvalidAction.NotFound"
	CodeServiceUnavailable   = "ServiceUnavailable"
)

func (e *Emulator) requestID() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.ToUpper(fmt.Sprintf("%08X-%04X-%04X-%04X-%012X", e.rng.Uint32(), e.rng.Uint32()&0xffff,
		e.rng.Uint32()&0xffff, e.rng.Uint32()&0xffff, e.rng.Uint64()&0xffffffffffff))
}

func (e *Emulator) writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (e *Emulator) errorBody(a *APIError) []byte {
	b := marshal(map[string]string{
		"RequestId": e.requestID(), "HostId": "ecs.aliyuncs.com",
		"Code": a.Code, "Message": a.Message,
		"Recommend": "https://api.aliyun.com/troubleshoot?q=" + a.Code,
	})
	return b
}

func (e *Emulator) serveRPC(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		e.writeJSON(w, 400, e.errorBody(apiErr(400, CodeInvalidParameter, "cannot parse parameters: %v", err)))
		return
	}
	params := r.Form
	action := params.Get("Action")
	if action == "" {
		action = r.Header.Get("x-acs-action")
	}
	if err := e.verify(r.Method, params); err != nil {
		e.writeJSON(w, err.Status, e.errorBody(err))
		return
	}
	e.mu.Lock()
	e.calls[action]++
	f := e.faults
	throttle := f.ThrottleRate > 0 && e.rng.Float64() < f.ThrottleRate
	timeout := !throttle && f.TimeoutRate > 0 && e.rng.Float64() < f.TimeoutRate
	applyBeforeTimeout := e.rng.IntN(2) == 0
	var injected *APIError
	if af, ok := f.Actions[action]; ok && (af.Rate == 0 || e.rng.Float64() < af.Rate) {
		injected = apiErr(faultStatus(af.Code), af.Code, "injected fault for %s", action)
	}
	g := e.gates[action]
	if g != nil && !throttle && !timeout && injected == nil {
		delete(e.gates, action)
	} else {
		g = nil
	}
	e.mu.Unlock()

	if f.Latency > 0 {
		sleepCtx(r.Context(), f.Latency)
	}
	if throttle {
		e.writeJSON(w, 400, e.errorBody(apiErr(400, CodeThrottling, "Request was denied due to request throttling.")))
		return
	}
	if injected != nil {
		e.writeJSON(w, injected.Status, e.errorBody(injected))
		return
	}
	if timeout {
		// A time-out the client sees; half the time the work was done.
		if applyBeforeTimeout {
			_, _ = e.dispatch(action, params)
		}
		sleepCtx(r.Context(), f.Timeout)
		e.writeJSON(w, 503, e.errorBody(apiErr(503, CodeServiceUnavailable, "The request has failed due to a temporary failure of the server.")))
		return
	}
	if g != nil && !g.afterWork && !g.hold(r.Context()) {
		return
	}
	status, body := e.dispatch(action, params)
	if g != nil && g.afterWork && !g.hold(r.Context()) {
		return
	}
	e.writeJSON(w, status, body)
}

func faultStatus(code string) int {
	switch {
	case strings.HasSuffix(code, ".NotFound"):
		return 404
	case code == CodeThrottling, strings.HasPrefix(code, "Invalid") && !strings.HasPrefix(code, "InvalidOperation") && !strings.HasPrefix(code, "InvalidVSwitchId"):
		return 400
	case strings.HasPrefix(code, "ServiceUnavailable"), strings.HasPrefix(code, "InternalError"):
		return 503
	default:
		return 403
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (e *Emulator) verify(method string, p url.Values) *APIError {
	ak := p.Get("AccessKeyId")
	secret := ""
	switch ak {
	case e.cfg.AccessKeyID:
		secret = e.cfg.AccessKeySecret
	case e.stsAK:
		if e.cfg.RAMRole == "" {
			return apiErr(404, CodeAccessKeyNotFound, "Specified access key is not found.")
		}
		if p.Get("SecurityToken") != e.stsToken {
			return apiErr(400, CodeInvalidSecurityToken, "The Security Token is mismatch.")
		}
		secret = e.stsSK
	case "":
		return apiErr(400, CodeMissingParameter, "The input parameter \"AccessKeyId\" that is mandatory for processing this request is not supplied.")
	default:
		return apiErr(404, CodeAccessKeyNotFound, "Specified access key is not found.")
	}
	sts := StringToSign(method, p)
	if got := p.Get("Signature"); !hmacEqual(got, Sign(sts, secret)) {
		return apiErr(400, CodeSignatureMismatch, "Specified signature is not matched with our calculation. server string to sign is:%s", sts)
	}
	return nil
}

func hmacEqual(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// marshal encodes JSON without HTML escaping, as the ECS API answers.
func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimRight(buf.Bytes(), "\n")
}

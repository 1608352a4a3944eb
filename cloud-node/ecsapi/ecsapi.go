// Package ecsapi is the cloud role's ECS client: the real
// alibaba-cloud-sdk-go ECS client behind per-action token buckets, a retry
// loop that retries only what is retryable (throttling, time-outs, 5xx), and
// one ClientToken per logical operation so a retried create or assign never
// does the work twice.
package ecsapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Credentials are a static AccessKey pair (from config). Their String never
// shows the secret.
type Credentials struct {
	AccessKeyID     string
	AccessKeySecret string
	SecurityToken   string
}

func (c Credentials) String() string { return "Credentials{AccessKeyID:" + c.AccessKeyID + "}" }

// CredentialSource returns current credentials (e.g. from the RAM role in
// the metadata service); it is called before every request and should cache.
type CredentialSource func() (Credentials, error)

// Limit is a token bucket.
type Limit struct {
	QPS   float64
	Burst int
}

// DefaultLimits are per-action rates, below ECS's published per-user limits.
var DefaultLimits = map[string]Limit{
	"CreateNetworkInterface":     {QPS: 5, Burst: 5},
	"AttachNetworkInterface":     {QPS: 5, Burst: 5},
	"DetachNetworkInterface":     {QPS: 5, Burst: 5},
	"DeleteNetworkInterface":     {QPS: 5, Burst: 5},
	"DescribeNetworkInterfaces":  {QPS: 10, Burst: 10},
	"AssignPrivateIpAddresses":   {QPS: 10, Burst: 10},
	"UnassignPrivateIpAddresses": {QPS: 10, Burst: 10},
	"DescribeInstanceTypes":      {QPS: 2, Burst: 2},
	"DescribeVSwitches":          {QPS: 5, Burst: 5},
}

// Config configures a Client.
type Config struct {
	RegionID string
	// Endpoint overrides the ECS endpoint: "host:port" or a URL with scheme
	// ("http://127.0.0.1:8080" for the emulator). Empty uses the SDK's
	// endpoint for the region over HTTPS.
	Endpoint string
	// Static credentials, or Source (e.g. the RAM role).
	Credentials Credentials
	Source      CredentialSource
	// Timeout bounds one HTTP call (default 10 s).
	Timeout time.Duration
	// MaxAttempts per logical operation (default 8); backoff doubles from
	// BackoffBase (200 ms) to BackoffMax (5 s) with jitter.
	MaxAttempts int
	BackoffBase time.Duration
	BackoffMax  time.Duration
	Limits      map[string]Limit
	Logger      *slog.Logger
}

// Client is safe for concurrent use.
type Client struct {
	cfg      Config
	ecs      *ecs.Client
	log      *slog.Logger
	limiters map[string]*rate.Limiter
	mu       sync.Mutex

	calls    atomic.Int64
	metCalls *prometheus.CounterVec
	metErrs  *prometheus.CounterVec
}

type sourceProvider struct{ src CredentialSource }

func (p sourceProvider) GetCredentials() (*credentials.Credentials, error) {
	c, err := p.src()
	if err != nil {
		return nil, err
	}
	return &credentials.Credentials{AccessKeyId: c.AccessKeyID, AccessKeySecret: c.AccessKeySecret,
		SecurityToken: c.SecurityToken, ProviderName: "strata"}, nil
}
func (p sourceProvider) GetProviderName() string { return "strata" }

// New builds a client. It fails, naming the field, on a bad config.
func New(cfg Config) (*Client, error) {
	if cfg.RegionID == "" {
		return nil, errors.New("ecsapi: RegionID is required (read it from metadata region-id)")
	}
	if cfg.Source == nil && (cfg.Credentials.AccessKeyID == "" || cfg.Credentials.AccessKeySecret == "") {
		return nil, errors.New("ecsapi: set Credentials.AccessKeyID and AccessKeySecret, or a Source (the instance RAM role)")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase = 200 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	src := cfg.Source
	if src == nil {
		static := cfg.Credentials
		src = func() (Credentials, error) { return static, nil }
	}
	sc := sdk.NewConfig()
	sc.AutoRetry = false // retries are ours: only retryable errors, same ClientToken
	sc.Timeout = cfg.Timeout
	domain := ""
	if cfg.Endpoint != "" {
		if u, err := url.Parse(cfg.Endpoint); err == nil && u.Host != "" {
			sc.Scheme = strings.ToUpper(u.Scheme)
			domain = u.Host
		} else {
			sc.Scheme = "HTTPS"
			domain = cfg.Endpoint
		}
	} else {
		sc.Scheme = "HTTPS"
	}
	cl, err := ecs.NewClientWithOptions(cfg.RegionID, sc, sourceProvider{src})
	if err != nil {
		return nil, fmt.Errorf("ecsapi: build SDK client: %w", err)
	}
	cl.SetReadTimeout(cfg.Timeout)
	cl.SetConnectTimeout(cfg.Timeout)
	if domain != "" {
		cl.Domain = domain
	}
	c := &Client{cfg: cfg, ecs: cl, log: cfg.Logger, limiters: map[string]*rate.Limiter{},
		metCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_ecs_api_calls_total",
			Help: "ECS API calls sent, by action."}, []string{"action"}),
		metErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_ecs_api_errors_total",
			Help: "ECS API errors, by action and code."}, []string{"action", "code"}),
	}
	return c, nil
}

// Collectors are the client's metrics, for the caller's registry.
func (c *Client) Collectors() []prometheus.Collector {
	return []prometheus.Collector{c.metCalls, c.metErrs}
}

// Calls is the number of HTTP calls sent so far (retries included).
func (c *Client) Calls() int64 { return c.calls.Load() }

// NewToken returns a fresh ClientToken for one logical operation.
func NewToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (c *Client) limiter(action string) *rate.Limiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.limiters[action]
	if !ok {
		lim, ok := c.cfg.Limits[action]
		if !ok {
			lim, ok = DefaultLimits[action]
		}
		if !ok {
			lim = Limit{QPS: 5, Burst: 5}
		}
		l = rate.NewLimiter(rate.Limit(lim.QPS), lim.Burst)
		c.limiters[action] = l
	}
	return l
}

// Error code helpers.

// Code returns the ECS error code of err, or "" for a non-API error.
func Code(err error) string {
	var se *sdkerrors.ServerError
	if errors.As(err, &se) {
		return se.ErrorCode()
	}
	return ""
}

// Retryable says whether an error may go away by itself.
func Retryable(err error) bool {
	var se *sdkerrors.ServerError
	if errors.As(err, &se) {
		code := se.ErrorCode()
		return strings.HasPrefix(code, "Throttling") || strings.HasPrefix(code, "ServiceUnavailable") ||
			strings.HasPrefix(code, "InternalError") || code == "UnknownError" || se.HttpStatus() >= 500 ||
			code == "InvalidOperation.Conflict" || code == "Operation.Conflict" || code == "IncorrectInstanceStatus"
	}
	// transport problems and time-outs: the request may or may not have run,
	// which is why mutations carry a ClientToken
	var ce *sdkerrors.ClientError
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || errors.As(err, &ue)
}

// do runs one logical operation: it waits for the action's token bucket,
// calls, and retries retryable errors with backoff until MaxAttempts or ctx.
func (c *Client) do(ctx context.Context, action string, call func() error) error {
	var err error
	for attempt := 1; ; attempt++ {
		if werr := c.limiter(action).Wait(ctx); werr != nil {
			return fmt.Errorf("%s: waiting for rate limit: %w", action, werr)
		}
		c.calls.Add(1)
		c.metCalls.WithLabelValues(action).Inc()
		err = call()
		if err == nil {
			return nil
		}
		code := Code(err)
		if code == "" {
			code = "client"
		}
		c.metErrs.WithLabelValues(action, code).Inc()
		if !Retryable(err) || attempt >= c.cfg.MaxAttempts {
			break
		}
		d := time.Duration(math.Min(float64(c.cfg.BackoffMax), float64(c.cfg.BackoffBase)*math.Pow(2, float64(attempt-1))))
		d = d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
		c.log.Debug("ECS call failed, retrying", "action", action, "attempt", attempt, "code", code, "backoff", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (last error: %v)", action, ctx.Err(), redacted{err})
		case <-t.C:
		}
	}
	return fmt.Errorf("ECS %s: %w", action, redacted{err})
}

// secretParams are request parameters that must never reach a log: SDK
// transport errors quote the whole request URL.
var secretParams = regexp.MustCompile(`(SecurityToken|Signature|AccessKeySecret|BearerToken)=[^&\s"]*`)

// redacted hides secrets in an error's text; errors.As still sees the cause.
type redacted struct{ err error }

func (r redacted) Error() string { return secretParams.ReplaceAllString(r.err.Error(), "$1=REDACTED") }
func (r redacted) Unwrap() error { return r.err }

func (c *Client) prep(r *requests.RpcRequest) {
	r.SetReadTimeout(c.cfg.Timeout)
	r.SetConnectTimeout(c.cfg.Timeout)
}

// ENI is the cloud's view of one network interface.
type ENI struct {
	ID         string
	MAC        string
	Status     string
	Type       string
	InstanceID string
	VSwitchID  string
	PrimaryIP  netip.Addr
	Secondary  []netip.Addr
	Prefixes   []netip.Prefix
	Tags       map[string]string
}

// CreateENI creates an ENI with count secondary IPs. token makes it idempotent.
func (c *Client) CreateENI(ctx context.Context, vswitchID, securityGroupID string, count int, tags map[string]string, token string) (ENI, error) {
	req := ecs.CreateCreateNetworkInterfaceRequest()
	c.prep(req.RpcRequest)
	req.VSwitchId = vswitchID
	req.SecurityGroupId = securityGroupID
	req.ClientToken = token
	req.Description = "strata pod ENI"
	if count > 0 {
		req.SecondaryPrivateIpAddressCount = requests.NewInteger(count)
	}
	var ts []ecs.CreateNetworkInterfaceTag
	for k, v := range tags {
		ts = append(ts, ecs.CreateNetworkInterfaceTag{Key: k, Value: v})
	}
	req.Tag = &ts
	var out ENI
	err := c.do(ctx, "CreateNetworkInterface", func() error {
		resp, err := c.ecs.CreateNetworkInterface(req)
		if err != nil {
			return err
		}
		out = ENI{ID: resp.NetworkInterfaceId, MAC: resp.MacAddress, Status: resp.Status, Type: resp.Type,
			VSwitchID: resp.VSwitchId, Tags: map[string]string{}}
		out.PrimaryIP, _ = netip.ParseAddr(resp.PrivateIpAddress)
		for _, s := range resp.PrivateIpSets.PrivateIpSet {
			if a, err := netip.ParseAddr(s.PrivateIpAddress); err == nil && !s.Primary {
				out.Secondary = append(out.Secondary, a)
			}
		}
		for _, t := range resp.Tags.Tag {
			out.Tags[t.Key] = t.Value
		}
		return nil
	})
	return out, err
}

// AttachENI starts attaching; the ENI is InUse later (see WaitStatus).
func (c *Client) AttachENI(ctx context.Context, eniID, instanceID string) error {
	req := ecs.CreateAttachNetworkInterfaceRequest()
	c.prep(req.RpcRequest)
	req.NetworkInterfaceId, req.InstanceId = eniID, instanceID
	return c.do(ctx, "AttachNetworkInterface", func() error {
		_, err := c.ecs.AttachNetworkInterface(req)
		return err
	})
}

// DetachENI starts detaching.
func (c *Client) DetachENI(ctx context.Context, eniID, instanceID string) error {
	req := ecs.CreateDetachNetworkInterfaceRequest()
	c.prep(req.RpcRequest)
	req.NetworkInterfaceId, req.InstanceId = eniID, instanceID
	return c.do(ctx, "DetachNetworkInterface", func() error {
		_, err := c.ecs.DetachNetworkInterface(req)
		return err
	})
}

// DeleteENI deletes an Available ENI.
func (c *Client) DeleteENI(ctx context.Context, eniID string) error {
	req := ecs.CreateDeleteNetworkInterfaceRequest()
	c.prep(req.RpcRequest)
	req.NetworkInterfaceId = eniID
	return c.do(ctx, "DeleteNetworkInterface", func() error {
		_, err := c.ecs.DeleteNetworkInterface(req)
		return err
	})
}

// Filter selects ENIs in DescribeENIs.
type Filter struct {
	IDs        []string
	InstanceID string
	VSwitchID  string
	Status     string
	Tags       map[string]string
	PageSize   int // MaxResults per page, default 100
}

// ErrIncompleteListing: a DescribeNetworkInterfaces listing whose pages do
// not add up to the TotalCount it reports (a truncated or shifting listing).
// It proves nothing about what it left out; the caller must not act on it.
var ErrIncompleteListing = errors.New("incomplete DescribeNetworkInterfaces listing")

// DescribeENIs lists every matching ENI, following NextToken pages
// (MaxResults/NextToken, the paging ECS recommends: a token continues where
// the last page ended, while a PageNumber offset skips an ENI when another
// is deleted between pages; the emulator models the token as that cursor).
// Duplicates are dropped. It returns ErrIncompleteListing when the pages do
// not add up to TotalCount or a token repeats.
func (c *Client) DescribeENIs(ctx context.Context, f Filter) ([]ENI, error) {
	var out []ENI
	size := f.PageSize
	if size == 0 {
		size = 100
	}
	seen := map[string]bool{}
	tokens := map[string]bool{}
	token := ""
	for {
		req := ecs.CreateDescribeNetworkInterfacesRequest()
		c.prep(req.RpcRequest)
		req.MaxResults, req.NextToken = requests.NewInteger(size), token
		req.InstanceId, req.VSwitchId, req.Status = f.InstanceID, f.VSwitchID, f.Status
		if len(f.IDs) > 0 {
			ids := append([]string(nil), f.IDs...)
			req.NetworkInterfaceId = &ids
		}
		var ts []ecs.DescribeNetworkInterfacesTag
		for k, v := range f.Tags {
			ts = append(ts, ecs.DescribeNetworkInterfacesTag{Key: k, Value: v})
		}
		if len(ts) > 0 {
			req.Tag = &ts
		}
		var resp *ecs.DescribeNetworkInterfacesResponse
		if err := c.do(ctx, "DescribeNetworkInterfaces", func() (err error) {
			resp, err = c.ecs.DescribeNetworkInterfaces(req)
			return err
		}); err != nil {
			return nil, err
		}
		for _, s := range resp.NetworkInterfaceSets.NetworkInterfaceSet {
			if !seen[s.NetworkInterfaceId] {
				seen[s.NetworkInterfaceId] = true
				out = append(out, fromSet(s))
			}
		}
		token = resp.NextToken
		if token == "" {
			if resp.TotalCount > len(out) {
				return out, fmt.Errorf("%w: %d of the %d ENIs it counts (retried at the next resync)", ErrIncompleteListing, len(out), resp.TotalCount)
			}
			return out, nil
		}
		if tokens[token] {
			return out, fmt.Errorf("%w: NextToken %q came back twice", ErrIncompleteListing, token)
		}
		tokens[token] = true
	}
}

func fromSet(s ecs.NetworkInterfaceSet) ENI {
	e := ENI{ID: s.NetworkInterfaceId, MAC: s.MacAddress, Status: s.Status, Type: s.Type,
		InstanceID: s.InstanceId, VSwitchID: s.VSwitchId, Tags: map[string]string{}}
	e.PrimaryIP, _ = netip.ParseAddr(s.PrivateIpAddress)
	for _, p := range s.PrivateIpSets.PrivateIpSet {
		if a, err := netip.ParseAddr(p.PrivateIpAddress); err == nil && !p.Primary {
			e.Secondary = append(e.Secondary, a)
		}
	}
	for _, p := range s.Ipv4PrefixSets.Ipv4PrefixSet {
		if pf, err := netip.ParsePrefix(p.Ipv4Prefix); err == nil {
			e.Prefixes = append(e.Prefixes, pf)
		}
	}
	for _, t := range s.Tags.Tag {
		k, v := t.Key, t.Value
		if k == "" {
			k, v = t.TagKey, t.TagValue
		}
		e.Tags[k] = v
	}
	return e
}

// AssignIPs adds count secondary IPs (or the explicit ones) and/or prefixes
// (/28) to an ENI. token makes it idempotent.
func (c *Client) AssignIPs(ctx context.Context, eniID string, count int, explicit []netip.Addr, prefixCount int, token string) ([]netip.Addr, []netip.Prefix, error) {
	return c.assign(ctx, eniID, count, explicit, prefixCount, nil, token)
}

// AssignPrefixes adds the given aligned /28 prefixes to an ENI.
func (c *Client) AssignPrefixes(ctx context.Context, eniID string, prefixes []netip.Prefix, token string) error {
	_, _, err := c.assign(ctx, eniID, 0, nil, 0, prefixes, token)
	return err
}

func (c *Client) assign(ctx context.Context, eniID string, count int, explicit []netip.Addr, prefixCount int, prefixes []netip.Prefix, token string) ([]netip.Addr, []netip.Prefix, error) {
	req := ecs.CreateAssignPrivateIpAddressesRequest()
	c.prep(req.RpcRequest)
	req.NetworkInterfaceId, req.ClientToken = eniID, token
	if count > 0 {
		req.SecondaryPrivateIpAddressCount = requests.NewInteger(count)
	}
	if len(explicit) > 0 {
		s := make([]string, len(explicit))
		for i, a := range explicit {
			s[i] = a.String()
		}
		req.PrivateIpAddress = &s
	}
	if prefixCount > 0 {
		req.Ipv4PrefixCount = requests.NewInteger(prefixCount)
	}
	if len(prefixes) > 0 {
		s := make([]string, len(prefixes))
		for i, p := range prefixes {
			s[i] = p.String()
		}
		req.Ipv4Prefix = &s
	}
	var ips []netip.Addr
	var pfx []netip.Prefix
	err := c.do(ctx, "AssignPrivateIpAddresses", func() error {
		resp, err := c.ecs.AssignPrivateIpAddresses(req)
		if err != nil {
			return err
		}
		ips, pfx = nil, nil
		for _, s := range resp.AssignedPrivateIpAddressesSet.PrivateIpSet.PrivateIpAddress {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return fmt.Errorf("AssignPrivateIpAddresses answered a bad address %q: %w", s, err)
			}
			ips = append(ips, a)
		}
		for _, s := range resp.AssignedPrivateIpAddressesSet.Ipv4PrefixSet.Ipv4Prefixes {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return fmt.Errorf("AssignPrivateIpAddresses answered a bad prefix %q: %w", s, err)
			}
			pfx = append(pfx, p)
		}
		return nil
	})
	return ips, pfx, err
}

// UnassignIPs removes secondary IPs. ECS has no ClientToken here, so a retry
// after a time-out that did the work answers InvalidIp.NotFound: on a retry
// that is success.
func (c *Client) UnassignIPs(ctx context.Context, eniID string, ips []netip.Addr) error {
	s := make([]string, len(ips))
	for i, a := range ips {
		s[i] = a.String()
	}
	return c.unassign(ctx, eniID, &s, nil)
}

// InstanceType is an instance type's ENI capacity.
type InstanceType struct {
	ID        string
	ENIs      int // EniQuantity, primary included
	IPsPerENI int // EniPrivateIpAddressQuantity, primary included
	TotalENIs int
}

// UnassignPrefixes gives /28 prefixes back. Like UnassignIPs it has no
// ClientToken: on a retry, InvalidIp.NotFound means the first attempt did it.
func (c *Client) UnassignPrefixes(ctx context.Context, eniID string, prefixes []netip.Prefix) error {
	s := make([]string, len(prefixes))
	for i, p := range prefixes {
		s[i] = p.String()
	}
	return c.unassign(ctx, eniID, nil, &s)
}

func (c *Client) unassign(ctx context.Context, eniID string, ips, prefixes *[]string) error {
	req := ecs.CreateUnassignPrivateIpAddressesRequest()
	c.prep(req.RpcRequest)
	req.NetworkInterfaceId = eniID
	req.PrivateIpAddress, req.Ipv4Prefix = ips, prefixes
	tries := 0
	return c.do(ctx, "UnassignPrivateIpAddresses", func() error {
		tries++
		_, err := c.ecs.UnassignPrivateIpAddresses(req)
		if err != nil && tries > 1 && Code(err) == "InvalidIp.NotFound" {
			return nil
		}
		return err
	})
}

// DescribeInstanceType reads one instance type's capacity.
func (c *Client) DescribeInstanceType(ctx context.Context, id string) (InstanceType, error) {
	req := ecs.CreateDescribeInstanceTypesRequest()
	c.prep(req.RpcRequest)
	req.InstanceTypes = &[]string{id}
	var out InstanceType
	err := c.do(ctx, "DescribeInstanceTypes", func() error {
		resp, err := c.ecs.DescribeInstanceTypes(req)
		if err != nil {
			return err
		}
		for _, t := range resp.InstanceTypes.InstanceType {
			if t.InstanceTypeId == id {
				out = InstanceType{ID: id, ENIs: t.EniQuantity, IPsPerENI: t.EniPrivateIpAddressQuantity, TotalENIs: t.EniTotalQuantity}
				return nil
			}
		}
		return fmt.Errorf("instance type %q not found in DescribeInstanceTypes", id)
	})
	return out, err
}

// VSwitch is a vSwitch's free capacity.
type VSwitch struct {
	ID        string
	CIDR      netip.Prefix
	ZoneID    string
	Available int
}

// DescribeVSwitch reads one vSwitch.
func (c *Client) DescribeVSwitch(ctx context.Context, id string) (VSwitch, error) {
	req := ecs.CreateDescribeVSwitchesRequest()
	c.prep(req.RpcRequest)
	req.VSwitchId = id
	var out VSwitch
	err := c.do(ctx, "DescribeVSwitches", func() error {
		resp, err := c.ecs.DescribeVSwitches(req)
		if err != nil {
			return err
		}
		for _, v := range resp.VSwitches.VSwitch {
			if v.VSwitchId == id {
				p, err := netip.ParsePrefix(v.CidrBlock)
				if err != nil {
					return fmt.Errorf("vSwitch %s has a bad CIDR %q: %w", id, v.CidrBlock, err)
				}
				out = VSwitch{ID: id, CIDR: p, ZoneID: v.ZoneId, Available: int(v.AvailableIpAddressCount)}
				return nil
			}
		}
		return fmt.Errorf("vSwitch %q not found (check the pod vSwitch IDs in the config)", id)
	})
	return out, err
}

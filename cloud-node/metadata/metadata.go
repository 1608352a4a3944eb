// Package metadata is a client of the ECS instance metadata service in its
// hardened (token) mode: a PUT to /latest/api/token returns a token that
// every GET then carries. The base URL is configurable so the lab and tests
// can point it at the emulator.
package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// DefaultBaseURL is the metadata service of a real ECS instance.
const DefaultBaseURL = "http://100.100.100.200"

const (
	tokenHeader    = "X-aliyun-ecs-metadata-token"
	tokenTTLHeader = "X-aliyun-ecs-metadata-token-ttl-seconds"
	tokenTTL       = 6 * time.Hour
)

// Client reads instance metadata. It is safe for concurrent use.
type Client struct {
	base string
	http *http.Client

	mu     sync.Mutex
	token  string
	expiry time.Time
}

// New returns a client for baseURL (DefaultBaseURL when empty), e.g.
// "http://127.0.0.1:8080" or "http://127.0.0.1:8080/i/i-node1".
func New(baseURL string) *Client {
	if baseURL == "" {
		baseURL = DefaultBaseURL
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), http: &http.Client{Timeout: 5 * time.Second}}
}

func (c *Client) getToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && time.Now().Before(c.expiry) {
		return c.token, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+"/latest/api/token", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set(tokenTTLHeader, fmt.Sprint(int(tokenTTL.Seconds())))
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("metadata token from %s (is this an ECS instance, or is --metadata-url right?): %w", c.base, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("metadata token from %s: HTTP %d: %s", c.base, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	c.token = strings.TrimSpace(string(b))
	// renew well before the service forgets it
	c.expiry = time.Now().Add(tokenTTL - 10*time.Minute)
	return c.token, nil
}

// ErrNotFound is returned for a path the service does not know.
var ErrNotFound = fmt.Errorf("metadata: not found")

// Get reads one path under /latest/meta-data/.
func (c *Client) Get(ctx context.Context, path string) (string, error) {
	for attempt := 0; ; attempt++ {
		tok, err := c.getToken(ctx)
		if err != nil {
			return "", err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/latest/meta-data/"+path, nil)
		if err != nil {
			return "", err
		}
		req.Header.Set(tokenHeader, tok)
		resp, err := c.http.Do(req)
		if err != nil {
			return "", fmt.Errorf("metadata %s: %w", path, err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
			return strings.TrimSpace(string(b)), nil
		case resp.StatusCode == http.StatusUnauthorized && attempt == 0:
			c.mu.Lock()
			c.token = "" // expired or service restarted: get a new token once
			c.mu.Unlock()
			continue
		case resp.StatusCode == http.StatusNotFound:
			return "", fmt.Errorf("metadata %s: %w", path, ErrNotFound)
		default:
			return "", fmt.Errorf("metadata %s: HTTP %d: %s", path, resp.StatusCode, strings.TrimSpace(string(b)))
		}
	}
}

// Instance is the node's identity.
type Instance struct {
	ID, RegionID, ZoneID, Type, VPCID string
	VPCCIDR                           netip.Prefix
	PrimaryMAC                        string
}

// Instance reads the node's identity.
func (c *Client) Instance(ctx context.Context) (Instance, error) {
	var in Instance
	for _, f := range []struct {
		path string
		dst  *string
	}{{"instance-id", &in.ID}, {"region-id", &in.RegionID}, {"zone-id", &in.ZoneID},
		{"instance/instance-type", &in.Type}, {"vpc-id", &in.VPCID}, {"mac", &in.PrimaryMAC}} {
		v, err := c.Get(ctx, f.path)
		if err != nil {
			return in, err
		}
		*f.dst = v
	}
	if v, err := c.Get(ctx, "vpc-cidr-block"); err == nil {
		p, perr := netip.ParsePrefix(v)
		if perr != nil {
			return in, fmt.Errorf("metadata vpc-cidr-block %q: %w", v, perr)
		}
		in.VPCCIDR = p
	}
	return in, nil
}

// MACs lists the MACs of the ENIs attached to the instance.
func (c *Client) MACs(ctx context.Context) ([]string, error) {
	v, err := c.Get(ctx, "network/interfaces/macs/")
	if err != nil {
		return nil, err
	}
	return ParseMACList(v)
}

// ParseMACList parses the "macs/" listing: one MAC per line, each ending in "/".
func ParseMACList(s string) ([]string, error) {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSuffix(strings.TrimSpace(line), "/")
		if line == "" {
			continue
		}
		hw, err := net.ParseMAC(line)
		if err != nil {
			return nil, fmt.Errorf("metadata MAC list: %q is not a MAC: %w", line, err)
		}
		out = append(out, hw.String())
	}
	return out, nil
}

// ENI is what the metadata service says about one attached ENI.
type ENI struct {
	MAC         string
	ID          string
	PrimaryIP   netip.Addr
	Gateway     netip.Addr
	VSwitchID   string
	VSwitchCIDR netip.Prefix
	IPs         []netip.Addr // primary first
}

// ENI reads the ENI with the given MAC.
func (c *Client) ENI(ctx context.Context, mac string) (ENI, error) {
	e := ENI{MAC: mac}
	base := "network/interfaces/macs/" + mac + "/"
	get := func(f string) (string, error) { return c.Get(ctx, base+f) }
	var err error
	if e.ID, err = get("network-interface-id"); err != nil {
		return e, err
	}
	if e.VSwitchID, err = get("vswitch-id"); err != nil {
		return e, err
	}
	for _, f := range []struct {
		name string
		set  func(string) error
	}{
		{"primary-ip-address", func(s string) (err error) { e.PrimaryIP, err = netip.ParseAddr(s); return }},
		{"gateway", func(s string) (err error) { e.Gateway, err = netip.ParseAddr(s); return }},
		{"vswitch-cidr-block", func(s string) (err error) { e.VSwitchCIDR, err = netip.ParsePrefix(s); return }},
		{"private-ipv4s", func(s string) (err error) { e.IPs, err = ParseIPList(s); return }},
	} {
		v, err := get(f.name)
		if err != nil {
			return e, err
		}
		if err := f.set(v); err != nil {
			return e, fmt.Errorf("metadata %s%s = %q: %w", base, f.name, v, err)
		}
	}
	return e, nil
}

// Gateway reads the vSwitch gateway of the attached ENI with the given MAC
// (network/interfaces/macs/<mac>/gateway). It is the only source of it: on
// ECS the gateway is not the subnet's first host (it is x.x.x.253 of a /24),
// so a missing or malformed answer is an error, never a guess.
func (c *Client) Gateway(ctx context.Context, mac string) (netip.Addr, error) {
	path := "network/interfaces/macs/" + mac + "/gateway"
	v, err := c.Get(ctx, path)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return netip.Addr{}, fmt.Errorf("ENI MAC %s: the metadata service has no %s (is the ENI attached to this instance, and does --metadata-url point at the ECS metadata service?): %w", mac, path, err)
		}
		return netip.Addr{}, fmt.Errorf("ENI MAC %s: read its gateway: %w", mac, err)
	}
	gw, err := netip.ParseAddr(v)
	if err != nil || !gw.Is4() {
		return netip.Addr{}, fmt.Errorf("ENI MAC %s: metadata %s = %q is not an IPv4 address (check --metadata-url points at the ECS metadata service)", mac, path, v)
	}
	return gw, nil
}

// ParseIPList parses private-ipv4s, a JSON array of IPv4 addresses.
func ParseIPList(s string) ([]netip.Addr, error) {
	var raw []string
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, fmt.Errorf("private-ipv4s is not a JSON array of strings: %w", err)
	}
	out := make([]netip.Addr, 0, len(raw))
	for _, r := range raw {
		a, err := netip.ParseAddr(r)
		if err != nil {
			return nil, fmt.Errorf("private-ipv4s: %w", err)
		}
		out = append(out, a)
	}
	return out, nil
}

// RoleCredentials are temporary credentials of the instance's RAM role.
type RoleCredentials struct {
	AccessKeyID     string `json:"AccessKeyId"`
	AccessKeySecret string `json:"AccessKeySecret"`
	SecurityToken   string `json:"SecurityToken"`
	Expiration      time.Time
}

// String never shows the secret, so credentials can't leak into logs.
func (r RoleCredentials) String() string {
	return fmt.Sprintf("RoleCredentials{AccessKeyID:%s, expires %s}", r.AccessKeyID, r.Expiration.Format(time.RFC3339))
}

// RoleCredentials reads the RAM role's temporary credentials; role "" means
// the single role attached to the instance.
func (c *Client) RoleCredentials(ctx context.Context, role string) (RoleCredentials, error) {
	if role == "" {
		r, err := c.Get(ctx, "ram/security-credentials/")
		if err != nil {
			return RoleCredentials{}, fmt.Errorf("no RAM role on the instance (attach one, or configure an AccessKey): %w", err)
		}
		role = strings.TrimSpace(strings.Split(r, "\n")[0])
	}
	v, err := c.Get(ctx, "ram/security-credentials/"+role)
	if err != nil {
		return RoleCredentials{}, err
	}
	var raw struct {
		RoleCredentials
		Expiration string
		Code       string
	}
	if err := json.Unmarshal([]byte(v), &raw); err != nil {
		return RoleCredentials{}, fmt.Errorf("RAM role %s credentials are not JSON: %w", role, err)
	}
	if raw.Code != "" && raw.Code != "Success" {
		return RoleCredentials{}, fmt.Errorf("RAM role %s credentials: code %s", role, raw.Code)
	}
	out := raw.RoleCredentials
	out.Expiration, _ = time.Parse(time.RFC3339, raw.Expiration)
	return out, nil
}

package ecsemu_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/strata-net/strata/cloud-node/ecsapi"
	"github.com/strata-net/strata/cloud-node/metadata"
	"github.com/strata-net/strata/tests/ecsemu"
)

const (
	ak = "LTAI-test-key"
	sk = "test-secret"
)

func baseConfig() ecsemu.Config {
	return ecsemu.Config{
		AccessKeyID: ak, AccessKeySecret: sk, RAMRole: "StrataNodeRole",
		RegionID: "cn-hangzhou", VPCID: "vpc-1", VPCCIDR: "10.0.0.0/16",
		InstanceTypes: []ecsemu.InstanceType{{ID: "ecs.g7.large", ENIQuantity: 3, IPsPerENI: 6}},
		VSwitches: []ecsemu.VSwitch{
			{ID: "vsw-node", CIDR: "10.0.1.0/24", ZoneID: "cn-hangzhou-h"},
			{ID: "vsw-pod", CIDR: "10.0.64.0/20", ZoneID: "cn-hangzhou-h"},
			{ID: "vsw-tiny", CIDR: "10.0.2.0/29", ZoneID: "cn-hangzhou-h"},
		},
		Instances:   []ecsemu.Instance{{ID: "i-node1", Type: "ecs.g7.large", VSwitchID: "vsw-node", PrimaryIP: "10.0.1.11"}},
		AttachDelay: 20 * time.Millisecond,
	}
}

func start(t *testing.T, cfg ecsemu.Config) (*ecsemu.Emulator, string) {
	t.Helper()
	emu, err := ecsemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu.Handler())
	t.Cleanup(func() { emu.Wait(); srv.Close() })
	return emu, srv.URL
}

func client(t *testing.T, endpoint string, mut func(*ecsapi.Config)) *ecsapi.Client {
	t.Helper()
	cfg := ecsapi.Config{RegionID: "cn-hangzhou", Endpoint: endpoint,
		Credentials: ecsapi.Credentials{AccessKeyID: ak, AccessKeySecret: sk},
		MaxAttempts: 1, Timeout: 10 * time.Second, BackoffBase: time.Millisecond,
		Limits: map[string]ecsapi.Limit{}}
	for a := range ecsapi.DefaultLimits {
		cfg.Limits[a] = ecsapi.Limit{QPS: 10000, Burst: 10000}
	}
	if mut != nil {
		mut(&cfg)
	}
	c, err := ecsapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitStatus(t *testing.T, c *ecsapi.Client, id, status string) ecsapi.ENI {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		es, err := c.DescribeENIs(context.Background(), ecsapi.Filter{IDs: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 1 && es[0].Status == status {
			return es[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("ENI %s never reached %s: %+v", id, status, es)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSDKDecodesEveryAction(t *testing.T) {
	emu, url := start(t, baseConfig())
	c := client(t, url, nil)
	ctx := context.Background()
	tags := map[string]string{"strata.io/cluster": "c1", "strata.io/node": "i-node1"}

	eni, err := c.CreateENI(ctx, "vsw-pod", "sg-1", 2, tags, ecsapi.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if eni.ID == "" || eni.MAC == "" || !eni.PrimaryIP.IsValid() || len(eni.Secondary) != 2 || eni.Status != "Available" || eni.Tags["strata.io/node"] != "i-node1" {
		t.Fatalf("CreateNetworkInterface decoded badly: %+v", eni)
	}
	if err := c.AttachENI(ctx, eni.ID, "i-node1"); err != nil {
		t.Fatal(err)
	}
	got := waitStatus(t, c, eni.ID, "InUse")
	if got.InstanceID != "i-node1" || got.MAC != eni.MAC || len(got.Secondary) != 2 || got.Tags["strata.io/cluster"] != "c1" {
		t.Fatalf("DescribeNetworkInterfaces decoded badly: %+v", got)
	}
	ips, _, err := c.AssignIPs(ctx, eni.ID, 2, nil, 0, ecsapi.NewToken())
	if err != nil || len(ips) != 2 {
		t.Fatalf("AssignPrivateIpAddresses: %v %v", ips, err)
	}
	want := netip.MustParseAddr("10.0.79.200")
	ips2, _, err := c.AssignIPs(ctx, eni.ID, 0, []netip.Addr{want}, 0, ecsapi.NewToken())
	if err != nil || len(ips2) != 1 || ips2[0] != want {
		t.Fatalf("explicit AssignPrivateIpAddresses: %v %v", ips2, err)
	}
	if err := c.UnassignIPs(ctx, eni.ID, ips); err != nil {
		t.Fatal(err)
	}
	got = waitStatus(t, c, eni.ID, "InUse")
	if len(got.Secondary) != 3 {
		t.Fatalf("after unassign want 3 secondaries, got %v", got.Secondary)
	}
	// prefixes on a fresh ENI (they count toward the per-ENI limit)
	e2, err := c.CreateENI(ctx, "vsw-pod", "sg-1", 0, tags, ecsapi.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	_, pfx, err := c.AssignIPs(ctx, e2.ID, 0, nil, 1, ecsapi.NewToken())
	if err != nil || len(pfx) != 1 || pfx[0].Bits() != 28 {
		t.Fatalf("Ipv4PrefixCount: %v %v", pfx, err)
	}
	d2 := waitStatus(t, c, e2.ID, "Available")
	if len(d2.Prefixes) != 1 || d2.Prefixes[0] != pfx[0] {
		t.Fatalf("Ipv4PrefixSets decoded badly: %+v", d2)
	}

	it, err := c.DescribeInstanceType(ctx, "ecs.g7.large")
	if err != nil || it.ENIs != 3 || it.IPsPerENI != 6 || it.TotalENIs != 3 {
		t.Fatalf("DescribeInstanceTypes: %+v %v", it, err)
	}
	vs, err := c.DescribeVSwitch(ctx, "vsw-tiny")
	if err != nil || vs.Available != 4 || vs.CIDR.String() != "10.0.2.0/29" {
		t.Fatalf("DescribeVSwitches: %+v %v", vs, err)
	}
	if err := c.DetachENI(ctx, eni.ID, "i-node1"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, eni.ID, "Available")
	for _, id := range []string{eni.ID, e2.ID} {
		if err := c.DeleteENI(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(emu.ENIs()); n != 1 {
		t.Fatalf("want only the primary ENI left, have %d", n)
	}
}

func TestDescribePaging(t *testing.T) {
	_, url := start(t, baseConfig())
	c := client(t, url, nil)
	ctx := context.Background()
	for range 7 {
		if _, err := c.CreateENI(ctx, "vsw-pod", "", 0, map[string]string{"k": "v"}, ecsapi.NewToken()); err != nil {
			t.Fatal(err)
		}
	}
	es, err := c.DescribeENIs(ctx, ecsapi.Filter{Tags: map[string]string{"k": "v"}, PageSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range es {
		seen[e.ID] = true
	}
	if len(es) != 7 || len(seen) != 7 {
		t.Fatalf("paging with PageSize 3 gave %d ENIs (%d distinct), want 7", len(es), len(seen))
	}
}

// Paging as ECS does it (MaxResults/NextToken, a cursor): an ENI deleted
// between two pages never makes the next page skip one. With PageNumber the
// second page started one ENI later and the listing silently lacked it.
func TestDescribePagingSkipsNothingWhenENIsGo(t *testing.T) {
	emu, url := start(t, baseConfig())
	c := client(t, url, nil)
	ctx := context.Background()
	var ids []string
	for range 7 {
		e, err := c.CreateENI(ctx, "vsw-pod", "", 0, map[string]string{"k": "v"}, ecsapi.NewToken())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	// hold the first page's answer, delete the first ENI, then answer
	held, release := emu.Gate("DescribeNetworkInterfaces", true)
	type result struct {
		es  []ecsapi.ENI
		err error
	}
	done := make(chan result, 1)
	go func() {
		es, err := c.DescribeENIs(ctx, ecsapi.Filter{Tags: map[string]string{"k": "v"}, PageSize: 3})
		done <- result{es, err}
	}()
	<-held
	if err := client(t, url, nil).DeleteENI(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	release(true)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	got := map[string]bool{}
	for _, e := range r.es {
		got[e.ID] = true
	}
	for _, id := range ids[1:] {
		if !got[id] {
			t.Errorf("ENI %s missing from a listing during which another ENI was deleted (got %d ENIs)", id, len(r.es))
		}
	}
}

// A listing whose pages end before the TotalCount it reports is an error,
// never a short answer taken as the whole.
func TestTruncatedListingIsAnError(t *testing.T) {
	emu, url := start(t, baseConfig())
	c := client(t, url, nil)
	ctx := context.Background()
	for range 7 {
		if _, err := c.CreateENI(ctx, "vsw-pod", "", 0, map[string]string{"k": "v"}, ecsapi.NewToken()); err != nil {
			t.Fatal(err)
		}
	}
	emu.SetFaults(ecsemu.Faults{TruncateListings: 4})
	es, err := c.DescribeENIs(ctx, ecsapi.Filter{Tags: map[string]string{"k": "v"}, PageSize: 3})
	if !errors.Is(err, ecsapi.ErrIncompleteListing) {
		t.Fatalf("truncated listing: %d ENIs, err %v; want ErrIncompleteListing", len(es), err)
	}
	// by ID is not a listing: the fault leaves it whole
	if es, err := c.DescribeENIs(ctx, ecsapi.Filter{IDs: []string{es[0].ID}}); err != nil || len(es) != 1 {
		t.Fatalf("by ID: %v %v", es, err)
	}
}

func TestClientTokenIsIdempotent(t *testing.T) {
	emu, url := start(t, baseConfig())
	c := client(t, url, nil)
	ctx := context.Background()
	tok := ecsapi.NewToken()
	a, err := c.CreateENI(ctx, "vsw-pod", "", 1, nil, tok)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.CreateENI(ctx, "vsw-pod", "", 1, nil, tok)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != b.ID || len(emu.ENIs()) != 2 {
		t.Fatalf("same ClientToken made two ENIs: %s %s", a.ID, b.ID)
	}
	t1 := ecsapi.NewToken()
	x, _, err := c.AssignIPs(ctx, a.ID, 2, nil, 0, t1)
	if err != nil {
		t.Fatal(err)
	}
	y, _, err := c.AssignIPs(ctx, a.ID, 2, nil, 0, t1)
	if err != nil {
		t.Fatal(err)
	}
	if len(x) != 2 || x[0] != y[0] || x[1] != y[1] {
		t.Fatalf("retried assign gave different IPs: %v %v", x, y)
	}
	es := emu.ENIs()
	if len(es[1].Secondary) != 3 {
		t.Fatalf("retried assign added IPs twice: %v", es[1].Secondary)
	}
}

func TestErrorCodes(t *testing.T) {
	ctx := context.Background()
	emu, url := start(t, baseConfig())
	c := client(t, url, nil)
	tags := map[string]string{}
	check := func(name string, err error, code string) {
		t.Helper()
		if got := ecsapi.Code(err); got != code {
			t.Errorf("%s: want error code %s, got %q (%v)", name, code, got, err)
		}
	}

	// EniPerInstanceLimitExceeded: ecs.g7.large allows 3 ENIs, primary included.
	var ids []string
	for range 3 {
		e, err := c.CreateENI(ctx, "vsw-pod", "", 0, tags, ecsapi.NewToken())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	for _, id := range ids[:2] {
		if err := c.AttachENI(ctx, id, "i-node1"); err != nil {
			t.Fatal(err)
		}
	}
	check("third secondary ENI", c.AttachENI(ctx, ids[2], "i-node1"), ecsemu.CodeENILimit)
	// InvalidOperation.InvalidEniState: attach an ENI already attaching/in use,
	// delete one in use.
	check("attach twice", c.AttachENI(ctx, ids[0], "i-node1"), ecsemu.CodeInvalidENIState)
	waitStatus(t, c, ids[0], "InUse")
	check("delete in use", c.DeleteENI(ctx, ids[0]), ecsemu.CodeInvalidENIState)
	check("detach available", c.DetachENI(ctx, ids[2], "i-node1"), ecsemu.CodeInvalidENIState)
	// InvalidOperation.Ipv4CountExceeded: 6 per ENI, primary included.
	_, _, err := c.AssignIPs(ctx, ids[0], 6, nil, 0, ecsapi.NewToken())
	check("7 IPs on a 6-IP ENI", err, ecsemu.CodeIPCountExceeded)
	// InvalidVSwitchId.IpNotEnough: a /29 has 4 usable addresses (ECS
	// reserves the first and the last three).
	_, err = c.CreateENI(ctx, "vsw-tiny", "", 4, tags, ecsapi.NewToken())
	check("5 IPs from a /29", err, ecsemu.CodeIPNotEnough)
	small, err := c.CreateENI(ctx, "vsw-tiny", "", 1, tags, ecsapi.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.AssignIPs(ctx, small.ID, 3, nil, 0, ecsapi.NewToken())
	check("assign past vSwitch", err, ecsemu.CodeIPNotEnough)
	// InvalidEniId.NotFound
	check("attach unknown", c.AttachENI(ctx, "eni-nope", "i-node1"), ecsemu.CodeENINotFound)
	_, _, err = c.AssignIPs(ctx, "eni-nope", 1, nil, 0, ecsapi.NewToken())
	check("assign unknown", err, ecsemu.CodeENINotFound)
	// InvalidIp.NotFound on unassigning an address the ENI does not hold
	check("unassign foreign", c.UnassignIPs(ctx, ids[0], []netip.Addr{netip.MustParseAddr("10.0.70.1")}), ecsemu.CodeIPNotFound)
	// Throttling
	emu.SetFaults(ecsemu.Faults{ThrottleRate: 1})
	_, err = c.DescribeENIs(ctx, ecsapi.Filter{})
	check("throttled", err, ecsemu.CodeThrottling)
	if !ecsapi.Retryable(err) {
		t.Errorf("Throttling must be retryable")
	}
	// per-action injected error
	emu.SetFaults(ecsemu.Faults{Actions: map[string]ecsemu.ActionFault{"DeleteNetworkInterface": {Code: "InternalError"}}})
	err = c.DeleteENI(ctx, ids[2])
	check("injected", err, "InternalError")
	emu.SetFaults(ecsemu.Faults{})

	// signature: wrong secret gets the real error shape and code
	bad := client(t, url, func(cfg *ecsapi.Config) { cfg.Credentials.AccessKeySecret = "wrong" })
	_, err = bad.DescribeENIs(ctx, ecsapi.Filter{})
	check("wrong secret", err, ecsemu.CodeSignatureMismatch)
	if ecsapi.Retryable(err) {
		t.Errorf("a signature error must not be retried")
	}
	unknown := client(t, url, func(cfg *ecsapi.Config) { cfg.Credentials.AccessKeyID = "LTAI-who" })
	_, err = unknown.DescribeENIs(ctx, ecsapi.Filter{})
	check("unknown key", err, ecsemu.CodeAccessKeyNotFound)
	// non-retryable errors are not retried
	retrying := client(t, url, func(cfg *ecsapi.Config) { cfg.MaxAttempts = 5 })
	before := retrying.Calls()
	_ = retrying.AttachENI(ctx, "eni-nope", "i-node1")
	if n := retrying.Calls() - before; n != 1 {
		t.Errorf("a NotFound was sent %d times, want 1", n)
	}
}

func TestRetriesThroughThrottlingAndTimeouts(t *testing.T) {
	cfg := baseConfig()
	cfg.Seed = 7
	cfg.Faults = ecsemu.Faults{ThrottleRate: 0.3, TimeoutRate: 0.2, Timeout: 2 * time.Second}
	emu, url := start(t, cfg)
	c := client(t, url, func(cfg *ecsapi.Config) { cfg.MaxAttempts = 30; cfg.Timeout = 300 * time.Millisecond })
	ctx := context.Background()
	eni, err := c.CreateENI(ctx, "vsw-pod", "", 0, nil, ecsapi.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for range 10 {
		ips, _, err := c.AssignIPs(ctx, eni.ID, 2, nil, 0, ecsapi.NewToken())
		if err != nil {
			t.Fatal(err)
		}
		total += len(ips)
		if err := c.UnassignIPs(ctx, eni.ID, ips[:1]); err != nil {
			t.Fatal(err)
		}
		total--
	}
	for _, e := range emu.ENIs() {
		if e.ID == eni.ID && len(e.Secondary) != total {
			t.Fatalf("cloud has %d secondaries, client saw %d: a retry was applied twice", len(e.Secondary), total)
		}
	}
	if emu.Calls("") <= 30 {
		t.Logf("only %d calls; faults may not have fired", emu.Calls(""))
	}
}

func TestMetadataService(t *testing.T) {
	_, base := start(t, baseConfig())
	ctx := context.Background()
	// hardened mode: no token, no answer
	resp, err := http.Get(base + "/latest/meta-data/instance-id")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET without a token: HTTP %d, want 401", resp.StatusCode)
	}
	md := metadata.New(base)
	in, err := md.Instance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if in.ID != "i-node1" || in.RegionID != "cn-hangzhou" || in.Type != "ecs.g7.large" || in.VPCID != "vpc-1" ||
		in.VPCCIDR.String() != "10.0.0.0/16" || in.ZoneID != "cn-hangzhou-h" || in.PrimaryMAC == "" {
		t.Fatalf("instance metadata: %+v", in)
	}
	c := client(t, base, nil)
	e, err := c.CreateENI(ctx, "vsw-pod", "", 2, nil, ecsapi.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AttachENI(ctx, e.ID, "i-node1"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, e.ID, "InUse")
	macs, err := md.MACs(ctx)
	if err != nil || len(macs) != 2 || macs[0] != in.PrimaryMAC || macs[1] != e.MAC {
		t.Fatalf("macs: %v %v (want primary then %s)", macs, err, e.MAC)
	}
	m, err := md.ENI(ctx, e.MAC)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != e.ID || m.PrimaryIP != e.PrimaryIP || m.Gateway.String() != "10.0.79.253" || m.VSwitchID != "vsw-pod" ||
		m.VSwitchCIDR.String() != "10.0.64.0/20" || len(m.IPs) != 3 {
		t.Fatalf("ENI metadata: %+v", m)
	}
	p, err := md.Get(ctx, "network/interfaces/macs/"+e.MAC+"/netmask")
	if err != nil || p != "255.255.240.0" {
		t.Fatalf("netmask %q %v", p, err)
	}
	if _, err := md.Get(ctx, "no/such/path"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("unknown path: %v", err)
	}
	// per-instance base URL
	md2 := metadata.New(base + "/i/i-node1")
	if id, err := md2.Get(ctx, "instance-id"); err != nil || id != "i-node1" {
		t.Fatalf("per-instance metadata: %q %v", id, err)
	}
}

func TestRAMRoleCredentials(t *testing.T) {
	emu, base := start(t, baseConfig())
	ctx := context.Background()
	md := metadata.New(base)
	c := client(t, base, func(cfg *ecsapi.Config) {
		cfg.Credentials = ecsapi.Credentials{}
		cfg.Source = func() (ecsapi.Credentials, error) {
			rc, err := md.RoleCredentials(ctx, "")
			return ecsapi.Credentials{AccessKeyID: rc.AccessKeyID, AccessKeySecret: rc.AccessKeySecret, SecurityToken: rc.SecurityToken}, err
		}
	})
	if _, err := c.DescribeENIs(ctx, ecsapi.Filter{}); err != nil {
		t.Fatalf("API call with RAM role credentials: %v", err)
	}
	rc, _ := md.RoleCredentials(ctx, "")
	stsAK, _, _ := emu.STSCredentials()
	if rc.AccessKeyID != stsAK {
		t.Fatalf("role credentials: %v", rc)
	}
	if s := rc.String(); contains(s, rc.AccessKeySecret) || contains(s, rc.SecurityToken) {
		t.Fatalf("credentials String leaks the secret: %s", s)
	}
}

func contains(s, sub string) bool {
	return sub != "" && len(s) >= len(sub) && (func() bool {
		for i := 0; i+len(sub) <= len(s); i++ {
			if s[i:i+len(sub)] == sub {
				return true
			}
		}
		return false
	})()
}

func TestConfigErrorsNameTheField(t *testing.T) {
	cfg := baseConfig()
	cfg.Instances[0].Type = "ecs.nope"
	if _, err := ecsemu.New(cfg); err == nil || !contains(err.Error(), "Type") {
		t.Fatalf("want an error naming Type, got %v", err)
	}
	cfg = baseConfig()
	cfg.VSwitches[0].CIDR = "10.0.1.0/30"
	if _, err := ecsemu.New(cfg); err == nil || !contains(err.Error(), "CIDR") {
		t.Fatalf("want an error naming CIDR, got %v", err)
	}
}

func FuzzRPC(f *testing.F) {
	f.Add("Action=AssignPrivateIpAddresses&NetworkInterfaceId=x&SecondaryPrivateIpAddressCount=3")
	f.Add("Action=DescribeNetworkInterfaces&PageNumber=0&PageSize=9999")
	f.Add("Action=CreateNetworkInterface&VSwitchId=vsw-pod&PrivateIpAddress.1=10.0.64.9&Tag.1.Key=a")
	f.Add("Action=UnassignPrivateIpAddresses&NetworkInterfaceId=eni&Ipv4Prefix.1=10.0.64.0/28")
	f.Add("Action=DescribeNetworkInterfaces&MaxResults=2&NextToken=-4")
	emu, err := ecsemu.New(baseConfig())
	if err != nil {
		f.Fatal(err)
	}
	h := emu.Handler()
	f.Fuzz(func(t *testing.T, q string) {
		vals, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		vals.Set("AccessKeyId", ak)
		vals.Set("Signature", ecsemu.Sign(ecsemu.StringToSign("POST", vals), sk))
		req := httptest.NewRequest("POST", "/?"+vals.Encode(), nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == 0 || rec.Body.Len() == 0 {
			t.Fatalf("no answer for %q", q)
		}
	})
}

// /28 prefixes as ECS handles them: each takes 16 vSwitch addresses and one
// slot of the ENI's IP quota, Describe lists them, a ClientToken replay
// returns the same prefix, bad requests change nothing.
func TestPrefixesAreFaithful(t *testing.T) {
	emu, url := start(t, baseConfig())
	c := client(t, url, nil)
	ctx := context.Background()
	avail := func() int {
		vs, err := c.DescribeVSwitch(ctx, "vsw-pod")
		if err != nil {
			t.Fatal(err)
		}
		return vs.Available
	}
	eni, err := c.CreateENI(ctx, "vsw-pod", "", 0, nil, ecsapi.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AttachENI(ctx, eni.ID, "i-node1"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, eni.ID, "InUse")
	before := avail()
	tok := ecsapi.NewToken()
	_, p1, err := c.AssignIPs(ctx, eni.ID, 0, nil, 2, tok)
	if err != nil || len(p1) != 2 || p1[0] == p1[1] {
		t.Fatalf("two prefixes: %v %v", p1, err)
	}
	_, again, err := c.AssignIPs(ctx, eni.ID, 0, nil, 2, tok)
	if err != nil || fmt.Sprint(again) != fmt.Sprint(p1) {
		t.Fatalf("ClientToken replay gave %v (%v), want %v", again, err, p1)
	}
	if got := before - avail(); got != 32 {
		t.Fatalf("two prefixes took %d vSwitch addresses, want 32", got)
	}
	d := waitStatus(t, c, eni.ID, "InUse")
	if fmt.Sprint(d.Prefixes) != fmt.Sprint(p1) {
		t.Fatalf("Describe lists prefixes %v, want %v", d.Prefixes, p1)
	}
	// a prefix someone holds cannot be taken again, even explicitly
	other, err := c.CreateENI(ctx, "vsw-pod", "", 0, nil, ecsapi.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	code := func(err error) string { return ecsapi.Code(err) }
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"taken prefix", func() error { return assignPrefix(ctx, c, other.ID, p1[0].String()) }, ecsemu.CodeIPNotEnough},
		{"unaligned prefix", func() error { return assignPrefix(ctx, c, other.ID, "10.0.70.8/28") }, ecsemu.CodeInvalidParameter},
		{"not a /28", func() error { return assignPrefix(ctx, c, other.ID, "10.0.70.0/27") }, ecsemu.CodeInvalidParameter},
		{"outside the vSwitch", func() error { return assignPrefix(ctx, c, other.ID, "10.0.1.0/28") }, ecsemu.CodeIPNotEnough},
		{"eleven at once", func() error { _, _, err := c.AssignIPs(ctx, other.ID, 0, nil, 11, ecsapi.NewToken()); return err }, ecsemu.CodeInvalidParameter},
		// ecs.g7.large: 6 IPs per ENI = primary + 5 slots; 2 used by prefixes
		{"over the ENI quota", func() error { _, _, err := c.AssignIPs(ctx, eni.ID, 2, nil, 2, ecsapi.NewToken()); return err }, ecsemu.CodeIPCountExceeded},
		{"unassign a foreign prefix", func() error { return c.UnassignPrefixes(ctx, other.ID, p1[:1]) }, ecsemu.CodeIPNotFound},
	} {
		mid := avail()
		if err := tc.call(); code(err) != tc.want {
			t.Errorf("%s: got %v, want %s", tc.name, err, tc.want)
		}
		if avail() != mid {
			t.Errorf("%s: a refused request changed the vSwitch's free count", tc.name)
		}
	}
	if _, _, err := c.AssignIPs(ctx, eni.ID, 3, nil, 0, ecsapi.NewToken()); err != nil {
		t.Fatalf("the quota's last 3 slots: %v", err)
	}
	if err := c.UnassignPrefixes(ctx, eni.ID, p1); err != nil {
		t.Fatal(err)
	}
	if got := before - avail(); got != 4 { // 3 secondaries + the other ENI's primary
		t.Fatalf("after unassigning the prefixes %d vSwitch addresses are held, want 4", got)
	}
	if d := waitStatus(t, c, eni.ID, "InUse"); len(d.Prefixes) != 0 || len(emu.ENIs()) != 3 {
		t.Fatalf("prefixes left after unassign: %v", d.Prefixes)
	}
}

// assignPrefix asks for one explicit prefix (Ipv4Prefix.1), through the SDK.
func assignPrefix(ctx context.Context, c *ecsapi.Client, eniID, prefix string) error {
	return c.AssignPrefixes(ctx, eniID, []netip.Prefix{netip.MustParsePrefix(prefix)}, ecsapi.NewToken())
}

// Gate holds one call: dropped before its work it leaves the cloud
// unchanged; after its work the change stays although no answer came.
func TestGateHoldsOneCall(t *testing.T) {
	emu, url := start(t, baseConfig())
	// the client gives up (its time-out closes the connection) while held
	c := client(t, url, func(cfg *ecsapi.Config) { cfg.MaxAttempts, cfg.Timeout = 1, 300*time.Millisecond })
	for _, after := range []bool{false, true} {
		before := len(emu.ENIs())
		held, release := emu.Gate("CreateNetworkInterface", after)
		done := make(chan error, 1)
		go func() {
			_, err := c.CreateENI(context.Background(), "vsw-pod", "", 0, nil, ecsapi.NewToken())
			done <- err
		}()
		<-held
		if err := <-done; err == nil {
			t.Fatalf("after=%v: the held call answered", after)
		}
		release(false)
		emu.Wait()
		want := before
		if after {
			want++
		}
		waitFor := time.Now().Add(5 * time.Second)
		for len(emu.ENIs()) != want && time.Now().Before(waitFor) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := len(emu.ENIs()); got != want {
			t.Fatalf("after=%v: %d ENIs, want %d", after, got, want)
		}
		// the gate is one-shot
		if _, err := c.CreateENI(context.Background(), "vsw-pod", "", 0, nil, ecsapi.NewToken()); err != nil {
			t.Fatalf("after=%v: the next call: %v", after, err)
		}
	}
}

// The lab's cloud accounting reads every ENI, unsigned, from DebugENIsPath.
func TestDebugENIsView(t *testing.T) {
	emu, base := start(t, baseConfig())
	c := client(t, base, nil)
	eni, err := c.CreateENI(context.Background(), "vsw-pod", "sg-1", 2, map[string]string{"k": "v"}, ecsapi.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(base + ecsemu.DebugENIsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []ecsemu.ENI
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d, %v", ecsemu.DebugENIsPath, resp.StatusCode, err)
	}
	want := emu.ENIs()
	if len(got) != len(want) {
		t.Fatalf("debug view lists %d ENIs, the emulator holds %d", len(got), len(want))
	}
	for i := range got {
		if got[i].ID == eni.ID && len(got[i].Secondary) != 2 {
			t.Fatalf("ENI %s in the debug view has %v, want 2 secondary IPs", eni.ID, got[i].Secondary)
		}
	}
}

// The emulator lays out vSwitches as ECS does: the first address and the
// last three are reserved, the gateway metadata gives is the first of those
// three (x.x.x.253 of a /24, the last address minus 2 of any size), and the
// first host (.1) is an ordinary address an ENI can get.
func TestVSwitchLayoutAsECS(t *testing.T) {
	_, base := start(t, baseConfig())
	c := client(t, base, nil)
	ctx := context.Background()
	md := metadata.New(base + "/i/i-node1")
	in, err := md.Instance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if gw, err := md.Gateway(ctx, in.PrimaryMAC); err != nil || gw.String() != "10.0.1.253" {
		t.Fatalf("gateway of the node's /24 vSwitch: %v %v, want 10.0.1.253", gw, err)
	}
	// a /29 (10.0.2.0-7): .0 and .5-.7 reserved, the gateway .5
	vs, err := c.DescribeVSwitch(ctx, "vsw-tiny")
	if err != nil || vs.Available != 4 {
		t.Fatalf("vsw-tiny: %+v %v, want 4 usable addresses", vs, err)
	}
	if _, err := c.CreateENI(ctx, "vsw-tiny", "", 0, nil, ecsapi.NewToken()); err != nil {
		t.Fatal(err)
	}
	es, err := c.DescribeENIs(ctx, ecsapi.Filter{VSwitchID: "vsw-tiny"})
	if err != nil || len(es) != 1 {
		t.Fatalf("%v %v", es, err)
	}
	for _, reserved := range []string{"10.0.2.0", "10.0.2.5", "10.0.2.6", "10.0.2.7"} {
		if _, _, err := c.AssignIPs(ctx, es[0].ID, 0, []netip.Addr{netip.MustParseAddr(reserved)}, 0, ecsapi.NewToken()); ecsapi.Code(err) != "InvalidPrivateIpAddress.Malformed" {
			t.Errorf("assign reserved %s: %v, want InvalidPrivateIpAddress.Malformed", reserved, err)
		}
	}
	got := []netip.Addr{es[0].PrimaryIP}
	ips, _, err := c.AssignIPs(ctx, es[0].ID, 3, nil, 0, ecsapi.NewToken())
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, ips...)
	if fmt.Sprint(got) != "[10.0.2.1 10.0.2.2 10.0.2.3 10.0.2.4]" {
		t.Fatalf("the /29's addresses went out as %v, want .1 to .4", got)
	}
	if err := c.AttachENI(ctx, es[0].ID, "i-node1"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, es[0].ID, "InUse")
	if gw, err := md.Gateway(ctx, es[0].MAC); err != nil || gw.String() != "10.0.2.5" {
		t.Fatalf("gateway of the /29: %v %v, want 10.0.2.5", gw, err)
	}
}

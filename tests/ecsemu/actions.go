package ecsemu

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// maxSecondaryWithoutInstance bounds IPs on an ENI that is not attached
// (ECS checks the instance type only on attach or assign to an attached ENI).
const maxIPsUnattached = 50

// maxPrefixesPerCall: AssignPrivateIpAddresses takes Ipv4PrefixCount 1..10 (and at most 10 Ipv4Prefix.N).
const maxPrefixesPerCall = 10

// dispatch runs one action and returns the HTTP status and body. ClientToken
// makes Create and Assign idempotent: a repeated token returns the first
// successful answer without doing the work again.
func (e *Emulator) dispatch(action string, p url.Values) (int, []byte) {
	token := p.Get("ClientToken")
	key := action + "/" + token
	if token != "" {
		e.mu.Lock()
		c, ok := e.tokens[key]
		e.mu.Unlock()
		if ok {
			return c.status, c.body
		}
	}
	var out map[string]any
	var err *APIError
	switch action {
	case "CreateNetworkInterface":
		out, err = e.createENI(p)
	case "AttachNetworkInterface":
		out, err = e.attachENI(p)
	case "DetachNetworkInterface":
		out, err = e.detachENI(p)
	case "DeleteNetworkInterface":
		out, err = e.deleteENI(p)
	case "DescribeNetworkInterfaces":
		out, err = e.describeENIs(p)
	case "AssignPrivateIpAddresses":
		out, err = e.assignIPs(p)
	case "UnassignPrivateIpAddresses":
		out, err = e.unassignIPs(p)
	case "DescribeInstanceTypes":
		out, err = e.describeInstanceTypes(p)
	case "DescribeVSwitches":
		out, err = e.describeVSwitches(p)
	default:
		err = apiErr(404, CodeUnsupportedAction, "Specified api %q is not found, please check your url and method.", action)
	}
	if err != nil {
		return err.Status, e.errorBody(err)
	}
	out["RequestId"] = e.requestID()
	b := marshal(out)
	if token != "" {
		e.mu.Lock()
		if c, ok := e.tokens[key]; ok { // a concurrent retry won the race
			e.mu.Unlock()
			return c.status, c.body
		}
		e.tokens[key] = cached{200, b}
		e.mu.Unlock()
	}
	return 200, b
}

func missing(name string) *APIError {
	return apiErr(400, CodeMissingParameter, "The input parameter %q that is mandatory for processing this request is not supplied.", name)
}

// repeated reads Name.1, Name.2, ... until the first gap.
func repeated(p url.Values, name string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := p[name+"."+strconv.Itoa(i)]
		if !ok || len(v) == 0 {
			return out
		}
		out = append(out, v[0])
	}
}

func tags(p url.Values) map[string]string {
	out := map[string]string{}
	for i := 1; ; i++ {
		k := p.Get("Tag." + strconv.Itoa(i) + ".Key")
		if k == "" {
			return out
		}
		out[k] = p.Get("Tag." + strconv.Itoa(i) + ".Value")
	}
}

func intParam(p url.Values, name string, def int) (int, *APIError) {
	s := p.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, apiErr(400, CodeInvalidParameter, "The specified parameter %q is not valid: %q is not a non-negative integer.", name, s)
	}
	return n, nil
}

func (e *Emulator) ipLimit(x *ENI) int {
	if x.InstanceID != "" {
		if in, ok := e.instances[x.InstanceID]; ok {
			return e.types[in.Type].IPsPerENI
		}
	}
	return maxIPsUnattached
}

func ipCount(x *ENI) int { return 1 + len(x.Secondary) + len(x.Prefixes) }

func (e *Emulator) createENI(p url.Values) (map[string]any, *APIError) {
	vsID := p.Get("VSwitchId")
	if vsID == "" {
		return nil, missing("VSwitchId")
	}
	n, aerr := intParam(p, "SecondaryPrivateIpAddressCount", 0)
	if aerr != nil {
		return nil, aerr
	}
	explicit := repeated(p, "PrivateIpAddress")
	e.mu.Lock()
	defer e.mu.Unlock()
	vs, ok := e.vswitches[vsID]
	if !ok {
		return nil, apiErr(404, CodeVSwitchNotFound, "Specified virtual switch does not exist.")
	}
	if 1+n+len(explicit) > maxIPsUnattached {
		return nil, apiErr(403, CodeIPCountExceeded, "The maximum number of IPv4 addresses on an ENI is %d.", maxIPsUnattached)
	}
	want, err := e.explicitAddrs(vs, explicit)
	if err != nil {
		return nil, err
	}
	if vs.available() < 1+n {
		for _, a := range want {
			vs.free(a)
		}
		return nil, apiErr(403, CodeIPNotEnough, "The specified VSwitch %q has not enough IpAddress.", vsID)
	}
	ips := vs.take(1 + n)
	x := &ENI{ID: e.newID("eni-"), MAC: e.newMAC(), VSwitchID: vsID, Status: StatusAvailable, Type: "Secondary",
		PrimaryIP: ips[0], Secondary: append(ips[1:], want...), Tags: tags(p), Created: time.Now().UTC()}
	e.seq++
	x.seq = e.seq
	e.enis[x.ID] = x
	out := map[string]any{
		"NetworkInterfaceId": x.ID, "MacAddress": x.MAC, "Status": x.Status, "Type": x.Type,
		"VpcId": e.cfg.VPCID, "VSwitchId": vsID, "ZoneId": vs.ZoneID, "PrivateIpAddress": x.PrimaryIP.String(),
		"NetworkInterfaceName": p.Get("NetworkInterfaceName"), "Description": p.Get("Description"),
		"PrivateIpSets": map[string]any{"PrivateIpSet": privateIPSets(x)},
		"Tags":          map[string]any{"Tag": tagList(x.Tags)},
	}
	return out, nil
}

// explicitAddrs reserves explicitly requested addresses (must be locked).
func (e *Emulator) explicitAddrs(vs *vswitch, explicit []string) ([]netip.Addr, *APIError) {
	var out []netip.Addr
	for _, s := range explicit {
		a, err := netip.ParseAddr(s)
		if err != nil || !vs.usable(a) {
			for _, b := range out {
				vs.free(b)
			}
			return nil, apiErr(400, "InvalidPrivateIpAddress.Malformed", "Specified private IP address %q is not valid in vSwitch %s.", s, vs.ID)
		}
		if vs.used[a] {
			for _, b := range out {
				vs.free(b)
			}
			return nil, apiErr(400, "InvalidPrivateIpAddress.Duplicated", "Specified private IP address %q is already in use.", s)
		}
		vs.used[a] = true
		out = append(out, a)
	}
	return out, nil
}

func privateIPSets(x *ENI) []map[string]any {
	out := []map[string]any{{"PrivateIpAddress": x.PrimaryIP.String(), "Primary": true}}
	for _, a := range x.Secondary {
		out = append(out, map[string]any{"PrivateIpAddress": a.String(), "Primary": false})
	}
	return out
}

// omitIPs drops the sets of the given addresses (Faults.OmitIPs).
func omitIPs(sets []map[string]any, omit []netip.Addr) []map[string]any {
	return slices.DeleteFunc(sets, func(m map[string]any) bool {
		a, err := netip.ParseAddr(m["PrivateIpAddress"].(string))
		return err == nil && slices.Contains(omit, a)
	})
}

func tagList(t map[string]string) []map[string]string {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := []map[string]string{}
	for _, k := range keys {
		out = append(out, map[string]string{"Key": k, "Value": t[k], "TagKey": k, "TagValue": t[k]})
	}
	return out
}

func (e *Emulator) eni(id string) (*ENI, *APIError) {
	if id == "" {
		return nil, missing("NetworkInterfaceId")
	}
	x, ok := e.enis[id]
	if !ok {
		return nil, apiErr(404, CodeENINotFound, "Specified network interface %q does not exist.", id)
	}
	return x, nil
}

func (e *Emulator) attachedCount(instanceID string) int {
	n := 0
	for _, x := range e.enis {
		if x.InstanceID == instanceID && (x.Status == StatusInUse || x.Status == StatusAttaching || x.Status == StatusDetaching) {
			n++
		}
	}
	return n
}

func (e *Emulator) attachENI(p url.Values) (map[string]any, *APIError) {
	instID := p.Get("InstanceId")
	if instID == "" {
		return nil, missing("InstanceId")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x, err := e.eni(p.Get("NetworkInterfaceId"))
	if err != nil {
		return nil, err
	}
	in, ok := e.instances[instID]
	if !ok {
		return nil, apiErr(404, CodeInstanceNotFound, "Specified instance %q does not exist.", instID)
	}
	if x.Status != StatusAvailable {
		return nil, apiErr(403, CodeInvalidENIState, "The current status of the network interface %s (%s) does not support this operation.", x.ID, x.Status)
	}
	t := e.types[in.Type]
	if e.attachedCount(instID) >= t.ENIQuantity {
		return nil, apiErr(403, CodeENILimit, "The number of ENIs on instance %s has reached the limit %d of instance type %s.", instID, t.ENIQuantity, t.ID)
	}
	if ipCount(x) > t.IPsPerENI {
		return nil, apiErr(403, CodeIPCountExceeded, "The ENI holds %d IPv4 addresses; instance type %s allows %d.", ipCount(x), t.ID, t.IPsPerENI)
	}
	x.Status, x.InstanceID = StatusAttaching, instID
	x.DeviceIndex = e.freeDeviceIndex(instID)
	link := e.linkOf(x)
	e.wg.Add(1)
	go e.finish(x.ID, link, instID, true)
	return map[string]any{}, nil
}

func (e *Emulator) freeDeviceIndex(instID string) int {
	used := map[int]bool{0: true}
	for _, x := range e.enis {
		if x.InstanceID == instID && x.Type == "Secondary" && x.Status != StatusAvailable {
			used[x.DeviceIndex] = true
		}
	}
	for i := 1; ; i++ {
		if !used[i] {
			return i
		}
	}
}

func (e *Emulator) linkOf(x *ENI) ENILink {
	hw, _ := net.ParseMAC(x.MAC)
	return ENILink{ID: x.ID, MAC: hw, DeviceIndex: x.DeviceIndex}
}

// finish completes an attach or detach after AttachDelay, making the kernel
// link appear or disappear before the state says so, as on a real instance.
func (e *Emulator) finish(id string, link ENILink, instID string, attach bool) {
	defer e.wg.Done()
	time.Sleep(e.cfg.AttachDelay)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if e.cfg.Attacher != nil {
		if attach {
			err = e.cfg.Attacher.AttachLink(ctx, instID, link)
		} else {
			err = e.cfg.Attacher.DetachLink(ctx, instID, link)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.enis[id]
	if !ok {
		return
	}
	switch {
	case attach && err == nil:
		x.Status = StatusInUse
	case attach:
		e.log.Error("attach link failed; ENI back to Available", "eni", id, "err", err)
		x.Status, x.InstanceID = StatusAvailable, ""
	case err != nil:
		e.log.Error("detach link failed; ENI stays InUse", "eni", id, "err", err)
		x.Status = StatusInUse
	default:
		x.Status, x.InstanceID, x.DeviceIndex = StatusAvailable, "", 0
	}
}

func (e *Emulator) detachENI(p url.Values) (map[string]any, *APIError) {
	instID := p.Get("InstanceId")
	if instID == "" {
		return nil, missing("InstanceId")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x, err := e.eni(p.Get("NetworkInterfaceId"))
	if err != nil {
		return nil, err
	}
	if _, ok := e.instances[instID]; !ok {
		return nil, apiErr(404, CodeInstanceNotFound, "Specified instance %q does not exist.", instID)
	}
	if x.Type == "Primary" || x.Status != StatusInUse || x.InstanceID != instID {
		return nil, apiErr(403, CodeInvalidENIState, "The current status of the network interface %s (%s on %q) does not support this operation.", x.ID, x.Status, x.InstanceID)
	}
	x.Status = StatusDetaching
	e.wg.Add(1)
	go e.finish(x.ID, e.linkOf(x), instID, false)
	return map[string]any{}, nil
}

func (e *Emulator) deleteENI(p url.Values) (map[string]any, *APIError) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, err := e.eni(p.Get("NetworkInterfaceId"))
	if err != nil {
		return nil, err
	}
	if x.Status != StatusAvailable || x.Type == "Primary" {
		return nil, apiErr(403, CodeInvalidENIState, "The current status of the network interface %s (%s) does not support this operation.", x.ID, x.Status)
	}
	vs := e.vswitches[x.VSwitchID]
	vs.free(x.PrimaryIP)
	for _, a := range x.Secondary {
		vs.free(a)
	}
	for _, pf := range x.Prefixes {
		vs.freePrefix(pf)
	}
	delete(e.enis, x.ID)
	return map[string]any{}, nil
}

func (e *Emulator) describeENIs(p url.Values) (map[string]any, *APIError) {
	ids := repeated(p, "NetworkInterfaceId")
	want := tags(p)
	e.mu.Lock()
	var match []*ENI
	for _, x := range e.enis {
		if len(ids) > 0 && !slices.Contains(ids, x.ID) {
			continue
		}
		if v := p.Get("InstanceId"); v != "" && x.InstanceID != v {
			continue
		}
		if v := p.Get("VSwitchId"); v != "" && x.VSwitchID != v {
			continue
		}
		if v := p.Get("Status"); v != "" && x.Status != v {
			continue
		}
		if v := p.Get("Type"); v != "" && x.Type != v {
			continue
		}
		ok := true
		for k, v := range want {
			if got, has := x.Tags[k]; !has || (v != "" && got != v) {
				ok = false
			}
		}
		if ok && len(ids) == 0 && slices.Contains(e.faults.OmitENIs, x.ID) {
			continue // left out, and not counted: nothing in the reply tells
		}
		if ok {
			match = append(match, x)
		}
	}
	sort.Slice(match, func(i, j int) bool { return match[i].seq < match[j].seq })
	out := map[string]any{"TotalCount": len(match)}
	if n := e.faults.TruncateListings; n > 0 && len(ids) == 0 && len(match) > n {
		match = match[:n]
	}
	var page []*ENI
	if p.Get("NextToken") != "" || p.Get("MaxResults") != "" {
		max, err := intParam(p, "MaxResults", 10)
		if err != nil {
			e.mu.Unlock()
			return nil, err
		}
		if max < 1 || max > 500 {
			e.mu.Unlock()
			return nil, apiErr(400, CodeInvalidParameter, "The specified parameter \"MaxResults\" must be 1..500.")
		}
		// NextToken is a cursor (the creation sequence of the last ENI
		// served), as ECS's is: ENIs created or deleted between pages never
		// make the next page skip or repeat one, unlike PageNumber.
		after := 0
		if t := p.Get("NextToken"); t != "" {
			n, err := strconv.Atoi(strings.TrimPrefix(t, "seq-"))
			if err != nil || n < 0 || !strings.HasPrefix(t, "seq-") {
				e.mu.Unlock()
				return nil, apiErr(400, "InvalidNextToken.Malformed", "The specified parameter \"NextToken\" is not valid.")
			}
			after = n
		}
		start := sort.Search(len(match), func(i int) bool { return match[i].seq > after })
		end := min(start+max, len(match))
		if start < end {
			page = match[start:end]
		}
		if end < len(match) {
			out["NextToken"] = "seq-" + strconv.Itoa(match[end-1].seq)
		} else {
			out["NextToken"] = ""
		}
	} else {
		num, err := intParam(p, "PageNumber", 1)
		if err != nil {
			e.mu.Unlock()
			return nil, err
		}
		size, err := intParam(p, "PageSize", 10)
		if err != nil {
			e.mu.Unlock()
			return nil, err
		}
		if num < 1 || size < 1 || size > 500 {
			e.mu.Unlock()
			return nil, apiErr(400, CodeInvalidParameter, "PageNumber must be >= 1 and PageSize 1..500.")
		}
		start := (num - 1) * size
		end := min(start+size, len(match))
		if start < end {
			page = match[start:end]
		}
		out["PageNumber"], out["PageSize"] = num, size
	}
	sets := []map[string]any{}
	for _, x := range page {
		vs := e.vswitches[x.VSwitchID]
		pfx := []map[string]string{}
		for _, pf := range x.Prefixes {
			pfx = append(pfx, map[string]string{"Ipv4Prefix": pf.String()})
		}
		sets = append(sets, map[string]any{
			"NetworkInterfaceId": x.ID, "MacAddress": x.MAC, "Status": x.Status, "Type": x.Type,
			"InstanceId": x.InstanceID, "VpcId": e.cfg.VPCID, "VSwitchId": x.VSwitchID, "ZoneId": vs.ZoneID,
			"PrivateIpAddress": x.PrimaryIP.String(), "CreationTime": x.Created.Format(time.RFC3339),
			"PrivateIpSets":  map[string]any{"PrivateIpSet": omitIPs(privateIPSets(x), e.faults.OmitIPs)},
			"Ipv4PrefixSets": map[string]any{"Ipv4PrefixSet": pfx},
			"Tags":           map[string]any{"Tag": tagList(x.Tags)},
			"Attachment":     map[string]any{"InstanceId": x.InstanceID, "DeviceIndex": x.DeviceIndex},
		})
	}
	e.mu.Unlock()
	out["NetworkInterfaceSets"] = map[string]any{"NetworkInterfaceSet": sets}
	return out, nil
}

func (e *Emulator) assignIPs(p url.Values) (map[string]any, *APIError) {
	n, aerr := intParam(p, "SecondaryPrivateIpAddressCount", 0)
	if aerr != nil {
		return nil, aerr
	}
	np, aerr := intParam(p, "Ipv4PrefixCount", 0)
	if aerr != nil {
		return nil, aerr
	}
	explicit := repeated(p, "PrivateIpAddress")
	explicitPfx := repeated(p, "Ipv4Prefix")
	if n == 0 && np == 0 && len(explicit) == 0 && len(explicitPfx) == 0 {
		return nil, missing("SecondaryPrivateIpAddressCount")
	}
	if n > 0 && len(explicit) > 0 {
		return nil, apiErr(400, CodeInvalidParameter, "SecondaryPrivateIpAddressCount and PrivateIpAddress are mutually exclusive.")
	}
	if np > 0 && len(explicitPfx) > 0 {
		return nil, apiErr(400, CodeInvalidParameter, "Ipv4PrefixCount and Ipv4Prefix are mutually exclusive.")
	}
	if np > maxPrefixesPerCall || len(explicitPfx) > maxPrefixesPerCall {
		return nil, apiErr(400, CodeInvalidParameter, "The specified parameter Ipv4PrefixCount/Ipv4Prefix.N is not valid: at most %d prefixes per call.", maxPrefixesPerCall)
	}
	var wantPfx []netip.Prefix
	for _, s := range explicitPfx {
		pf, perr := netip.ParsePrefix(s)
		if perr != nil || !pf.Addr().Is4() || pf.Bits() != 28 || pf != pf.Masked() {
			return nil, apiErr(400, CodeInvalidParameter, "Ipv4Prefix %q must be an aligned IPv4 /28.", s)
		}
		wantPfx = append(wantPfx, pf)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x, err := e.eni(p.Get("NetworkInterfaceId"))
	if err != nil {
		return nil, err
	}
	if x.Status != StatusAvailable && x.Status != StatusInUse {
		return nil, apiErr(403, CodeInvalidENIState, "The current status of the network interface %s (%s) does not support this operation.", x.ID, x.Status)
	}
	limit := e.ipLimit(x)
	if ipCount(x)+n+len(explicit)+np+len(explicitPfx) > limit {
		return nil, apiErr(403, CodeIPCountExceeded, "The ENI %s has %d IPv4 addresses; asking for %d more exceeds the limit %d.", x.ID, ipCount(x), n+len(explicit)+np+len(explicitPfx), limit)
	}
	vs := e.vswitches[x.VSwitchID]
	got, err := e.explicitAddrs(vs, explicit)
	if err != nil {
		return nil, err
	}
	if vs.available() < n+16*np {
		for _, a := range got {
			vs.free(a)
		}
		return nil, apiErr(403, CodeIPNotEnough, "The specified VSwitch %q has not enough IpAddress.", vs.ID)
	}
	got = append(got, vs.take(n)...)
	var pfx []netip.Prefix
	undo := func() {
		for _, a := range got {
			vs.free(a)
		}
		for _, q := range pfx {
			vs.freePrefix(q)
		}
	}
	for _, pf := range wantPfx {
		if !vs.prefixFree(pf) {
			undo()
			return nil, apiErr(403, CodeIPNotEnough, "The prefix %s is outside the VSwitch %q (%s) or some of its addresses are in use.", pf, vs.ID, vs.CIDR)
		}
		vs.takeThisPrefix(pf)
		pfx = append(pfx, pf)
	}
	for range np {
		pf, ok := vs.takePrefix()
		if !ok {
			undo()
			return nil, apiErr(403, CodeIPNotEnough, "The specified VSwitch %q has no free /28 prefix.", vs.ID)
		}
		pfx = append(pfx, pf)
	}
	x.Secondary = append(x.Secondary, got...)
	x.Prefixes = append(x.Prefixes, pfx...)
	ips := make([]string, len(got))
	for i, a := range got {
		ips[i] = a.String()
	}
	ps := make([]string, len(pfx))
	for i, q := range pfx {
		ps[i] = q.String()
	}
	return map[string]any{"AssignedPrivateIpAddressesSet": map[string]any{
		"NetworkInterfaceId": x.ID,
		"PrivateIpSet":       map[string]any{"PrivateIpAddress": ips},
		"Ipv4PrefixSet":      map[string]any{"Ipv4Prefixes": ps},
	}}, nil
}

func (e *Emulator) unassignIPs(p url.Values) (map[string]any, *APIError) {
	ips := repeated(p, "PrivateIpAddress")
	pfxs := repeated(p, "Ipv4Prefix")
	if len(ips) == 0 && len(pfxs) == 0 {
		return nil, missing("PrivateIpAddress")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x, err := e.eni(p.Get("NetworkInterfaceId"))
	if err != nil {
		return nil, err
	}
	if x.Status != StatusAvailable && x.Status != StatusInUse {
		return nil, apiErr(403, CodeInvalidENIState, "The current status of the network interface %s (%s) does not support this operation.", x.ID, x.Status)
	}
	// Validate everything first so a bad request changes nothing.
	var addrs []netip.Addr
	for _, s := range ips {
		a, perr := netip.ParseAddr(s)
		if perr != nil || !slices.Contains(x.Secondary, a) {
			return nil, apiErr(404, CodeIPNotFound, "The private IP address %q is not a secondary address of %s.", s, x.ID)
		}
		addrs = append(addrs, a)
	}
	var pl []netip.Prefix
	for _, s := range pfxs {
		pf, perr := netip.ParsePrefix(s)
		if perr != nil || !slices.Contains(x.Prefixes, pf) {
			return nil, apiErr(404, CodeIPNotFound, "The prefix %q is not assigned to %s.", s, x.ID)
		}
		pl = append(pl, pf)
	}
	vs := e.vswitches[x.VSwitchID]
	for _, a := range addrs {
		x.Secondary = slices.DeleteFunc(x.Secondary, func(b netip.Addr) bool { return a == b })
		vs.free(a)
	}
	for _, pf := range pl {
		x.Prefixes = slices.DeleteFunc(x.Prefixes, func(q netip.Prefix) bool { return pf == q })
		vs.freePrefix(pf)
	}
	return map[string]any{}, nil
}

func (e *Emulator) describeInstanceTypes(p url.Values) (map[string]any, *APIError) {
	want := repeated(p, "InstanceTypes")
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []string
	for id := range e.types {
		if len(want) == 0 || slices.Contains(want, id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	list := []map[string]any{}
	for _, id := range ids {
		t := e.types[id]
		list = append(list, map[string]any{"InstanceTypeId": t.ID, "EniQuantity": t.ENIQuantity,
			"EniPrivateIpAddressQuantity": t.IPsPerENI, "EniTotalQuantity": t.ENIQuantity})
	}
	return map[string]any{"InstanceTypes": map[string]any{"InstanceType": list}, "NextToken": ""}, nil
}

func (e *Emulator) describeVSwitches(p url.Values) (map[string]any, *APIError) {
	num, err := intParam(p, "PageNumber", 1)
	if err != nil {
		return nil, err
	}
	size, err := intParam(p, "PageSize", 10)
	if err != nil {
		return nil, err
	}
	if num < 1 || size < 1 || size > 50 {
		return nil, apiErr(400, CodeInvalidParameter, "PageNumber must be >= 1 and PageSize 1..50.")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var match []*vswitch
	for _, v := range e.vswitches {
		if id := p.Get("VSwitchId"); id != "" && v.ID != id {
			continue
		}
		if z := p.Get("ZoneId"); z != "" && v.ZoneID != z {
			continue
		}
		if vpc := p.Get("VpcId"); vpc != "" && vpc != e.cfg.VPCID {
			continue
		}
		match = append(match, v)
	}
	sort.Slice(match, func(i, j int) bool { return match[i].ID < match[j].ID })
	list := []map[string]any{}
	start, end := (num-1)*size, min(num*size, len(match))
	for i := start; i < end; i++ {
		v := match[i]
		list = append(list, map[string]any{"VSwitchId": v.ID, "VpcId": e.cfg.VPCID, "ZoneId": v.ZoneID,
			"CidrBlock": v.CIDR, "Status": "Available", "AvailableIpAddressCount": v.available(), "VSwitchName": v.ID})
	}
	return map[string]any{"VSwitches": map[string]any{"VSwitch": list}, "TotalCount": len(match),
		"PageNumber": num, "PageSize": size}, nil
}

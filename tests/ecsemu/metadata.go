package ecsemu

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Metadata headers of the IMDSv2-style (hardened) metadata service.
const (
	MetadataTokenHeader    = "X-aliyun-ecs-metadata-token"
	MetadataTokenTTLHeader = "X-aliyun-ecs-metadata-token-ttl-seconds"
)

// serveMetadata answers one metadata request for instance id. p is the path
// after "latest/".
func (e *Emulator) serveMetadata(w http.ResponseWriter, r *http.Request, id, p string) {
	if p == "api/token" {
		if r.Method != http.MethodPut {
			http.Error(w, "token requires PUT", http.StatusMethodNotAllowed)
			return
		}
		ttl, err := strconv.Atoi(r.Header.Get(MetadataTokenTTLHeader))
		if err != nil || ttl < 1 || ttl > 21600 {
			http.Error(w, MetadataTokenTTLHeader+" must be 1..21600", http.StatusBadRequest)
			return
		}
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		tok := hex.EncodeToString(b)
		e.mu.Lock()
		e.mdTokens[tok] = time.Now().Add(time.Duration(ttl) * time.Second)
		e.mu.Unlock()
		_, _ = w.Write([]byte(tok))
		return
	}
	e.mu.Lock()
	exp, ok := e.mdTokens[r.Header.Get(MetadataTokenHeader)]
	e.mu.Unlock()
	if !ok || time.Now().After(exp) {
		http.Error(w, "missing or expired "+MetadataTokenHeader, http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "metadata is read with GET", http.StatusMethodNotAllowed)
		return
	}
	body, found := e.metadata(id, strings.TrimPrefix(p, "meta-data/"))
	if !found || !strings.HasPrefix(p, "meta-data/") {
		http.NotFound(w, r)
		return
	}
	if strings.HasPrefix(body, "{") || strings.HasPrefix(body, "[") {
		w.Header().Set("Content-Type", "application/json")
	} else {
		w.Header().Set("Content-Type", "text/plain")
	}
	_, _ = w.Write([]byte(body))
}

func (e *Emulator) metadata(id, p string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.instances[id]
	if !ok {
		return "", false
	}
	primary := e.enis[in.primaryENI]
	vs := e.vswitches[in.VSwitchID]
	switch p {
	case "instance-id":
		return id, true
	case "region-id":
		return e.cfg.RegionID, true
	case "zone-id":
		return vs.ZoneID, true
	case "instance/instance-type":
		return in.Type, true
	case "vpc-id":
		return e.cfg.VPCID, true
	case "vpc-cidr-block":
		return e.cfg.VPCCIDR, e.cfg.VPCCIDR != ""
	case "mac":
		return primary.MAC, true
	case "private-ipv4":
		return primary.PrimaryIP.String(), true
	case "network/interfaces/macs/", "network/interfaces/macs":
		var b strings.Builder
		for _, x := range e.attachedENIs(id) {
			b.WriteString(x.MAC + "/\n")
		}
		return b.String(), true
	case "ram/security-credentials/", "ram/security-credentials":
		if e.cfg.RAMRole == "" {
			return "", false
		}
		return e.cfg.RAMRole, true
	}
	if role, ok := strings.CutPrefix(p, "ram/security-credentials/"); ok {
		if e.cfg.RAMRole == "" || role != e.cfg.RAMRole {
			return "", false
		}
		b, _ := json.Marshal(map[string]string{
			"AccessKeyId": e.stsAK, "AccessKeySecret": e.stsSK, "SecurityToken": e.stsToken,
			"Expiration":  time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05Z"),
			"LastUpdated": time.Now().UTC().Format("2006-01-02T15:04:05Z"), "Code": "Success",
		})
		return string(b), true
	}
	rest, ok := strings.CutPrefix(p, "network/interfaces/macs/")
	if !ok {
		return "", false
	}
	mac, field, _ := strings.Cut(rest, "/")
	var x *ENI
	for _, c := range e.attachedENIs(id) {
		if strings.EqualFold(c.MAC, mac) {
			x = c
		}
	}
	if x == nil {
		return "", false
	}
	evs := e.vswitches[x.VSwitchID]
	if slices.Contains(e.faults.OmitENIMetadata, field) {
		return "", false
	}
	switch field {
	case "network-interface-id":
		return x.ID, true
	case "primary-ip-address":
		return x.PrimaryIP.String(), true
	case "gateway":
		return evs.gateway().String(), true
	case "netmask":
		return net.IP(net.CIDRMask(evs.prefix.Bits(), 32)).String(), true
	case "private-ipv4s":
		ips := []string{x.PrimaryIP.String()}
		for _, a := range x.Secondary {
			ips = append(ips, a.String())
		}
		b, _ := json.Marshal(ips)
		return string(b), true
	case "vswitch-id":
		return x.VSwitchID, true
	case "vswitch-cidr-block":
		return evs.prefix.String(), true
	case "ipv4-prefixes":
		ps := []string{}
		for _, q := range x.Prefixes {
			ps = append(ps, q.String())
		}
		b, _ := json.Marshal(ps)
		return string(b), true
	case "", "/":
		return "network-interface-id\nprimary-ip-address\ngateway\nnetmask\nprivate-ipv4s\nvswitch-id\nvswitch-cidr-block\n", true
	}
	return "", false
}

// attachedENIs lists the instance's ENIs the guest sees (primary first).
func (e *Emulator) attachedENIs(id string) []*ENI {
	var out []*ENI
	for _, x := range e.enis {
		if x.InstanceID == id && x.Status == StatusInUse {
			out = append(out, x)
		}
	}
	sortENIs(out)
	return out
}

func sortENIs(xs []*ENI) {
	for i := 1; i < len(xs); i++ {
		for j := i; j > 0 && xs[j].seq < xs[j-1].seq; j-- {
			xs[j], xs[j-1] = xs[j-1], xs[j]
		}
	}
}

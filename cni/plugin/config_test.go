package plugin

import (
	"os"

	"errors"
	"github.com/containernetworking/cni/libcni"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		code     uint
		want     string // substring of the message naming the field
	}{
		{"ok", `{"cniVersion":"1.1.0","name":"strata","type":"strata-cni"}`, 0, ""},
		{"ok old", `{"cniVersion":"0.3.1","name":"strata","type":"strata-cni","socket":"/run/x.sock","timeoutSeconds":5}`, 0, ""},
		{"malformed", `{"cniVersion":`, types.ErrDecodingFailure, "not valid JSON"},
		{"no version", `{"name":"strata"}`, types.ErrInvalidNetworkConfig, `"cniVersion"`},
		{"unknown version", `{"cniVersion":"9.9.9","name":"strata"}`, types.ErrIncompatibleCNIVersion, `"cniVersion"`},
		{"no name", `{"cniVersion":"1.0.0"}`, types.ErrInvalidNetworkConfig, `"name"`},
		{"bad name", `{"cniVersion":"1.0.0","name":"a b"}`, types.ErrInvalidNetworkConfig, `"name"`},
		{"relative socket", `{"cniVersion":"1.0.0","name":"n","socket":"run/x.sock"}`, types.ErrInvalidNetworkConfig, `"socket"`},
		{"bad timeout", `{"cniVersion":"1.0.0","name":"n","timeoutSeconds":-1}`, types.ErrInvalidNetworkConfig, `"timeoutSeconds"`},
		{"wrong type", `{"cniVersion":"1.0.0","name":"n","timeoutSeconds":"x"}`, types.ErrDecodingFailure, "timeoutSeconds"},
		{"bad prevResult", `{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"nope"}]}}`, types.ErrDecodingFailure, `"prevResult"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.in))
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if c.Socket == "" || c.Timeout() <= 0 {
					t.Fatalf("defaults not applied: %+v", c)
				}
				return
			}
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("want *types.Error, got %v", err)
			}
			if te.Code != tc.code || !strings.Contains(te.Msg, tc.want) {
				t.Fatalf("got code %d %q, want code %d mentioning %s", te.Code, te.Msg, tc.code, tc.want)
			}
		})
	}
}

func TestParseConfigPrevResultAndGC(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.1.1.2/32"}]},
		"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := current.NewResultFromResult(c.PrevResult)
	if err != nil || len(r.IPs) != 1 {
		t.Fatalf("prevResult: %v %v", r, err)
	}
	if len(c.ValidAttachments) != 1 || c.ValidAttachments[0].ContainerID != "a" {
		t.Fatalf("valid attachments: %+v", c.ValidAttachments)
	}
}

func TestParseArgs(t *testing.T) {
	ok := []string{"", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc", "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns.x-1"}
	for _, s := range ok {
		if _, err := ParseArgs(s); err != nil {
			t.Errorf("ParseArgs(%q): %v", s, err)
		}
	}
	bad := map[string]string{
		"K8S_POD_NAMESPACE=default;K8S_POD_NAME=Bad_Name": "K8S_POD_NAME",
		"K8S_POD_NAMESPACE=Not.OK;K8S_POD_NAME=web":       "K8S_POD_NAMESPACE",
		"K8S_POD_NAME=web": "K8S_POD_NAMESPACE",
		"garbage":          "CNI_ARGS",
		"UNKNOWN=1":        "CNI_ARGS",
	}
	for s, field := range bad {
		_, err := ParseArgs(s)
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(te.Msg, field) {
			t.Errorf("ParseArgs(%q) = %v, want code 4 naming %s", s, err, field)
		}
	}
	p, _ := ParseArgs("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p")
	if p.Namespace != "ns" || p.Name != "p" {
		t.Errorf("got %+v", p)
	}
}

func TestHostVethName(t *testing.T) {
	a, b := hostVethName("c1", "eth0"), hostVethName("c1", "eth1")
	if a == b || len(a) > 15 || !strings.HasPrefix(a, HostVethPrefix) || a != hostVethName("c1", "eth0") {
		t.Fatalf("host veth names %q %q", a, b)
	}
}

func TestMergeShiftsInterfaceIndices(t *testing.T) {
	zero, one := 0, 1
	prev := &current.Result{CNIVersion: "1.0.0", Interfaces: []*current.Interface{{Name: "a"}}, IPs: []*current.IPConfig{{Interface: &zero}}}
	mine := &current.Result{CNIVersion: "1.0.0", Interfaces: []*current.Interface{{Name: "h"}, {Name: "eth0"}}, IPs: []*current.IPConfig{{Interface: &one}}}
	got, err := merge(prev, mine)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Interfaces) != 3 || *got.IPs[1].Interface != 2 || *got.IPs[0].Interface != 0 {
		t.Fatalf("merged %+v", got)
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"strata","type":"strata-cni"}`,
		`{"cniVersion":"0.4.0","name":"n","socket":"/a/b","timeoutSeconds":3,"prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/32"}]}}`,
		`{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"x","ifname":"eth0"}]}`,
		`{`, `null`, `[]`, `{"cniVersion":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := ParseConfig(in)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code == 0 || te.Msg == "" {
				t.Fatalf("error without a CNI code and message: %v", err)
			}
			return
		}
		if c.Name == "" || c.Socket == "" || c.Timeout() <= 0 {
			t.Fatalf("accepted config lacks defaults: %+v", c)
		}
	})
}

func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{"", "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b", "IgnoreUnknown=1;X=y", "=;;="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseArgs(s)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code != types.ErrInvalidEnvironmentVariables {
				t.Fatalf("error without code 4: %v", err)
			}
			return
		}
		if (p.Name == "") != (p.Namespace == "") {
			t.Fatalf("accepted half a pod identity: %+v", p)
		}
	})
}

// The shipped example must parse as libcni and strata-cni read it.
func TestExampleConflist(t *testing.T) {
	b, err := os.ReadFile("../../deploy/cni/10-strata.conflist")
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Plugins) != 3 || list.Plugins[0].Network.Type != "strata-cni" {
		t.Fatalf("unexpected plugins %+v", list.Plugins)
	}
	conf, err := libcni.InjectConf(list.Plugins[0], map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseConfig(conf.Bytes); err != nil {
		t.Fatalf("strata-cni rejects the example: %v", err)
	}
}

package plugin

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"
	"k8s.io/apimachinery/pkg/api/validate/content"

	"github.com/strata-net/strata/cni/wire"
)

// SupportedVersions are the CNI spec versions strata-cni speaks.
var SupportedVersions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// PluginInfo is what VERSION reports.
var PluginInfo = version.PluginSupports(SupportedVersions...)

// DefaultTimeout bounds each call to the agent unless the config says
// otherwise.
const DefaultTimeout = 30 * time.Second

// Config is strata-cni's network configuration.
//
//	{"cniVersion": "1.1.0", "name": "strata", "type": "strata-cni",
//	 "socket": "/run/strata/cni.sock", "timeoutSeconds": 30}
type Config struct {
	types.PluginConf
	// Socket is the agent's CNI socket; default wire.DefaultSocket.
	Socket string `json:"socket,omitempty"`
	// TimeoutSeconds bounds each call to the agent, 1..300; default 30.
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// Timeout is the bound for one agent call.
func (c *Config) Timeout() time.Duration {
	if c.TimeoutSeconds == 0 {
		return DefaultTimeout
	}
	return time.Duration(c.TimeoutSeconds) * time.Second
}

// ParseConfig decodes and validates stdin. Its errors are *types.Error with
// the spec's code and a message naming the field at fault.
func ParseConfig(stdin []byte) (*Config, error) {
	c := &Config{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("network config is not valid JSON: %v", err), "fix the JSON on stdin")
	}
	if c.CNIVersion == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, `field "cniVersion" is missing`, "set it to one of "+strings.Join(SupportedVersions, ", "))
	}
	if !slices.Contains(SupportedVersions, c.CNIVersion) {
		return nil, types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf(`field "cniVersion" is %q, which strata-cni does not support`, c.CNIVersion), "use one of "+strings.Join(SupportedVersions, ", "))
	}
	if c.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, `field "name" is missing`, "give the network a name")
	}
	if err := utils.ValidateNetworkName(c.Name); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`field "name" is %q: %s`, c.Name, err.Msg), "use letters, digits, '_', '.' and '-', starting with a letter or digit")
	}
	if c.Socket == "" {
		c.Socket = wire.DefaultSocket
	}
	if !filepath.IsAbs(c.Socket) || filepath.Clean(c.Socket) != c.Socket {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`field "socket" is %q: it must be a clean absolute path`, c.Socket), "e.g. "+wire.DefaultSocket)
	}
	if c.TimeoutSeconds < 0 || c.TimeoutSeconds > 300 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`field "timeoutSeconds" is %d: use 1..300 (0 means %s)`, c.TimeoutSeconds, DefaultTimeout), "")
	}
	if c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf(`field "prevResult" cannot be parsed: %v`, err), "")
		}
	}
	return c, nil
}

// k8sArgs are the CNI_ARGS a Kubernetes runtime passes.
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive,staticcheck // names fixed by the runtimes
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive,staticcheck
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive,staticcheck
	K8S_POD_UID                types.UnmarshallableString //nolint:revive,staticcheck
}

// PodArgs are the pod identity from CNI_ARGS; both may be empty outside
// Kubernetes.
type PodArgs struct {
	Namespace, Name string
}

// ParseArgs decodes and validates CNI_ARGS. Errors carry code 4 and name the
// key at fault.
func ParseArgs(s string) (PodArgs, error) {
	var a k8sArgs
	if err := types.LoadArgs(s, &a); err != nil {
		return PodArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS cannot be parsed: %v", err), "use KEY=VALUE pairs separated by ';' (add IgnoreUnknown=1 for keys strata-cni does not know)")
	}
	p := PodArgs{Namespace: string(a.K8S_POD_NAMESPACE), Name: string(a.K8S_POD_NAME)}
	if p.Name != "" {
		if msgs := content.IsDNS1123Subdomain(p.Name); len(msgs) > 0 {
			return PodArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS K8S_POD_NAME %q is not a valid pod name: %s", p.Name, strings.Join(msgs, "; ")), "")
		}
	}
	if p.Namespace != "" {
		if msgs := content.IsDNS1123Label(p.Namespace); len(msgs) > 0 {
			return PodArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS K8S_POD_NAMESPACE %q is not a valid namespace: %s", p.Namespace, strings.Join(msgs, "; ")), "")
		}
	}
	if (p.Name == "") != (p.Namespace == "") {
		return PodArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS has only one of K8S_POD_NAME and K8S_POD_NAMESPACE", "pass both or neither")
	}
	return p, nil
}

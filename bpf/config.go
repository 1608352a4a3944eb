package bpf

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// Setting is the per-node fast-path switch an operator sets (agent flag
// --bpf-fastpath or the node pool's config).
type Setting string

const (
	// SettingAuto turns the fast path on when the kernel supports it.
	SettingAuto Setting = "auto"
	// SettingOn requires it: the agent refuses to start without kernel support.
	SettingOn Setting = "on"
	// SettingOff keeps pod traffic on plain kernel routing.
	SettingOff Setting = "off"
)

// ParseSetting accepts auto, on/true/enabled and off/false/disabled, in any
// case. The empty string means auto.
func ParseSetting(s string) (Setting, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return SettingAuto, nil
	case "on", "true", "enabled":
		return SettingOn, nil
	case "off", "false", "disabled":
		return SettingOff, nil
	}
	return "", fmt.Errorf("bpf fast path setting %q: want auto, on or off", s)
}

// String implements pflag.Value.
func (s *Setting) String() string {
	if *s == "" {
		return string(SettingAuto)
	}
	return string(*s)
}

// Set implements pflag.Value.
func (s *Setting) Set(v string) error {
	p, err := ParseSetting(v)
	if err != nil {
		return err
	}
	*s = p
	return nil
}

// Type implements pflag.Value.
func (s *Setting) Type() string { return "auto|on|off" }

// Config is the agent's fast-path configuration.
type Config struct {
	Setting Setting
	Attach  AttachMode
	// NetfilterIgnore are the tables and table/chains whose forward rules
	// do not make the fast path step aside (DefaultForwardIgnore).
	NetfilterIgnore []string
}

// AddFlags registers --bpf-fastpath and --bpf-attach on fs.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	if c.Setting == "" {
		c.Setting = SettingAuto
	}
	fs.Var(&c.Setting, "bpf-fastpath", "eBPF pod fast path: auto (on when the kernel supports it), on (required) or off")
	fs.Var((*attachFlag)(&c.Attach), "bpf-attach", "how to attach the fast path: tcx, tc (clsact + cls_bpf) or empty to probe")
	fs.StringSliceVar(&c.NetfilterIgnore, "bpf-netfilter-ignore", DefaultForwardIgnore, "netfilter tables (name) and chains (table/chain) whose forward rules never filter pod-to-pod traffic; any other forward rule that drops, rejects or queues makes the auto fast path step aside (docs/bpf.md)")
}

type attachFlag AttachMode

func (a *attachFlag) String() string { return string(*a) }
func (a *attachFlag) Type() string   { return "tcx|tc" }
func (a *attachFlag) Set(v string) error {
	switch m := AttachMode(strings.ToLower(strings.TrimSpace(v))); m {
	case AttachAuto, AttachTCX, AttachLegacyTC:
		*a = attachFlag(m)
		return nil
	}
	return fmt.Errorf("bpf attach mode %q: want tcx, tc or empty", v)
}

// Decision is whether the fast path runs on this node, and why: the plan and
// `strata status` show it.
type Decision struct {
	Active bool
	Reason string
}

// Decide combines the setting with the kernel probe result (Supported()).
// It returns an error only when the setting is "on" and the kernel cannot
// run the fast path.
func Decide(s Setting, probe error) (Decision, error) {
	switch s {
	case SettingOff:
		return Decision{Active: false, Reason: "switched off by configuration"}, nil
	case SettingOn:
		if probe != nil {
			return Decision{Reason: probe.Error()}, fmt.Errorf("bpf fast path is required (--bpf-fastpath=on) but unsupported: %w; set --bpf-fastpath=auto or off", probe)
		}
		return Decision{Active: true, Reason: "required by configuration; kernel supports it"}, nil
	case SettingAuto, "":
		if probe != nil {
			return Decision{Reason: "kernel lacks support, using kernel routing: " + probe.Error()}, nil
		}
		return Decision{Active: true, Reason: "kernel supports it"}, nil
	}
	return Decision{}, fmt.Errorf("bpf fast path setting %q: want auto, on or off", s)
}

package bpf

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestParseSetting(t *testing.T) {
	for in, want := range map[string]Setting{"": SettingAuto, "AUTO": SettingAuto, "on": SettingOn, "true": SettingOn, " off ": SettingOff, "disabled": SettingOff} {
		got, err := ParseSetting(in)
		if err != nil || got != want {
			t.Errorf("ParseSetting(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseSetting("fast"); err == nil || !strings.Contains(err.Error(), "auto, on or off") {
		t.Errorf("bad setting: error %v should list the choices", err)
	}
}

func FuzzParseSetting(f *testing.F) {
	for _, s := range []string{"", "auto", "on", "off", "TRUE", "xdp", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSetting(s)
		if err != nil {
			return
		}
		if got != SettingAuto && got != SettingOn && got != SettingOff {
			t.Fatalf("ParseSetting(%q) = %q, not a known setting", s, got)
		}
		// Parsing the canonical form gives the same setting.
		again, err := ParseSetting(string(got))
		if err != nil || again != got {
			t.Fatalf("canonical %q does not round-trip: %q, %v", got, again, err)
		}
	})
}

func TestConfigFlags(t *testing.T) {
	var c Config
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	c.AddFlags(fs)
	if c.Setting != SettingAuto {
		t.Fatalf("default setting %q, want auto", c.Setting)
	}
	if err := fs.Parse([]string{"--bpf-fastpath=off", "--bpf-attach=tc"}); err != nil {
		t.Fatal(err)
	}
	if c.Setting != SettingOff || c.Attach != AttachLegacyTC {
		t.Fatalf("parsed %+v", c)
	}
	if err := fs.Parse([]string{"--bpf-attach=xdp"}); err == nil {
		t.Fatal("--bpf-attach=xdp accepted")
	}
}

func TestDecide(t *testing.T) {
	noKernel := errors.New("kernel lacks helper FnRedirectPeer")
	cases := []struct {
		s       Setting
		probe   error
		active  bool
		wantErr bool
	}{
		{SettingAuto, nil, true, false},
		{SettingAuto, noKernel, false, false},
		{SettingOn, nil, true, false},
		{SettingOn, noKernel, false, true},
		{SettingOff, nil, false, false},
		{"bogus", nil, false, true},
	}
	for _, tc := range cases {
		d, err := Decide(tc.s, tc.probe)
		if d.Active != tc.active || (err != nil) != tc.wantErr || d.Reason == "" && !tc.wantErr {
			t.Errorf("Decide(%q, %v) = %+v, %v", tc.s, tc.probe, d, err)
		}
	}
}

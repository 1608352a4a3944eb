package metadata

import (
	"net/netip"
	"testing"
)

func TestParseMACList(t *testing.T) {
	got, err := ParseMACList("00:16:3E:00:01:11/\n00:16:3e:0a:0b:0c/\n\n")
	if err != nil || len(got) != 2 || got[0] != "00:16:3e:00:01:11" {
		t.Fatalf("%v %v", got, err)
	}
	if _, err := ParseMACList("not-a-mac/"); err == nil {
		t.Fatal("want an error for a bad MAC")
	}
}

func TestParseIPList(t *testing.T) {
	got, err := ParseIPList(`["10.0.64.5","10.0.64.6"]`)
	if err != nil || len(got) != 2 || got[1] != netip.MustParseAddr("10.0.64.6") {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{`10.0.64.5`, `["x"]`, `{}`} {
		if _, err := ParseIPList(bad); err == nil {
			t.Errorf("want an error for %q", bad)
		}
	}
}

func FuzzParseMACList(f *testing.F) {
	f.Add("00:16:3e:00:01:11/\n00:16:3e:00:01:12/\n")
	f.Add("")
	f.Add("/\n/")
	f.Fuzz(func(t *testing.T, s string) {
		macs, err := ParseMACList(s)
		if err != nil {
			return
		}
		for _, m := range macs {
			if _, err := ParseMACList(m + "/"); err != nil {
				t.Fatalf("round trip of %q: %v", m, err)
			}
		}
	})
}

func FuzzParseIPList(f *testing.F) {
	f.Add(`["10.0.64.5"]`)
	f.Add(`[]`)
	f.Add(`[1]`)
	f.Fuzz(func(t *testing.T, s string) {
		ips, err := ParseIPList(s)
		if err == nil {
			for _, a := range ips {
				if !a.IsValid() {
					t.Fatalf("invalid address accepted from %q", s)
				}
			}
		}
	})
}

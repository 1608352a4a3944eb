package metadata

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Gateway takes the address the service gives and never guesses: a missing
// or malformed answer is an error naming the MAC and --metadata-url.
func TestGateway(t *testing.T) {
	const mac = "00:16:3e:00:00:01"
	answers := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/latest/api/token" {
			_, _ = w.Write([]byte("tok"))
			return
		}
		v, ok := answers[strings.TrimPrefix(r.URL.Path, "/latest/meta-data/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(v))
	}))
	defer srv.Close()
	c := New(srv.URL)
	ctx := context.Background()
	path := "network/interfaces/macs/" + mac + "/gateway"
	if _, err := c.Gateway(ctx, mac); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), mac) || !strings.Contains(err.Error(), "--metadata-url") {
		t.Fatalf("no gateway: %v", err)
	}
	for _, bad := range []string{"", "10.0.1", "fd00::1", "10.0.1.253/24"} {
		answers[path] = bad
		if gw, err := c.Gateway(ctx, mac); err == nil || !strings.Contains(err.Error(), mac) {
			t.Errorf("gateway %q: %v %v, want an error naming the MAC", bad, gw, err)
		}
	}
	answers[path] = "10.0.79.253\n"
	if gw, err := c.Gateway(ctx, mac); err != nil || gw.String() != "10.0.79.253" {
		t.Fatalf("gateway: %v %v", gw, err)
	}
}

package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-net/strata/bpf"
)

// httpAgent is an agent with only its HTTP surface: the fast path off, no
// role and no plan yet.
func httpAgent(t *testing.T, lim httpLimits) (*Agent, *agentHTTP) {
	t.Helper()
	fast, err := newPodFastpath(bpf.Config{Setting: bpf.SettingOff}, nil, nil, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: Config{NodeName: "n1", MetricsAddr: "127.0.0.1:0", ControlSocket: filepath.Join(t.TempDir(), "run", "agent.sock")},
		reg: prometheus.NewRegistry(), log: slog.Default(), fast: fast}
	old := controlAllowUID
	controlAllowUID = os.Getuid()
	t.Cleanup(func() { controlAllowUID = old })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h, err := a.startHTTP(ctx, lim)
	if err != nil {
		t.Fatal(err)
	}
	return a, h
}

// closedWithin waits for the server to close c and says how long it took.
func closedWithin(t *testing.T, c net.Conn, r io.Reader, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := r.Read(make([]byte, 1))
	took := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v: the server never closed it", limit)
	}
	if !errors.Is(err, io.EOF) {
		t.Fatalf("read: %v, want EOF (server closed)", err)
	}
	return took
}

func TestStatusListenerClosesIdleConnections(t *testing.T) {
	lim := httpLimits{ReadHeader: 300 * time.Millisecond, Read: time.Second, Write: time.Second, Idle: 400 * time.Millisecond, MaxHeaderBytes: 4 << 10}
	_, h := httpAgent(t, lim)

	t.Run("keep-alive connection idle after a request", func(t *testing.T) {
		c, err := net.Dial("tcp", h.tcp.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /healthz: %v %v", resp, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if took := closedWithin(t, c, br, 5*time.Second); took > lim.Idle+time.Second {
			t.Fatalf("idle connection closed after %v, want about %v", took, lim.Idle)
		}
	})
	t.Run("connection that never sends a request", func(t *testing.T) {
		c, err := net.Dial("tcp", h.tcp.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if took := closedWithin(t, c, c, 5*time.Second); took > lim.Read+time.Second {
			t.Fatalf("silent connection closed after %v, want within %v", took, lim.Read)
		}
	})
	t.Run("oversized headers", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+h.tcp.String()+"/healthz", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("64 KiB of headers: %s, want 431", resp.Status)
		}
	})
}

func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
}

func call(t *testing.T, c *http.Client, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestSwitchesOnlyOnTheControlSocket(t *testing.T) {
	_, h := httpAgent(t, defaultHTTPLimits)
	tcp := "http://" + h.tcp.String()
	if code, _ := call(t, http.DefaultClient, http.MethodGet, tcp+"/status"); code != http.StatusOK {
		t.Fatalf("GET /status on TCP: %d", code)
	}
	code, body := call(t, http.DefaultClient, http.MethodPost, tcp+"/bpf/fastpath/off")
	if code != http.StatusMethodNotAllowed || !strings.Contains(body, h.control) {
		t.Fatalf("POST /bpf/fastpath/off on TCP: %d %q, want 405 naming %s", code, body, h.control)
	}
	for _, m := range []string{http.MethodPut, http.MethodDelete, http.MethodPatch} {
		if code, _ := call(t, http.DefaultClient, m, tcp+"/bpf/fastpath/on"); code != http.StatusMethodNotAllowed {
			t.Errorf("%s on TCP: %d, want 405", m, code)
		}
	}

	fi, err := os.Stat(h.control)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %s: mode %v (%v), want a socket with 0600", h.control, fi.Mode(), err)
	}
	uc := unixClient(h.control)
	if code, body := call(t, uc, http.MethodGet, "http://agent/status"); code != http.StatusOK || !strings.Contains(body, `"node": "n1"`) {
		t.Fatalf("GET /status on the socket: %d %s", code, body)
	}
	// The switch is reached: with the fast path not loaded it answers why
	// (TestPrivilegedAgentFastpathFollowsCNI switches a loaded one).
	code, body = call(t, uc, http.MethodPost, "http://agent/bpf/fastpath/off")
	if code != http.StatusConflict || !strings.Contains(body, "not loaded") {
		t.Fatalf("POST /bpf/fastpath/off on the socket: %d %q, want 409 'not loaded'", code, body)
	}
	if code, _ := call(t, uc, http.MethodPost, "http://agent/bpf/fastpath/maybe"); code != http.StatusBadRequest {
		t.Fatalf("bad state on the socket: %d, want 400", code)
	}
	if code, _ := call(t, uc, http.MethodPost, "http://agent/status"); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /status on the socket: %d, want 405", code)
	}
}

package lab

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"crypto/tls"
)

// The lab runs its own kube-apiserver and etcd (not envtest): they live in the
// "ctl" namespace, on the management network, and must outlive the
// `strata-lab up` process.

const adminToken = "strata-lab-admin-token"

// controlPlane launches etcd and kube-apiserver in the ctl namespace.
type controlPlane struct {
	dir     string // state dir for data, certs, logs
	addr    string // management address of ctl
	port    int
	binDir  string
	procs   *procs
	ctlExec func(argv ...string) []string
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (c *controlPlane) url() string { return fmt.Sprintf("https://%s:%d", c.addr, c.port) }

func (c *controlPlane) start(ctx context.Context) error {
	for _, d := range []string{"etcd", "pki"} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o700); err != nil {
			return err
		}
	}
	saKey := filepath.Join(c.dir, "pki", "sa.key")
	if err := writeRSAKey(saKey); err != nil {
		return err
	}
	tokens := filepath.Join(c.dir, "pki", "tokens.csv")
	if err := os.WriteFile(tokens, []byte(adminToken+",strata-lab-admin,1,system:masters\n"), 0o600); err != nil {
		return err
	}
	etcd := []string{filepath.Join(c.binDir, "etcd"),
		"--data-dir", filepath.Join(c.dir, "etcd"), "--unsafe-no-fsync",
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--log-level", "warn"}
	if err := c.procs.start("etcd", c.ctlExec(etcd...)); err != nil {
		return err
	}
	api := []string{filepath.Join(c.binDir, "kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", c.addr, "--secure-port", fmt.Sprint(c.port),
		"--advertise-address", c.addr, "--endpoint-reconciler-type", "none",
		"--cert-dir", filepath.Join(c.dir, "pki"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", saKey, "--service-account-signing-key-file", saKey,
		"--token-auth-file", tokens, "--authorization-mode", "RBAC",
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--disable-admission-plugins", "ServiceAccount"}
	if err := c.procs.start("kube-apiserver", c.ctlExec(api...)); err != nil {
		return err
	}
	return c.waitReady(ctx, 90*time.Second)
}

// waitReady polls /readyz through a socket opened inside the ctl namespace:
// the host namespace has no route to the management network, by design.
func (c *controlPlane) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext:     c.dial,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // lab-only self-signed cert on a namespace-private network
	}}
	var last error
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url()+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("readyz: %s", resp.Status)
		}
		last = err
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after %s: %v (log: %s)", timeout, last, c.procs.logPath("kube-apiserver"))
}

// kubeconfig is the admin kubeconfig agents and users get.
func (c *controlPlane) kubeconfig() string {
	return strings.TrimSpace(fmt.Sprintf(`
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: lab
  context: {cluster: lab, user: admin}
current-context: lab
`, c.url(), adminToken)) + "\n"
}

func writeRSAKey(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	return os.WriteFile(path, b, 0o600)
}

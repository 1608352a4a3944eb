// Package apiserver starts a real kube-apiserver and etcd for a test, through
// controller-runtime's envtest, with the binaries `make tools` builds from the
// Go module proxy (KUBEBUILDER_ASSETS, default ~/.cache/strata/bin). Both
// processes are tagged with the test's PID (internal/owner), so a sweep kills
// them if the test binary dies before its cleanup runs.
package apiserver

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/strata-net/strata/internal/owner"
)

// Env is a running control plane.
type Env struct {
	Config    *rest.Config
	Clientset *kubernetes.Clientset
	env       *envtest.Environment
}

// Options tune the control plane.
type Options struct {
	// CRDDirs are directories of CRD YAML to install before returning.
	CRDDirs []string
	// ExtraArgs are appended to kube-apiserver's flags ("--name=value").
	ExtraArgs map[string]string
}

// AssetsDir is where the built kube-apiserver, etcd and kubectl live.
func AssetsDir() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "strata", "bin")
}

// Start runs kube-apiserver + etcd until the test ends.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	e, err := StartEnv(opts)
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("stop kube-apiserver: %v", err)
		}
	})
	return e
}

// StartEnv runs kube-apiserver + etcd; the caller must Stop it.
func StartEnv(opts Options) (*Env, error) {
	dir := AssetsDir()
	for _, b := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: run `make tools` (builds it from the Go module proxy, ~10 min the first time)", b, dir)
		}
	}
	owner.Mark()
	env := &envtest.Environment{
		BinaryAssetsDirectory:    dir,
		CRDDirectoryPaths:        opts.CRDDirs,
		ErrorIfCRDPathMissing:    len(opts.CRDDirs) > 0,
		ControlPlaneStartTimeout: 90 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	env.ControlPlane.Etcd = &envtest.Etcd{}
	env.ControlPlane.Etcd.Configure().Set("unsafe-no-fsync", "true")
	for k, v := range opts.ExtraArgs {
		env.ControlPlane.GetAPIServer().Configure().Set(k, v)
	}
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("envtest: %w (binaries from %s)", err, dir)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return &Env{Config: cfg, Clientset: cs, env: env}, nil
}

// Stop stops kube-apiserver and etcd and removes their data.
func (e *Env) Stop() error { return e.env.Stop() }

// Kubeconfig writes a kubeconfig for the environment's admin user to path.
func (e *Env) Kubeconfig(path string) error {
	user, err := e.env.ControlPlane.AddUser(envtest.User{Name: "strata-admin", Groups: []string{"system:masters"}}, e.Config)
	if err != nil {
		return err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	return os.WriteFile(path, kc, 0o600)
}

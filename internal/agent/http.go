package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/strata-net/strata/internal/unixsock"
)

// httpLimits bound every connection to the agent's HTTP servers, so slow or
// idle clients (a scraper that keeps connections open, a port scan) cannot
// pile up connections and goroutines.
type httpLimits struct {
	ReadHeader, Read, Write, Idle time.Duration
	MaxHeaderBytes                int
}

// defaultHTTPLimits: /status takes at most a few seconds to build (the
// role's allocation listing is bounded by 2 s), so 30 s to write is ample.
var defaultHTTPLimits = httpLimits{ReadHeader: 5 * time.Second, Read: 10 * time.Second, Write: 30 * time.Second,
	Idle: 60 * time.Second, MaxHeaderBytes: 16 << 10}

// controlAllowUID is the peer uid the control socket accepts besides root
// (tests set it to their own uid; 0 means root only).
var controlAllowUID = 0

func newHTTPServer(h http.Handler, lim httpLimits, log *slog.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: lim.ReadHeader, ReadTimeout: lim.Read, WriteTimeout: lim.Write,
		IdleTimeout: lim.Idle, MaxHeaderBytes: lim.MaxHeaderBytes, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
}

// handle mounts a read-only handler on the status server and the control
// socket (roles serve their own status pages this way).
func (a *Agent) handle(path string, h http.Handler) {
	if a.mux != nil {
		a.mux.Handle(path, h)
	}
}

// agentHTTP is what serveHTTP started (tests read the addresses).
type agentHTTP struct {
	tcp     net.Addr // nil without --metrics-addr
	control string   // the control socket's path
}

func (a *Agent) serveHTTP(ctx context.Context) error {
	_, err := a.startHTTP(ctx, defaultHTTPLimits)
	return err
}

// startHTTP serves the read-only endpoints on --metrics-addr (TCP: any
// hostNetwork pod or node user may connect) and the same endpoints plus the
// run-time switches on the root-only control socket. Only GET and HEAD pass
// on TCP; everything else gets 405 naming the socket.
func (a *Agent) startHTTP(ctx context.Context, lim httpLimits) (*agentHTTP, error) {
	mux := http.NewServeMux()
	a.mux = mux
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /status", a.serveStatus)
	mux.HandleFunc("GET /plan.dot", a.servePlanDOT)
	mux.HandleFunc("GET /bpf/fastpath", a.fast.serveStatus)

	control := http.NewServeMux()
	control.HandleFunc("POST /bpf/fastpath/{state}", a.fast.serveSwitch)
	control.Handle("/", readOnly(mux, "no such switch on the control socket"))

	out := &agentHTTP{control: a.cfg.ControlSocket}
	var servers []*http.Server
	if a.cfg.MetricsAddr != "" {
		l, err := listenRetry(ctx, a.cfg.MetricsAddr, 10*time.Second)
		if err != nil {
			return nil, fmt.Errorf("listen for metrics on %s (change --metrics-addr, or stop what holds it): %w", a.cfg.MetricsAddr, err)
		}
		out.tcp = l.Addr()
		msg := fmt.Sprintf("this listener (--metrics-addr) is read-only; run-time switches are served only on the root-only unix socket %s: run `strata fastpath on|off` as root on the node", a.cfg.ControlSocket)
		srv := newHTTPServer(readOnly(mux, msg), lim, a.log)
		servers = append(servers, srv)
		go func() { _ = srv.Serve(l) }()
	}
	l, err := unixsock.Listen(a.cfg.ControlSocket, "control socket")
	if err != nil {
		for _, s := range servers {
			_ = s.Close()
		}
		return nil, fmt.Errorf("%w (change --control-socket)", err)
	}
	srv := newHTTPServer(control, lim, a.log)
	servers = append(servers, srv)
	go func() { _ = srv.Serve(unixsock.RootOnly(l, controlAllowUID, a.log)) }()
	go func() {
		<-ctx.Done()
		for _, s := range servers {
			_ = s.Close()
		}
	}()
	return out, nil
}

// readOnly passes GET and HEAD to h and answers every other method with
// 405 and msg.
func readOnly(h http.Handler, msg string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, fmt.Sprintf("%s %s: %s", r.Method, r.URL.Path, msg), http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// listenRetry listens on addr, retrying while it is in use for up to wait:
// a crashed predecessor's last threads can hold the port for a moment
// after it is reported dead.
func listenRetry(ctx context.Context, addr string, wait time.Duration) (net.Listener, error) {
	deadline := time.Now().Add(wait)
	for {
		l, err := net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) || ctx.Err() != nil {
			return l, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

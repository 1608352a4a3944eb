// Package server is the agent side of strata-cni: it serves a role.Role on a
// root-only unix socket with the protocol of package wire. The role persists
// each allocation before Allocate returns, so an answer is only ever sent for
// an allocation that survives an agent restart.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/ipamstore"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/internal/unixsock"
)

// Options tunes a Server. The zero value is usable.
type Options struct {
	// CallTimeout bounds every role call; default 30 s.
	CallTimeout time.Duration
	Logger      *slog.Logger
	// AllowUID is the peer uid allowed besides root (tests); -1 or 0: root only.
	AllowUID int
	// Blocked, when set, names what a pod being added must not reach
	// (wire.Allocation.Blocked): the agent's metadata-service policy. It is
	// asked at every ADD, after the address is allocated.
	Blocked func(ctx context.Context, podNamespace, podName string) []netip.Prefix
}

// Server serves one role.
type Server struct {
	role    role.Role
	opts    Options
	log     *slog.Logger
	metrics *metrics
	mux     *http.ServeMux
}

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// New returns a server for r.
func New(r role.Role, opts Options) *Server {
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{
		role: r, opts: opts, log: opts.Logger.With("component", "cni-server"),
		metrics: &metrics{
			requests: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "strata_cni_requests_total", Help: "CNI server requests by verb and result.",
			}, []string{"verb", "result"}),
			latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name: "strata_cni_request_seconds", Help: "CNI server request latency by verb.",
				Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
			}, []string{"verb"}),
		},
		mux: http.NewServeMux(),
	}
	s.mux.HandleFunc("POST "+wire.PathAdd, s.handle("add", s.add))
	s.mux.HandleFunc("POST "+wire.PathDel, s.handle("del", s.del))
	s.mux.HandleFunc("POST "+wire.PathCheck, s.handle("check", s.check))
	s.mux.HandleFunc("POST "+wire.PathGC, s.handle("gc", s.gc))
	s.mux.HandleFunc("GET "+wire.PathStatus, s.handle("status", s.status))
	return s
}

// Collectors returns the server's metrics for the agent's registry.
func (s *Server) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.metrics.requests, s.metrics.latency}
}

// Handler is the HTTP handler (for tests that serve it themselves).
func (s *Server) Handler() http.Handler { return s.mux }

// Listen creates the CNI socket at path, root-only (see unixsock.Listen).
func Listen(path string) (net.Listener, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("CNI socket path %q is not absolute: give a path such as %s", path, wire.DefaultSocket)
	}
	return unixsock.Listen(path, "CNI socket")
}

// Serve answers on l until ctx ends, then shuts down gracefully (bounded).
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      s.opts.CallTimeout + 10*time.Second,
		IdleTimeout:       30 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(unixsock.RootOnly(l, s.opts.AllowUID, s.log)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("CNI server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("CNI server shutdown: %w", err)
	}
	return nil
}

// handlerFunc answers one verb: it returns the body to send or an error.
type handlerFunc func(ctx context.Context, body []byte) (any, error)

func (s *Server) handle(verb string, fn handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.CallTimeout)
		defer cancel()
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		var out any
		if err == nil {
			out, err = fn(ctx, body)
		}
		s.metrics.latency.WithLabelValues(verb).Observe(time.Since(start).Seconds())
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			code := codeOf(err)
			s.metrics.requests.WithLabelValues(verb, "error").Inc()
			lvl := slog.LevelWarn
			if code == wire.CodeUnknownAttachment {
				lvl = slog.LevelDebug // CHECK of a gone pod: routine
			}
			s.log.Log(ctx, lvl, "CNI request failed", "verb", verb, "code", code, "err", err)
			status := http.StatusInternalServerError
			switch code {
			case wire.CodeInvalidRequest:
				status = http.StatusBadRequest
			case wire.CodeUnknownAttachment:
				status = http.StatusNotFound
			case wire.CodeNoAddresses, wire.CodeNotAvailable, wire.CodeTryAgainLater:
				status = http.StatusServiceUnavailable
			}
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(wire.ErrorResponse{Code: code, Message: err.Error()})
			return
		}
		s.metrics.requests.WithLabelValues(verb, "ok").Inc()
		_ = json.NewEncoder(w).Encode(out)
	}
}

// codedError carries a wire code.
type codedError struct {
	code uint
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func coded(code uint, format string, a ...any) error {
	return &codedError{code: code, err: fmt.Errorf(format, a...)}
}

func codeOf(err error) uint {
	var ce *codedError
	switch {
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, ipamstore.ErrExhausted):
		return wire.CodeNoAddresses
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return wire.CodeTryAgainLater
	}
	return wire.CodeInternal
}

func decode(body []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return coded(wire.CodeInvalidRequest, "malformed request body: %v", err)
	}
	return nil
}

func validAttachment(containerID, ifName string) error {
	if containerID == "" {
		return coded(wire.CodeInvalidRequest, "containerID is empty")
	}
	if ifName == "" {
		return coded(wire.CodeInvalidRequest, "ifName is empty")
	}
	return nil
}

func (s *Server) add(ctx context.Context, body []byte) (any, error) {
	var req wire.AddRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	if err := validAttachment(req.ContainerID, req.IfName); err != nil {
		return nil, err
	}
	a, err := s.role.Allocate(ctx, req.PodRequest())
	if err != nil {
		return nil, fmt.Errorf("allocate an address for %s (pod %s/%s): %w", req.PodRequest().Key(), req.PodNamespace, req.PodName, err)
	}
	out := wire.FromRole(a)
	if s.opts.Blocked != nil {
		out.Blocked = s.opts.Blocked(ctx, req.PodNamespace, req.PodName)
	}
	s.log.Debug("allocated", "key", req.PodRequest().Key(), "pod", req.PodNamespace+"/"+req.PodName, "addr", a.Addr, "blocked", out.Blocked)
	return out, nil
}

// find returns the live allocation of one attachment, if any.
func (s *Server) find(ctx context.Context, at wire.Attachment) (*role.Allocation, error) {
	all, err := s.role.Allocations(ctx)
	if err != nil {
		return nil, fmt.Errorf("list allocations: %w", err)
	}
	for _, a := range all {
		if a.ContainerID == at.ContainerID && a.IfName == at.IfName {
			return &a, nil
		}
	}
	return nil, nil
}

func (s *Server) del(ctx context.Context, body []byte) (any, error) {
	var at wire.Attachment
	if err := decode(body, &at); err != nil {
		return nil, err
	}
	if err := validAttachment(at.ContainerID, at.IfName); err != nil {
		return nil, err
	}
	if err := s.role.Release(ctx, at.ContainerID, at.IfName); err != nil {
		return nil, fmt.Errorf("release %s/%s: %w", at.ContainerID, at.IfName, err)
	}
	return wire.DelResponse{}, nil
}

func (s *Server) check(ctx context.Context, body []byte) (any, error) {
	var at wire.Attachment
	if err := decode(body, &at); err != nil {
		return nil, err
	}
	if err := validAttachment(at.ContainerID, at.IfName); err != nil {
		return nil, err
	}
	a, err := s.find(ctx, at)
	if err != nil {
		return nil, err
	}
	if a == nil {
		return nil, coded(wire.CodeUnknownAttachment, "no allocation for container %s interface %s", at.ContainerID, at.IfName)
	}
	return wire.FromRole(*a), nil
}

func (s *Server) gc(ctx context.Context, body []byte) (any, error) {
	var req wire.GCRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	valid := make(map[wire.Attachment]bool, len(req.Valid))
	for _, v := range req.Valid {
		valid[v] = true
	}
	all, err := s.role.Allocations(ctx)
	if err != nil {
		return nil, fmt.Errorf("list allocations: %w", err)
	}
	resp := wire.GCResponse{Released: []wire.Allocation{}}
	var errs []error
	for _, a := range all {
		if valid[wire.Attachment{ContainerID: a.ContainerID, IfName: a.IfName}] {
			continue
		}
		if req.DryRun {
			resp.Released = append(resp.Released, wire.FromRole(a))
			continue
		}
		if err := s.role.Release(ctx, a.ContainerID, a.IfName); err != nil {
			errs = append(errs, fmt.Errorf("release %s/%s: %w", a.ContainerID, a.IfName, err))
			continue
		}
		resp.Released = append(resp.Released, wire.FromRole(a))
	}
	if len(resp.Released) > 0 && !req.DryRun {
		s.log.Info("CNI GC released stale allocations", "count", len(resp.Released))
	}
	return resp, errors.Join(errs...)
}

func (s *Server) status(context.Context, []byte) (any, error) {
	st := wire.StatusResponse{Ready: true, Role: s.role.Name()}
	if err := s.role.Ready(); err != nil {
		st.Ready, st.Message, st.Code = false, err.Error(), wire.CodeNotAvailable
		if errors.Is(err, ipamstore.ErrExhausted) {
			st.Code = wire.CodeNoAddresses
		}
	}
	return st, nil
}

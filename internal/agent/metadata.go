package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/strata-net/strata/cni/plugin"
	"github.com/strata-net/strata/cni/wire"
)

// --pod-metadata-access values. On ECS the metadata service hands out the
// node's RAM-role credentials, which can manage every ENI in the account,
// so by default pods do not reach it.
const (
	MetadataDeny  = "deny"
	MetadataAllow = "allow"
)

// podLookupTimeout bounds the Pod read at CNI ADD: the pod waits for it.
const podLookupTimeout = 3 * time.Second

// metadataPolicy decides, at CNI ADD, what a pod may not reach
// (wire.Allocation.Blocked).
type metadataPolicy struct {
	access string // MetadataDeny or MetadataAllow
	kube   kubernetes.Interface
	log    *slog.Logger
}

// blocked returns [wire.MetadataPrefix] unless the cluster allows every pod
// or the Pod carries strata.io/metadata-access: allow. When the Pod cannot
// be read (API server away, no name in CNI_ARGS), the pod is denied: a
// missed opt-out is fixed by re-creating the pod, leaked credentials are not.
func (p *metadataPolicy) blocked(ctx context.Context, namespace, name string) []netip.Prefix {
	if p.access == MetadataAllow {
		return nil
	}
	deny := []netip.Prefix{wire.MetadataPrefix}
	if namespace == "" || name == "" {
		p.log.Info("pod has no namespace/name in CNI_ARGS: metadata service denied", "pod", namespace+"/"+name)
		return deny
	}
	if p.kube == nil {
		p.log.Warn("no API server: metadata service denied to pod (safe default); its strata.io/metadata-access annotation cannot be read",
			"pod", namespace+"/"+name)
		return deny
	}
	ctx, cancel := context.WithTimeout(ctx, podLookupTimeout)
	defer cancel()
	pod, err := p.kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		p.log.Warn("cannot read the pod: metadata service denied to it (safe default); re-create the pod once the API server answers if it needs the metadata service",
			"pod", namespace+"/"+name, "err", err)
		return deny
	}
	if pod.Annotations[wire.MetadataAccessAnnotation] == wire.MetadataAccessAllow {
		p.log.Info("pod allowed to reach the metadata service by annotation", "pod", namespace+"/"+name, "annotation", wire.MetadataAccessAnnotation)
		return nil
	}
	return deny
}

// metadataFilter keeps the node's nftables half of the lock
// (plugin.WriteMetadataFilter) in place: written at start, checked and
// repaired every period. Failing, it says so in the metric
// strata_pod_metadata_filter_enforcing and the log, and keeps retrying; the
// prohibit route inside each pod still holds.
type metadataFilter struct {
	log       *slog.Logger
	enforcing prometheus.Gauge
	dropped   prometheus.CounterFunc
	last      atomic.Uint64 // read by the metrics scrape
	err       atomic.Pointer[string]
}

// state is "enforcing", or why the node's table cannot be written.
func (f *metadataFilter) state() string {
	if e := f.err.Load(); e != nil {
		return *e
	}
	return "enforcing"
}

func newMetadataFilter(log *slog.Logger, reg prometheus.Registerer) *metadataFilter {
	f := &metadataFilter{log: log.With("component", "metadata-filter"),
		enforcing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strata_pod_metadata_filter_enforcing",
			Help: "1 when the node's nftables table " + wire.MetadataTable + " drops traffic from denied pods' veths to the metadata service; 0 when it cannot be written (the prohibit route in each pod still holds).",
		})}
	f.dropped = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "strata_pod_metadata_dropped_packets_total",
		Help: "Packets from denied pods to the metadata service that the node's table dropped (a pod removed its own prohibit route).",
	}, func() float64 { return float64(f.last.Load()) })
	if reg != nil {
		reg.MustRegister(f.enforcing, f.dropped)
	}
	return f
}

func (f *metadataFilter) sync() {
	dropped, err := plugin.MetadataFilterOK()
	if err == nil {
		f.last.Store(dropped)
		f.err.Store(nil)
		f.enforcing.Set(1)
		return
	}
	if err := plugin.WriteMetadataFilter(); err != nil {
		f.enforcing.Set(0)
		msg := "not enforcing (pods' own prohibit routes still hold): " + err.Error()
		f.err.Store(&msg)
		f.log.Error("cannot keep pods' veths from the metadata service on the node; retrying", "err", err)
		return
	}
	f.err.Store(nil)
	f.enforcing.Set(1)
}

func (f *metadataFilter) run(ctx context.Context, period time.Duration) {
	f.sync()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.sync()
		}
	}
}

// startMetadata starts the node's filter and returns the CNI server's
// Blocked policy.
func (a *Agent) startMetadata(ctx context.Context) func(context.Context, string, string) []netip.Prefix {
	// The table is kept whatever the setting: it drops only for veths the
	// plugin marked, so with "allow" (no pod marked) it does nothing, and
	// pods marked before a switch to "allow" stay as their route says.
	f := newMetadataFilter(a.log, a.reg)
	a.meta.Store(f)
	go f.run(ctx, 30*time.Second)
	p := &metadataPolicy{access: a.cfg.PodMetadataAccess, kube: a.kube, log: a.log.With("component", "metadata-policy")}
	a.log.Info("pod access to the metadata service", "setting", p.access, "service", wire.MetadataPrefix, "per-pod opt-out", wire.MetadataAccessAnnotation+"="+wire.MetadataAccessAllow)
	return p.blocked
}

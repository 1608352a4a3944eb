// Package peersync keeps a bgp.Speaker's neighbours in step with the
// BGPPeer objects that select this node. Peers are added, updated and
// removed on the running speaker; it is never restarted. Specs that cannot
// be used (reserved ASN, hold time under 3 s, missing Secret, an address the
// node cannot reach) get a Valid=False condition and a Warning event, never
// a crash.
package peersync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/strata-net/strata/bgp"
	"github.com/strata-net/strata/internal/apis/strata/v1alpha1"
)

// PeerManager is the part of *bgp.Speaker peersync drives.
type PeerManager interface {
	AddPeer(ctx context.Context, p bgp.PeerConfig) error
	UpdatePeer(ctx context.Context, p bgp.PeerConfig) error
	RemovePeer(ctx context.Context, addr netip.Addr) error
	PeerConfigs() []bgp.PeerConfig
	Peers(ctx context.Context) ([]bgp.PeerStatus, error)
}

// Config wires a Syncer.
type Config struct {
	Dynamic dynamic.Interface
	Kube    kubernetes.Interface
	// NodeName is this node; its labels feed the peers' node selectors.
	NodeName string
	// SecretNamespace holds the password Secrets (the agent's namespace).
	SecretNamespace string
	// EventNamespace is where Events about cluster-scoped BGPPeers go
	// (default "default").
	EventNamespace string
	Speaker        PeerManager
	// Reachable says whether the node can reach a peer address (e.g. a
	// route lookup); nil means every address is reachable.
	Reachable func(netip.Addr) error
	// Resync re-checks Secrets, reachability and session state (default 30s).
	Resync time.Duration
	// CachePath, when set, is where the peers are cached after each
	// reconcile (SaveCache), for Seed at the next start.
	CachePath string
	Logger    *slog.Logger
}

// Syncer reconciles BGPPeers into the speaker.
type Syncer struct {
	cfg      Config
	log      *slog.Logger
	informer cache.SharedIndexInformer
	saved    []bgp.PeerConfig // what the cache holds
	hasSaved bool
}

// New builds a Syncer; Run starts it.
func New(cfg Config) (*Syncer, error) {
	if cfg.Dynamic == nil || cfg.Kube == nil || cfg.Speaker == nil || cfg.NodeName == "" {
		return nil, errors.New("peersync: Dynamic, Kube, Speaker and NodeName are required")
	}
	if cfg.SecretNamespace == "" {
		cfg.SecretNamespace = "strata-system"
	}
	if cfg.EventNamespace == "" {
		cfg.EventNamespace = "default"
	}
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	f := dynamicinformer.NewDynamicSharedInformerFactory(cfg.Dynamic, 0)
	return &Syncer{cfg: cfg, log: cfg.Logger.With("component", "peersync"), informer: f.ForResource(v1alpha1.BGPPeersGVR).Informer()}, nil
}

// Run watches BGPPeers and reconciles until ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}); err != nil {
		return fmt.Errorf("peersync: watch BGPPeers: %w", err)
	}
	go s.informer.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
		return fmt.Errorf("peersync: BGPPeer cache never synced: %w", ctx.Err())
	}
	tick := time.NewTicker(s.cfg.Resync)
	defer tick.Stop()
	poke()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-kick:
		}
		if err := s.Reconcile(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("reconcile BGP peers", "err", err)
		}
	}
}

// verdict is one BGPPeer's outcome on this node.
type verdict struct {
	obj    *v1alpha1.BGPPeer
	peer   bgp.PeerConfig
	reason string // "" when usable
	msg    string
}

// Reconcile makes the speaker's peers match the BGPPeers selecting this node.
func (s *Syncer) Reconcile(ctx context.Context) error {
	node, err := s.cfg.Kube.CoreV1().Nodes().Get(ctx, s.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read node %s: %w", s.cfg.NodeName, err)
	}
	var verdicts []verdict
	for _, o := range s.informer.GetStore().List() {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		obj, err := v1alpha1.FromUnstructured(u)
		if err != nil {
			s.log.Warn("skip undecodable BGPPeer", "name", u.GetName(), "err", err)
			continue
		}
		sel, err := selector(obj.Spec.NodeSelector)
		if err != nil {
			verdicts = append(verdicts, verdict{obj: obj, reason: v1alpha1.ReasonInvalidSpec, msg: "spec.nodeSelector: " + err.Error()})
			continue
		}
		if !sel.Matches(labels.Set(node.Labels)) {
			continue
		}
		verdicts = append(verdicts, s.judge(ctx, obj))
	}
	sort.Slice(verdicts, func(i, j int) bool { return verdicts[i].obj.Name < verdicts[j].obj.Name })

	want := map[netip.Addr]bgp.PeerConfig{}
	for i, v := range verdicts {
		if v.reason != "" {
			continue
		}
		if prev, dup := want[v.peer.Address]; dup && !prev.Equal(v.peer) {
			verdicts[i].reason, verdicts[i].msg = v1alpha1.ReasonInvalidSpec,
				fmt.Sprintf("another BGPPeer selecting node %s already peers with %s", s.cfg.NodeName, v.peer.Address)
			continue
		}
		want[v.peer.Address] = v.peer
	}
	var errs []error
	for _, have := range s.cfg.Speaker.PeerConfigs() {
		if _, ok := want[have.Address]; !ok {
			if err := s.cfg.Speaker.RemovePeer(ctx, have.Address); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// One peer the speaker refuses is reported on its BGPPeer; the others
	// are still configured.
	refused := map[netip.Addr]error{}
	for _, p := range want {
		if err := s.cfg.Speaker.UpdatePeer(ctx, p); err != nil {
			refused[p.Address] = err
			errs = append(errs, err)
		}
	}
	states := map[netip.Addr]bgp.PeerStatus{}
	if ps, err := s.cfg.Speaker.Peers(ctx); err == nil {
		for _, p := range ps {
			states[p.Address] = p
		}
	}
	for i, v := range verdicts {
		if err, ok := refused[v.peer.Address]; ok && v.reason == "" {
			verdicts[i].msg = "the node's BGP speaker refused the peer: " + err.Error()
		}
	}
	for _, v := range verdicts {
		if err := s.writeStatus(ctx, v, states); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.saveCache(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// saveCache writes the speaker's peers to the cache when they changed.
func (s *Syncer) saveCache() error {
	if s.cfg.CachePath == "" {
		return nil
	}
	peers := s.cfg.Speaker.PeerConfigs()
	if s.hasSaved && slices.EqualFunc(peers, s.saved, bgp.PeerConfig.Equal) {
		return nil
	}
	if err := SaveCache(s.cfg.CachePath, peers); err != nil {
		return err
	}
	s.saved, s.hasSaved = peers, true
	return nil
}

func selector(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(ls)
}

// judge turns a BGPPeer into a PeerConfig or the reason it cannot be used.
// PeerFromSpec turns a BGPPeer spec into the speaker's peer settings,
// without the password (a Secret) and without I/O. An out-of-range field is
// refused, never wrapped or ignored: the API server's schema may be older
// than the agent, or bypassed.
func PeerFromSpec(sp v1alpha1.BGPPeerSpec) (bgp.PeerConfig, error) {
	addr, err := netip.ParseAddr(sp.PeerAddress)
	if err != nil {
		return bgp.PeerConfig{}, fmt.Errorf("spec.peerAddress %q is not an IP address: set the router's address, e.g. 192.168.10.1", sp.PeerAddress)
	}
	// Only what would wrap in the speaker's narrower types is checked here;
	// the speaker's own Validate judges timers and ASNs.
	var errs []error
	if sp.PeerPort < 0 || sp.PeerPort > 65535 {
		errs = append(errs, fmt.Errorf("spec.peerPort %d: want 0..65535 (0 means 179)", sp.PeerPort))
	}
	if sp.EBGPMultihop < 0 || sp.EBGPMultihop > 255 {
		errs = append(errs, fmt.Errorf("spec.ebgpMultihop %d: want 0..255 (0 or 1 means directly connected)", sp.EBGPMultihop))
	}
	var allow []netip.Prefix
	if ip := sp.ImportPolicy; ip != nil {
		for i, a := range ip.Allow {
			pf, err := netip.ParsePrefix(a)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("spec.importPolicy.allow[%d] %q is not a CIDR: write e.g. 192.168.10.0/24 or 0.0.0.0/0", i, a))
			case pf != pf.Masked():
				errs = append(errs, fmt.Errorf("spec.importPolicy.allow[%d] %q has host bits set: write %s", i, a, pf.Masked()))
			default:
				allow = append(allow, pf)
			}
		}
	}
	if len(errs) > 0 {
		return bgp.PeerConfig{}, errors.Join(errs...)
	}
	p := bgp.PeerConfig{
		Address:       addr.Unmap(),
		ASN:           sp.PeerASN,
		LocalASN:      sp.LocalASN,
		HoldTime:      time.Duration(sp.HoldTimeSeconds) * time.Second,
		KeepaliveTime: time.Duration(sp.KeepaliveTimeSeconds) * time.Second,
		ConnectRetry:  time.Duration(sp.ConnectRetrySeconds) * time.Second,
		Passive:       sp.Passive,
		RemotePort:    uint16(sp.PeerPort),
		Import:        bgp.ImportPolicy{Allow: allow},
		MaxPrefixes:   sp.MaxPrefixes,
	}
	if sp.EBGPMultihop > 1 {
		p.MultihopTTL = uint8(sp.EBGPMultihop)
	}
	if gr := sp.GracefulRestart; gr != nil && gr.Enabled {
		p.GracefulRestart = true
		p.RestartTime = time.Duration(gr.RestartTimeSeconds) * time.Second
	}
	if err := p.Validate(); err != nil {
		return bgp.PeerConfig{}, fmt.Errorf("spec: %w", err)
	}
	return p, nil
}

func (s *Syncer) judge(ctx context.Context, obj *v1alpha1.BGPPeer) verdict {
	v := verdict{obj: obj}
	sp := obj.Spec
	p, err := PeerFromSpec(sp)
	if err != nil {
		v.reason, v.msg = v1alpha1.ReasonInvalidSpec, strings.ReplaceAll(err.Error(), "\n", "; ")
		return v
	}
	if ref := sp.PasswordSecretRef; ref != nil {
		key := ref.Key
		if key == "" {
			key = "password"
		}
		sec, err := s.cfg.Kube.CoreV1().Secrets(s.cfg.SecretNamespace).Get(ctx, ref.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			v.reason, v.msg = v1alpha1.ReasonMissingSecret, fmt.Sprintf("Secret %s/%s does not exist: create it with key %q holding the TCP MD5 password", s.cfg.SecretNamespace, ref.Name, key)
			return v
		case err != nil:
			v.reason, v.msg = v1alpha1.ReasonMissingSecret, fmt.Sprintf("read Secret %s/%s: %v", s.cfg.SecretNamespace, ref.Name, err)
			return v
		}
		if sec.Labels[v1alpha1.BGPPasswordLabel] != "true" {
			v.reason, v.msg = v1alpha1.ReasonSecretNotForBGP, fmt.Sprintf("Secret %s/%s is not marked as a BGP password, so the agent does not read it: if it holds only the TCP MD5 password, run `kubectl -n %s label secret %s %s=true`; otherwise put the password in its own Secret with that label",
				s.cfg.SecretNamespace, ref.Name, s.cfg.SecretNamespace, ref.Name, v1alpha1.BGPPasswordLabel)
			return v
		}
		pw, ok := sec.Data[key]
		if !ok || len(pw) == 0 {
			v.reason, v.msg = v1alpha1.ReasonMissingSecret, fmt.Sprintf("Secret %s/%s has no key %q", s.cfg.SecretNamespace, ref.Name, key)
			return v
		}
		p.Password = string(pw)
	}
	if s.cfg.Reachable != nil {
		if err := s.cfg.Reachable(p.Address); err != nil {
			v.reason, v.msg = v1alpha1.ReasonUnreachable, fmt.Sprintf("node %s cannot reach %s: %v", s.cfg.NodeName, p.Address, err)
			return v
		}
	}
	v.peer = p
	return v
}

// writeStatus records the verdict and this node's session state, and emits
// a Warning event when the spec becomes unusable.
func (s *Syncer) writeStatus(ctx context.Context, v verdict, states map[netip.Addr]bgp.PeerStatus) error {
	obj := v.obj
	st := obj.Status
	st.Conditions = slices.Clone(st.Conditions)
	st.Nodes = slices.Clone(st.Nodes)
	valid := metav1.Condition{Type: v1alpha1.ConditionValid, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAccepted,
		Message: "the spec is usable", ObservedGeneration: obj.Generation}
	session := v1alpha1.NodeSession{Node: s.cfg.NodeName, State: "NotConfigured", Reason: v.msg}
	if v.reason != "" {
		valid.Status, valid.Reason, valid.Message = metav1.ConditionFalse, v.reason, v.msg
	} else if ps, ok := states[v.peer.Address]; ok {
		session.State, session.Reason = string(ps.State), ps.Reason
		if ps.OverLimit {
			session.State = "OverMaxPrefixes"
		}
		if r := rejectedSummary(ps); r != "" {
			session.Reason = strings.TrimPrefix(session.Reason+"; "+r, "; ")
		}
	}
	prevValid := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionValid)
	becameInvalid := v.reason != "" && (prevValid == nil || prevValid.Status != metav1.ConditionFalse || prevValid.Reason != v.reason || prevValid.Message != v.msg)
	meta.SetStatusCondition(&st.Conditions, valid)
	est := metav1.Condition{Type: v1alpha1.ConditionEstablished, Status: metav1.ConditionFalse, Reason: "NotEstablished",
		Message: fmt.Sprintf("node %s: %s", s.cfg.NodeName, session.State), ObservedGeneration: obj.Generation}
	if session.State == string(bgp.StateEstablished) {
		est.Status, est.Reason = metav1.ConditionTrue, "Established"
	}
	meta.SetStatusCondition(&st.Conditions, est)
	i := slices.IndexFunc(st.Nodes, func(n v1alpha1.NodeSession) bool { return n.Node == s.cfg.NodeName })
	if i < 0 {
		st.Nodes = append(st.Nodes, session)
	} else {
		st.Nodes[i] = session
	}
	if becameInvalid {
		s.event(ctx, obj, v.reason, v.msg)
	}
	if equalStatus(st, obj.Status) {
		return nil
	}
	obj.Status = st
	u, err := obj.ToUnstructured()
	if err != nil {
		return err
	}
	if _, err := s.cfg.Dynamic.Resource(v1alpha1.BGPPeersGVR).UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return nil // a newer object is on its way through the informer
		}
		return fmt.Errorf("update status of BGPPeer %s: %w", obj.Name, err)
	}
	return nil
}

// rejectedSummary says how many of the peer's prefixes the import policy
// keeps out of the kernel, per reason, e.g. "import policy rejected 2
// prefixes (default-route 1, underlay-subnet 1)".
func rejectedSummary(ps bgp.PeerStatus) string {
	var total uint64
	var parts []string
	for _, r := range bgp.RejectReasons {
		if n := ps.Rejected[r]; n > 0 {
			total += n
			parts = append(parts, fmt.Sprintf("%s %d", r, n))
		}
	}
	if total == 0 {
		return ""
	}
	return fmt.Sprintf("import policy rejected %d prefixes (%s); see strata bgp peers on the node", total, strings.Join(parts, ", "))
}

func equalStatus(a, b v1alpha1.BGPPeerStatus) bool {
	strip := func(cs []metav1.Condition) []metav1.Condition {
		out := slices.Clone(cs)
		for i := range out {
			out[i].LastTransitionTime = metav1.Time{}
		}
		return out
	}
	return slices.Equal(strip(a.Conditions), strip(b.Conditions)) && slices.Equal(a.Nodes, b.Nodes)
}

func (s *Syncer) event(ctx context.Context, obj *v1alpha1.BGPPeer, reason, msg string) {
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: obj.Name + ".", Namespace: s.cfg.EventNamespace},
		InvolvedObject: corev1.ObjectReference{APIVersion: v1alpha1.Group + "/" + v1alpha1.Version, Kind: "BGPPeer",
			Name: obj.Name, UID: obj.UID, ResourceVersion: obj.ResourceVersion},
		Reason: reason, Message: msg, Type: corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "strata-agent", Host: s.cfg.NodeName},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if _, err := s.cfg.Kube.CoreV1().Events(s.cfg.EventNamespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		s.log.Warn("record event", "peer", obj.Name, "reason", reason, "err", err)
	}
	s.log.Warn("BGPPeer unusable", "peer", obj.Name, "reason", reason, "message", msg)
}

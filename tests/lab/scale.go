package lab

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// AddPods creates n more pods on node through strata-cni, as a runtime
// would (for scale tests: a cloud node with 100 pods). They are not part
// of the matrix; DeletePods removes them.
func (l *Lab) AddPods(node string, n int) ([]PodInfo, error) {
	confDir := filepath.Join(l.nodeDir(node), "net.d")
	out := make([]PodInfo, 0, n)
	for i := range n {
		p := PodInfo{Node: node, Name: fmt.Sprintf("pod-scale%d", i)}
		ip, err := l.addPod(p, confDir)
		if err != nil {
			return out, fmt.Errorf("pod %d of %d on %s: %w", i+1, n, node, err)
		}
		p.IP = ip
		out = append(out, p)
	}
	return out, nil
}

// DeletePods runs CNI DEL for each pod and removes its namespace; it tries
// every pod and reports all failures.
func (l *Lab) DeletePods(pods []PodInfo) error {
	var errs []error
	for _, p := range pods {
		if err := l.delPod(p, filepath.Join(l.nodeDir(p.Node), "net.d")); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// AgentLogTail is the last n lines of a node's agent log (for test
// failures: the lab removes its logs when it goes down).
func (l *Lab) AgentLogTail(node string, n int) string {
	return tail(l.procs.logPath("agent-"+node), n)
}

// PodOn is the first of pods on node (ok false when none is).
func PodOn(pods []PodInfo, node string) (PodInfo, bool) {
	for _, p := range pods {
		if p.Node == node {
			return p, true
		}
	}
	return PodInfo{}, false
}

// StreamAround runs a ping stream from a pod and calls act one second into
// it: the failover and heal measurements of the e2e tests and benchmarks.
func (l *Lab) StreamAround(ctx context.Context, from PodInfo, to string, count int, interval time.Duration, act func() error) (PingStats, error) {
	var st PingStats
	var perr error
	done := make(chan struct{})
	go func() { defer close(done); st, perr = l.PingStream(ctx, from, to, count, interval) }()
	time.Sleep(time.Second)
	aerr := act()
	<-done
	if aerr != nil {
		return st, aerr
	}
	return st, perr
}

// Package cni is the strata-cni plugin (ADD, DEL, CHECK, STATUS, GC and
// VERSION for every spec version from 0.3.1 to 1.1.0) and the agent-side
// server it calls on a root-only unix socket. The plugin does the netns work;
// the agent does IPAM and cloud calls, as Terway splits it. Every call is
// bounded in time.
package cni

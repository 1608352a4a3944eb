// Package plugin is strata-cni: a CNI plugin (ADD, DEL, CHECK, STATUS, GC,
// VERSION; spec 0.3.1 to 1.1.0) that asks the agent for an address over the
// socket of package wire and wires the pod itself.
//
// ADD is one socket round trip plus a handful of netlink calls. Every step
// it takes is undone, and the address released, when a later step fails.
package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	cnins "github.com/containernetworking/cni/pkg/ns"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/strata-net/strata/cni/wire"
	"github.com/strata-net/strata/internal/role"
	"github.com/strata-net/strata/internal/version"
)

// Funcs are the verbs for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus}
}

// About is printed when the binary is run by hand.
var About = version.String("strata-cni") + ": Strata's CNI plugin; a container runtime runs it with CNI_COMMAND and a network config on stdin"

// Main is the whole of cmd/strata-cni.
func Main() {
	// skel rejects a bad CNI_IFNAME without naming the variable; say which.
	switch os.Getenv("CNI_COMMAND") {
	case "ADD", "DEL", "CHECK":
		if e := utils.ValidateInterfaceName(os.Getenv("CNI_IFNAME")); e != nil {
			te := types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_IFNAME %q: %s", os.Getenv("CNI_IFNAME"), e.Msg), "use 1 to 15 characters without '/', ':' or whitespace")
			_ = te.Print()
			os.Exit(1)
		}
	}
	skel.PluginMainFuncs(Funcs(), PluginInfo, About)
}

func client(conf *Config) *wire.Client {
	// Keep redialling a missing socket for a while: the agent may be
	// restarting. Bounded by the call's own timeout too.
	return &wire.Client{Socket: conf.Socket, DialWait: min(5*time.Second, conf.Timeout())}
}

// agentError turns a failed agent call into a CNI error naming the socket.
func agentError(verb string, conf *Config, err error) *types.Error {
	var we *wire.Error
	switch {
	case errors.As(err, &we):
		code := we.Code
		switch code {
		case wire.CodeUnknownAttachment:
			code = types.ErrUnknownContainer
		case wire.CodeNoAddresses, wire.CodeNotAvailable:
			code = types.ErrTryAgainLater
		case wire.CodeInvalidRequest:
			code = types.ErrInternal // the plugin sent something the agent refuses: a bug
		}
		return types.NewError(code, fmt.Sprintf("%s: %s", verb, we.Message), "agent socket "+conf.Socket)
	case errors.Is(err, context.DeadlineExceeded):
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("%s: the strata agent did not answer on %s within %s", verb, conf.Socket, conf.Timeout()), "check strata-agent's health and logs")
	default:
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("%s: %v", verb, err), "start strata-agent, or fix \"socket\" in the network config")
	}
}

// checkCommon validates what every netns verb needs.
func checkCommon(args *skel.CmdArgs) (*Config, PodArgs, error) {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return nil, PodArgs{}, err
	}
	if e := utils.ValidateContainerID(args.ContainerID); e != nil {
		return nil, PodArgs{}, types.NewError(e.Code, "CNI_CONTAINERID: "+e.Msg, e.Details)
	}
	if e := utils.ValidateInterfaceName(args.IfName); e != nil {
		return nil, PodArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_IFNAME %q: %s", args.IfName, e.Msg), e.Details)
	}
	pod, err := ParseArgs(args.Args)
	if err != nil {
		return nil, PodArgs{}, err
	}
	return conf, pod, nil
}

func openNetNS(path string) (ns.NetNS, error) {
	if path == "" {
		return nil, types.NewError(types.ErrInvalidNetNS, "CNI_NETNS is empty", "pass the pod's network namespace path")
	}
	if same, e := cnins.CheckNetNS(path); e != nil {
		return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %q: %s", path, e.Msg), "")
	} else if same {
		return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %q is the plugin's own namespace", path), "pass the pod's network namespace, not the host's")
	}
	netns, err := ns.GetNS(path)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %q cannot be opened: %v", path, err), "pass an existing network namespace path")
	}
	return netns, nil
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, pod, err := checkCommon(args)
	if err != nil {
		return err
	}
	netns, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer func() { _ = netns.Close() }()
	// Refuse a taken interface name before allocating: a retried ADD for a
	// live attachment must not release that attachment's address below.
	if err := ifNameFree(netns, args.IfName); err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	cl := client(conf)
	alloc, err := cl.Add(ctx, wire.AddRequest{
		ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns,
		PodNamespace: pod.Namespace, PodName: pod.Name,
	})
	if err != nil {
		e := agentError("allocate an address", conf, err)
		if errors.Is(err, wire.ErrAgentUnreachable) || errors.Is(err, context.DeadlineExceeded) {
			// The agent may have persisted an address before going away.
			if rerr := release(conf, args.ContainerID, args.IfName); rerr != nil {
				e.Details += "; the address may stay allocated until the runtime's DEL or GC"
			}
		}
		return e
	}

	res, err := setup(netns, args, alloc)
	if err != nil {
		if rerr := release(conf, args.ContainerID, args.IfName); rerr != nil {
			err = fmt.Errorf("%w (and releasing %s failed: %v; the runtime's DEL or GC will release it)", err, alloc.Addr, rerr)
		}
		var te *types.Error
		if errors.As(err, &te) {
			return te
		}
		return types.NewError(types.ErrInternal, fmt.Sprintf("wire pod interface %s: %v", args.IfName, err), "nothing was left behind")
	}
	if conf.PrevResult != nil {
		res, err = merge(conf.PrevResult, res)
		if err != nil {
			_, _ = teardown(args.Netns, args.ContainerID, args.IfName)
			_ = release(conf, args.ContainerID, args.IfName)
			return types.NewError(types.ErrDecodingFailure, fmt.Sprintf(`field "prevResult": %v`, err), "")
		}
	}
	return types.PrintResult(res, conf.CNIVersion)
}

// release frees the attachment's address with a short, separate deadline.
func release(conf *Config, containerID, ifName string) error {
	ctx, cancel := context.WithTimeout(context.Background(), min(conf.Timeout(), 10*time.Second))
	defer cancel()
	_, err := (&wire.Client{Socket: conf.Socket, DialWait: time.Second}).Del(ctx, wire.Attachment{ContainerID: containerID, IfName: ifName})
	return err
}

// merge appends this plugin's result to a chained plugin's prevResult.
func merge(prev types.Result, mine *current.Result) (*current.Result, error) {
	p, err := current.NewResultFromResult(prev)
	if err != nil {
		return nil, err
	}
	off := len(p.Interfaces)
	p.Interfaces = append(p.Interfaces, mine.Interfaces...)
	for _, ipc := range mine.IPs {
		c := *ipc
		if c.Interface != nil {
			i := *c.Interface + off
			c.Interface = &i
		}
		p.IPs = append(p.IPs, &c)
	}
	p.Routes = append(p.Routes, mine.Routes...)
	return p, nil
}

func cmdDel(args *skel.CmdArgs) error {
	conf, _, err := checkCommon(args)
	if err != nil {
		return err
	}
	// Link first, address second: an address is never free while a link
	// still carries it.
	found, err := teardown(args.Netns, args.ContainerID, args.IfName)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("remove pod interface %s: %v", args.IfName, err), "retry DEL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	if !found {
		// Nothing on the node or in the pod names the attachment: an ipvlan
		// pod whose namespace is gone still has a host route and rule, which
		// only the agent's record locates. Unknown or unreachable: DEL below decides.
		a, err := client(conf).Check(ctx, wire.Attachment{ContainerID: args.ContainerID, IfName: args.IfName})
		switch {
		case err == nil:
			if err := teardownByAllocation(a); err != nil {
				return types.NewError(types.ErrInternal, fmt.Sprintf("remove the host side of %s: %v", args.IfName, err), "retry DEL")
			}
		case errors.Is(err, wire.ErrAgentUnreachable) || errors.Is(err, context.DeadlineExceeded):
			return agentError("look up the allocation", conf, err) // the release below could not reach it either
		}
	}
	if _, err := client(conf).Del(ctx, wire.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}); err != nil {
		return agentError("release the address", conf, err)
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, _, err := checkCommon(args)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, `field "prevResult" is missing: CHECK needs the result of ADD`, "")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf(`field "prevResult": %v`, err), "")
	}
	netns, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer func() { _ = netns.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	alloc, err := client(conf).Check(ctx, wire.Attachment{ContainerID: args.ContainerID, IfName: args.IfName})
	if err != nil {
		return agentError("look up the allocation", conf, err)
	}
	found := false
	for _, ipc := range prev.IPs {
		if ipc.Address.IP.Equal(alloc.Addr.Addr().AsSlice()) {
			found = true
		}
	}
	if !found {
		return types.NewError(types.ErrInternal, fmt.Sprintf("prevResult does not hold the agent's address %s for %s", alloc.Addr, args.IfName), "")
	}
	if err := check(netns, args, alloc); err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("CHECK %s: %v", args.IfName, err), "DEL and ADD the pod again")
	}
	return nil
}

func cmdGC(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	// Without the list, GC would release every pod's address: refuse.
	var keys map[string]json.RawMessage
	_ = json.Unmarshal(args.StdinData, &keys)
	if _, ok := keys["cni.dev/valid-attachments"]; !ok {
		if _, ok := keys["cni.dev/attachments"]; !ok {
			return types.NewError(types.ErrInvalidNetworkConfig, `field "cni.dev/valid-attachments" is missing: GC needs the list of attachments to keep`, "")
		}
	}
	valid := make([]wire.Attachment, 0, len(conf.ValidAttachments))
	for _, a := range conf.ValidAttachments {
		valid = append(valid, wire.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	// DEL's order for each stale attachment: its host links first, then its
	// address, so no released address is still routed to an old link. One
	// whose links cannot be removed keeps its address until the next GC.
	c := client(conf)
	stale, err := c.Stale(ctx, valid)
	if err != nil {
		return agentError("list stale allocations", conf, err)
	}
	var errs []error
	for _, a := range stale {
		if err := removeHostLinks(a); err != nil {
			errs = append(errs, fmt.Errorf("%s/%s kept its address %s: %w", a.ContainerID, a.IfName, a.Addr, err))
			continue
		}
		if _, err := c.Del(ctx, wire.Attachment{ContainerID: a.ContainerID, IfName: a.IfName}); err != nil {
			return agentError("release the address of "+a.ContainerID+"/"+a.IfName, conf, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("GC could not remove some host links: %v", err), "run GC again")
	}
	return nil
}

// removeHostLinks removes what ADD left on the node for a, whose pod
// namespace may be gone.
func removeHostLinks(a wire.Allocation) error {
	switch a.Datapath {
	case role.DatapathIPVlan:
		// either wired as ipvlan, or veth-routed where the kernel had no ipvlan
		return errors.Join(removeHostVeth(hostVethName(a.ContainerID, a.IfName)), teardownByAllocation(a))
	default:
		return removeHostVeth(hostVethName(a.ContainerID, a.IfName))
	}
}

func cmdStatus(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(conf.Timeout(), 5*time.Second))
	defer cancel()
	st, err := (&wire.Client{Socket: conf.Socket}).Status(ctx)
	if err != nil {
		return types.NewError(wire.CodeNotAvailable, fmt.Sprintf("strata agent not available on %s: %v", conf.Socket, err), "start strata-agent")
	}
	if !st.Ready {
		code := st.Code
		if code != wire.CodeNoAddresses {
			code = wire.CodeNotAvailable
		}
		return types.NewError(code, fmt.Sprintf("strata agent (role %s) is not ready: %s", st.Role, st.Message), "")
	}
	return nil
}

package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/constant"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
)

// The RBAC is derived from the agent's code, not from a list someone keeps:
// every non-test package of this module that strata-agent links is type
// checked, and every client-go call in it is turned into the grant it needs.
// TestRBACIsExactlyAgentCalls then fails on a grant nothing calls and on a
// call no grant covers.

const (
	modulePath = "github.com/strata-net/strata"
	agentMain  = modulePath + "/cmd/strata-agent"
)

// agentNamespacedResources are read only in the agent's own namespace, so
// they are granted by a Role there, never cluster-wide.
var agentNamespacedResources = map[schema.GroupResource]bool{{Resource: "secrets"}: true}

// derivedCall is one grant the agent's code needs, with where it is needed.
type derivedCall struct {
	grant
	At string // file:line of the call
}

// scanned is the result of scanning the agent once per test binary.
var scanned struct {
	once  sync.Once
	calls []derivedCall
	err   error
}

// deriveAgentCalls returns the grants strata-agent's code needs, or fails
// the test when a call cannot be resolved (a dynamic client whose
// GroupVersionResource is not a literal or package-level var, say).
func deriveAgentCalls(t testing.TB) []derivedCall {
	t.Helper()
	scanned.once.Do(func() { scanned.calls, scanned.err = scanPackages(agentMain) })
	if scanned.err != nil {
		t.Fatalf("derive the agent's API calls: %v", scanned.err)
	}
	return scanned.calls
}

// derivedGrants is deriveAgentCalls as a set, with the namespace of
// agent-namespaced grants set to ns.
func derivedGrants(t testing.TB, ns string) map[grant][]string {
	t.Helper()
	out := map[grant][]string{}
	for _, c := range deriveAgentCalls(t) {
		g := c.grant
		if g.Namespace != "" {
			g.Namespace = ns
		}
		out[g] = append(out[g], c.At)
	}
	return out
}

type listedPackage struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Export     string
	Module     *struct{ Path string }
}

// scanPackages type-checks every package of this module that main depends
// on (from source, imports from the compiler's export data) and collects
// the API calls in it.
func scanPackages(main string) ([]derivedCall, error) {
	cmd := exec.Command("go", "list", "-export", "-deps", "-json=ImportPath,Dir,GoFiles,Export,Module", main)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list %s: %w\n%s", main, err, stderr.String())
	}
	exports := map[string]string{}
	var own []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list output: %w", err)
		}
		exports[p.ImportPath] = p.Export
		if p.Module != nil && p.Module.Path == modulePath {
			own = append(own, p)
		}
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok || f == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(f)
	})
	type checked struct {
		files []*ast.File
		info  *types.Info
	}
	var pkgs []checked
	vars := map[string]schema.GroupVersionResource{}
	for _, p := range own {
		var files []*ast.File
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
			if err != nil {
				return nil, err
			}
			files = append(files, f)
		}
		info := &types.Info{Types: map[ast.Expr]types.TypeAndValue{}, Uses: map[*ast.Ident]types.Object{}, Selections: map[*ast.SelectorExpr]*types.Selection{}}
		conf := types.Config{Importer: imp}
		if _, err := conf.Check(p.ImportPath, fset, files, info); err != nil {
			return nil, fmt.Errorf("type-check %s: %w", p.ImportPath, err)
		}
		collectVarGVRs(p.ImportPath, files, info, vars)
		pkgs = append(pkgs, checked{files, info})
	}
	var calls []derivedCall
	for _, p := range pkgs {
		s := &callScanner{fset: fset, info: p.info, vars: vars}
		for _, f := range p.files {
			ast.Inspect(f, s.visit)
		}
		if s.err != nil {
			return nil, s.err
		}
		calls = append(calls, s.calls...)
	}
	sort.Slice(calls, func(i, j int) bool { return calls[i].At < calls[j].At })
	return calls, nil
}

type callScanner struct {
	fset  *token.FileSet
	info  *types.Info
	vars  map[string]schema.GroupVersionResource // "pkgpath.Name"
	calls []derivedCall
	err   error
}

func (s *callScanner) fail(n ast.Node, format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("%s: %s", s.fset.Position(n.Pos()), fmt.Sprintf(format, args...))
	}
}

func (s *callScanner) add(n ast.Node, gr schema.GroupResource, sub string, verbs ...string) {
	pos := s.fset.Position(n.Pos())
	at := fmt.Sprintf("%s:%d", strings.TrimPrefix(pos.Filename, repoRoot()+"/"), pos.Line)
	ns := ""
	if agentNamespacedResources[gr] {
		ns = namespace
	}
	res := gr.Resource
	if sub != "" {
		res += "/" + sub
	}
	for _, v := range verbs {
		s.calls = append(s.calls, derivedCall{grant{ns, gr.Group, res, v}, at})
	}
}

// methodVerbs maps client methods (typed and dynamic) to RBAC verbs;
// subresource is true for those that act on /status.
var methodVerbs = map[string]struct {
	verb   string
	status bool
}{
	"Get": {"get", false}, "List": {"list", false}, "Watch": {"watch", false},
	"Create": {"create", false}, "Update": {"update", false}, "UpdateStatus": {"update", true},
	"Patch": {"patch", false}, "Apply": {"patch", false}, "ApplyStatus": {"patch", true},
	"Delete": {"delete", false}, "DeleteCollection": {"deletecollection", false},
}

const (
	typedClientPrefix = "k8s.io/client-go/kubernetes/typed/"
	typedInformer     = "k8s.io/client-go/informers/"
	dynamicPkg        = "k8s.io/client-go/dynamic"
	dynInformerPkg    = "k8s.io/client-go/dynamic/dynamicinformer"
)

func (s *callScanner) visit(n ast.Node) bool {
	if s.err != nil {
		return false
	}
	switch n := n.(type) {
	case *ast.CallExpr:
		s.call(n)
	case *ast.SelectorExpr:
		s.funcRef(n)
	}
	return true
}

// funcRef catches client-go helpers that make API calls themselves, used
// as a call or as a value.
func (s *callScanner) funcRef(sel *ast.SelectorExpr) {
	fn, ok := s.info.Uses[sel.Sel].(*types.Func)
	if !ok || fn.Pkg() == nil {
		return
	}
	switch fn.Pkg().Path() + "." + fn.Name() {
	case "k8s.io/client-go/tools/record.NewBroadcaster", "k8s.io/client-go/tools/record.NewBroadcasterForTests":
		// The core/v1 recorder creates an Event, then patches its count.
		s.add(sel, schema.GroupResource{Resource: "events"}, "", "create", "patch")
	case "k8s.io/client-go/tools/events.NewBroadcaster":
		// The events/v1 recorder creates, then patches the series.
		s.add(sel, schema.GroupResource{Group: "events.k8s.io", Resource: "events"}, "", "create", "patch")
	case "k8s.io/client-go/tools/leaderelection/resourcelock.New", "k8s.io/client-go/tools/leaderelection.NewLeaderElector":
		s.add(sel, schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "", "get", "create", "update")
	case "k8s.io/client-go/tools/cache.NewListWatchFromClient":
		s.fail(sel, "cache.NewListWatchFromClient: use a typed or dynamic informer so the RBAC test can see the resource")
	}
}

func (s *callScanner) call(call *ast.CallExpr) {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return
	}
	selection := s.info.Selections[sel]
	if selection == nil {
		return
	}
	fn, ok := selection.Obj().(*types.Func)
	if !ok || fn.Pkg() == nil {
		return
	}
	recv := namedOf(selection.Recv())
	if recv == nil || recv.Obj().Pkg() == nil {
		return
	}
	rpkg, rname := recv.Obj().Pkg().Path(), recv.Obj().Name()
	rname = strings.TrimPrefix(rname, "Typed") // client-go's generic informers: TypedNodeInformer
	switch {
	case strings.HasPrefix(rpkg, typedClientPrefix) && strings.HasSuffix(rname, "Interface"):
		// e.g. typed/core/v1.NodeInterface.Get
		mv, ok := methodVerbs[fn.Name()]
		if !ok {
			return // a group client (CoreV1Interface.Nodes) or something else
		}
		gr, err := typedResource(rpkg, strings.TrimSuffix(rname, "Interface"))
		if err != nil {
			s.fail(call, "%v", err)
			return
		}
		s.add(call, gr, subresource(mv.status, fn.Name(), call, s.info), mv.verb)
	case strings.HasPrefix(rpkg, typedInformer) && strings.HasSuffix(rname, "Informer") && (fn.Name() == "Informer" || fn.Name() == "Lister"):
		// e.g. informers/core/v1.NodeInformer.Informer: a list, then a watch.
		gr, err := typedResource(typedClientPrefix+strings.TrimPrefix(rpkg, typedInformer), strings.TrimSuffix(rname, "Informer"))
		if err != nil {
			s.fail(call, "%v", err)
			return
		}
		s.add(call, gr, "", "list", "watch")
	case rpkg == dynamicPkg && (rname == "ResourceInterface" || rname == "NamespaceableResourceInterface"):
		mv, ok := methodVerbs[fn.Name()]
		if !ok {
			return
		}
		gvr, ok := s.dynamicGVR(sel.X)
		if !ok {
			s.fail(call, "dynamic client call %s: cannot tell its resource; call it as <client>.Resource(<package-level GroupVersionResource var or literal>)[.Namespace(ns)].%s(...)", fn.Name(), fn.Name())
			return
		}
		s.add(call, gvr.GroupResource(), subresource(mv.status, fn.Name(), call, s.info), mv.verb)
	case rpkg == "k8s.io/client-go/rest" && (rname == "Interface" || rname == "RESTClient") && slices.Contains([]string{"Get", "Post", "Put", "Patch", "Delete", "Verb"}, fn.Name()):
		s.fail(call, "raw REST call %s: the RBAC test cannot tell its resource; use a typed or dynamic client", fn.Name())
	case rpkg == dynInformerPkg && rname == "DynamicSharedInformerFactory" && fn.Name() == "ForResource":
		gvr, ok := s.gvrValue(call.Args[0])
		if !ok {
			s.fail(call, "ForResource: the GroupVersionResource must be a package-level var or a literal")
			return
		}
		s.add(call, gvr.GroupResource(), "", "list", "watch")
	}
}

// subresource is "status" for UpdateStatus/ApplyStatus and for Patch(...,
// "status"); Patch with any other subresource fails the scan via "?".
func subresource(status bool, method string, call *ast.CallExpr, info *types.Info) string {
	if status {
		return "status"
	}
	if method != "Patch" && method != "Get" && method != "Update" && method != "Create" {
		return ""
	}
	// The variadic subresources follow the options argument.
	var fixed int
	switch method {
	case "Patch":
		fixed = 5 // ctx, name, type, data, options
	case "Update", "Create":
		fixed = 3 // ctx, obj, options (dynamic)
	case "Get":
		fixed = 3 // ctx, name, options (dynamic)
	}
	if len(call.Args) <= fixed {
		return ""
	}
	tv := info.Types[call.Args[fixed]]
	if tv.Value != nil && tv.Value.Kind() == constant.String {
		return constant.StringVal(tv.Value)
	}
	return "?"
}

func namedOf(t types.Type) *types.Named {
	if p, ok := t.(*types.Pointer); ok {
		t = p.Elem()
	}
	n, _ := types.Unalias(t).(*types.Named)
	return n
}

// typedResource turns a typed client's package (typed/<group>/<version>)
// and kind into the RBAC group and plural resource, from client-go's own
// scheme.
func typedResource(pkg, kind string) (schema.GroupResource, error) {
	parts := strings.Split(strings.TrimPrefix(pkg, typedClientPrefix), "/")
	if len(parts) != 2 {
		return schema.GroupResource{}, fmt.Errorf("typed client package %s: want typed/<group>/<version>", pkg)
	}
	short, version := parts[0], parts[1]
	for gvk := range scheme.Scheme.AllKnownTypes() {
		g := gvk.Group
		if g == "" {
			g = "core"
		}
		if gvk.Kind == kind && gvk.Version == version && (g == short || strings.HasPrefix(g, short+".")) {
			plural, _ := meta.UnsafeGuessKindToResource(gvk)
			return plural.GroupResource(), nil
		}
	}
	return schema.GroupResource{}, fmt.Errorf("typed client %s %s: not in client-go's scheme", pkg, kind)
}

// dynamicGVR follows a dynamic client chain back to its
// Resource(gvr) call: x.Resource(gvr) or x.Resource(gvr).Namespace(ns).
func (s *callScanner) dynamicGVR(x ast.Expr) (schema.GroupVersionResource, bool) {
	for {
		call, ok := ast.Unparen(x).(*ast.CallExpr)
		if !ok {
			return schema.GroupVersionResource{}, false
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return schema.GroupVersionResource{}, false
		}
		switch sel.Sel.Name {
		case "Namespace":
			x = sel.X
		case "Resource":
			if len(call.Args) != 1 {
				return schema.GroupVersionResource{}, false
			}
			return s.gvrValue(call.Args[0])
		default:
			return schema.GroupVersionResource{}, false
		}
	}
}

// gvrValue evaluates a GroupVersionResource given as a composite literal or
// as a package-level var initialised by one (in this module).
func (s *callScanner) gvrValue(e ast.Expr) (schema.GroupVersionResource, bool) {
	e = ast.Unparen(e)
	if lit, ok := e.(*ast.CompositeLit); ok {
		return literalGVR(lit, s.info)
	}
	var id *ast.Ident
	switch e := e.(type) {
	case *ast.Ident:
		id = e
	case *ast.SelectorExpr:
		id = e.Sel
	default:
		return schema.GroupVersionResource{}, false
	}
	v, ok := s.info.Uses[id].(*types.Var)
	if !ok || v.Pkg() == nil || v.Parent() != v.Pkg().Scope() {
		return schema.GroupVersionResource{}, false
	}
	gvr, ok := s.vars[v.Pkg().Path()+"."+v.Name()]
	return gvr, ok
}

func literalGVR(lit *ast.CompositeLit, info *types.Info) (schema.GroupVersionResource, bool) {
	var gvr schema.GroupVersionResource
	for _, el := range lit.Elts {
		kv, ok := el.(*ast.KeyValueExpr)
		if !ok {
			return gvr, false
		}
		key, _ := kv.Key.(*ast.Ident)
		tv := info.Types[kv.Value]
		if key == nil || tv.Value == nil || tv.Value.Kind() != constant.String {
			return gvr, false
		}
		val := constant.StringVal(tv.Value)
		switch key.Name {
		case "Group":
			gvr.Group = val
		case "Version":
			gvr.Version = val
		case "Resource":
			gvr.Resource = val
		}
	}
	return gvr, gvr.Resource != ""
}

// collectVarGVRs records the package-level vars of a package initialised
// by a GroupVersionResource literal.
func collectVarGVRs(pkg string, files []*ast.File, info *types.Info, into map[string]schema.GroupVersionResource) {
	for _, f := range files {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, sp := range gd.Specs {
				vs := sp.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.CompositeLit); ok {
						if gvr, ok := literalGVR(lit, info); ok {
							into[pkg+"."+n.Name] = gvr
						}
					}
				}
			}
		}
	}
}

var rootOnce = sync.OnceValue(func() string {
	wd, _ := os.Getwd()
	return filepath.Dir(wd) // this package is <root>/deploy
})

func repoRoot() string { return rootOnce() }

// callsTable is agentCalls as grants, for comparing with the derived set.
func callsTable(ns string) map[grant]string {
	out := map[grant]string{}
	for _, c := range agentCalls {
		g := grant{c.Namespace, c.Group, c.Resource, c.Verb}
		if g.Namespace != "" {
			g.Namespace = ns
		}
		out[g] = c.Why
	}
	return out
}

// TestAgentCallsTableIsDerived: every call the code makes has an agentCalls
// entry (its why, and the call the integration test makes as the agent's
// ServiceAccount), and no entry stands for a call the code does not make.
func TestAgentCallsTableIsDerived(t *testing.T) {
	derived := derivedGrants(t, namespace)
	table := callsTable(namespace)
	for g, at := range derived {
		if _, ok := table[g]; !ok {
			t.Errorf("the agent calls %s (%s) but agentCalls in deploy/calls_test.go has no entry: add one (why, and the call as the ServiceAccount makes it) and the RBAC grant", g, strings.Join(at, ", "))
		}
	}
	for g := range table {
		if _, ok := derived[g]; !ok {
			t.Errorf("agentCalls lists %s, which no code in strata-agent calls: remove the entry and its RBAC grant", g)
		}
	}
}

func TestDeriveFindsKnownCalls(t *testing.T) {
	// A floor against a scanner that silently finds nothing: the agent
	// surely reads its own Node.
	d := derivedGrants(t, namespace)
	if _, ok := d[grant{"", "", "nodes", "get"}]; !ok {
		t.Fatalf("derived calls lack core/nodes get; derived: %v", d)
	}
	for g, at := range d {
		if strings.Contains(g.Resource, "?") {
			t.Errorf("%s: a Patch/Get with a subresource that is not a constant string: %s", strings.Join(at, ", "), g)
		}
	}
	t.Logf("derived %d grants from strata-agent", len(d))
	for _, g := range slices.SortedFunc(maps.Keys(d), func(a, b grant) int { return strings.Compare(a.String(), b.String()) }) {
		t.Logf("  %s  (%s)", g, strings.Join(d[g], ", "))
	}
}

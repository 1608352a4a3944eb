package deploy

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// dfInstr is one Dockerfile instruction after line continuations are
// joined: RUN, COPY and FROM flags (--mount=..., --from=...) are split off.
type dfInstr struct {
	Cmd   string // upper case
	Flags []string
	Args  string
	Line  int
}

type dfStage struct {
	Name, Base string
	Instrs     []dfInstr
}

// dockerfile is the part of the Dockerfile syntax Strata's Dockerfile uses;
// anything else (heredocs, unknown instructions) is an error, so the tests
// never silently skip a step they do not understand.
type dockerfile struct {
	GlobalArgs map[string]string
	Stages     []dfStage
}

var dfKnown = []string{"FROM", "ARG", "ENV", "WORKDIR", "COPY", "RUN", "USER", "ENTRYPOINT", "CMD", "LABEL", "EXPOSE"}

func parseDockerfile(src string) (*dockerfile, error) {
	df := &dockerfile{GlobalArgs: map[string]string{}}
	sc := bufio.NewScanner(strings.NewReader(src))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	var cur strings.Builder
	start, n := 0, 0
	flush := func() error {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return nil
		}
		cmd, rest, _ := strings.Cut(text, " ")
		cmd = strings.ToUpper(cmd)
		if !slices.Contains(dfKnown, cmd) {
			return fmt.Errorf("line %d: instruction %q is not understood by this test's parser", start, cmd)
		}
		if strings.Contains(rest, "<<") && cmd == "RUN" {
			return fmt.Errorf("line %d: heredocs are not supported", start)
		}
		in := dfInstr{Cmd: cmd, Line: start}
		rest = strings.TrimSpace(rest)
		if cmd == "RUN" || cmd == "COPY" || cmd == "FROM" {
			for strings.HasPrefix(rest, "--") {
				flag, r, _ := strings.Cut(rest, " ")
				in.Flags = append(in.Flags, flag)
				rest = strings.TrimSpace(r)
			}
		}
		in.Args = rest
		if cmd == "FROM" {
			f := strings.Fields(rest)
			st := dfStage{}
			switch {
			case len(f) == 1:
				st.Base = f[0]
			case len(f) == 3 && strings.EqualFold(f[1], "AS"):
				st.Base, st.Name = f[0], f[2]
			default:
				return fmt.Errorf("line %d: FROM %q: want IMAGE [AS NAME]", start, rest)
			}
			df.Stages = append(df.Stages, st)
			return nil
		}
		if len(df.Stages) == 0 {
			if cmd != "ARG" {
				return fmt.Errorf("line %d: %s before the first FROM", start, cmd)
			}
			k, v, _ := strings.Cut(rest, "=")
			df.GlobalArgs[k] = v
			return nil
		}
		st := &df.Stages[len(df.Stages)-1]
		st.Instrs = append(st.Instrs, in)
		return nil
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") { // comments, also inside continuations
			continue
		}
		if cur.Len() == 0 {
			if trimmed == "" {
				continue
			}
			start = n
		}
		if body, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), "\\"); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("line %d: the file ends inside a line continuation", start)
	}
	if len(df.Stages) == 0 {
		return nil, fmt.Errorf("no FROM")
	}
	return df, nil
}

func (df *dockerfile) stage(name string) *dfStage {
	for i := range df.Stages {
		if df.Stages[i].Name == name {
			return &df.Stages[i]
		}
	}
	return nil
}

// vars are a stage's ARG defaults and ENV values, in order, global ARGs
// first; overrides replace ARG defaults (like --build-arg).
func (df *dockerfile) vars(st *dfStage, overrides map[string]string) map[string]string {
	v := map[string]string{}
	for k, val := range df.GlobalArgs {
		v[k] = val
	}
	for _, in := range st.Instrs {
		switch in.Cmd {
		case "ARG":
			k, val, _ := strings.Cut(in.Args, "=")
			if o, ok := overrides[k]; ok {
				val = o
			}
			v[k] = val
		case "ENV":
			for _, kv := range strings.Fields(in.Args) {
				k, val, _ := strings.Cut(kv, "=")
				v[k] = os.Expand(val, func(s string) string { return v[s] })
			}
		}
	}
	return v
}

// copies are a stage's COPY --from=FROM sources and destination.
func (st *dfStage) copies(from string) (srcs []string, dests []string) {
	for _, in := range st.Instrs {
		if in.Cmd != "COPY" || !slices.Contains(in.Flags, "--from="+from) {
			continue
		}
		f := strings.Fields(in.Args)
		dest := f[len(f)-1]
		for _, s := range f[:len(f)-1] {
			srcs = append(srcs, s)
			if strings.HasSuffix(dest, "/") {
				dests = append(dests, path.Join(dest, path.Base(s)))
			} else {
				dests = append(dests, dest)
			}
		}
	}
	return srcs, dests
}

func readDockerfile(t testing.TB) *dockerfile {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df, err := parseDockerfile(string(b))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	return df
}

// goModRequire returns the version go.mod requires of mod.
func goModRequire(t testing.TB, mod string) string {
	t.Helper()
	b, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?` + regexp.QuoteMeta(mod) + `\s+(v\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("go.mod does not require %s", mod)
	}
	return string(m[1])
}

// makeBuild is `make build` as make would run it (make -n), with its
// output directory and the binaries it builds.
func makeBuild(t testing.TB, version string) (cmdline, outDir string, binaries []string) {
	t.Helper()
	out, err := exec.Command("make", "--no-print-directory", "-C", "..", "-n", "build", "VERSION="+version).Output()
	if err != nil {
		t.Fatalf("make -n build: %v", err)
	}
	// The product binaries are the ./cmd/... of one go build line (others,
	// such as the lab's tools, stay out of the image).
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "go" || f[1] != "build" || !strings.Contains(l, " ./cmd/") {
			continue
		}
		cmdline = strings.TrimSpace(l)
		for i, w := range f {
			if w == "-o" && i+1 < len(f) {
				outDir = f[i+1]
			}
			if p, ok := strings.CutPrefix(w, "./cmd/"); ok {
				binaries = append(binaries, p)
			}
		}
	}
	if cmdline == "" || outDir == "" || len(binaries) == 0 {
		t.Fatalf("cannot read the go build line of `make -n build`:\n%s", out)
	}
	return cmdline, outDir, binaries
}

// TestDockerfileMatchesMakeBuild: the image is built by `make build` and
// copies exactly what it produces, with the plugins go.mod pins, and the
// paths the DaemonSet uses.
func TestDockerfileMatchesMakeBuild(t *testing.T) {
	df := readDockerfile(t)
	build, final := df.stage("build"), &df.Stages[len(df.Stages)-1]
	if build == nil {
		t.Fatal("no stage named build")
	}
	if final == build {
		t.Fatal("the build stage must not be the final image")
	}
	v := df.vars(build, nil)
	if v["CGO_ENABLED"] != "0" {
		t.Errorf("build stage CGO_ENABLED=%q, want 0 like the Makefile (static binaries for any base image)", v["CGO_ENABLED"])
	}
	goDirective := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(mustRead(t, "../go.mod"))
	if goDirective == nil || df.GlobalArgs["GO_VERSION"] != goDirective[1] {
		t.Errorf("ARG GO_VERSION=%q, go.mod says go %v", df.GlobalArgs["GO_VERSION"], goDirective)
	}
	var runs []string
	for _, in := range build.Instrs {
		if in.Cmd == "RUN" {
			runs = append(runs, in.Args)
		}
	}
	if !slices.ContainsFunc(runs, func(r string) bool { return strings.Contains(r, "make build VERSION=${VERSION}") }) {
		t.Errorf("the build stage must run `make build VERSION=${VERSION}` (the same go build as developers and CI); RUNs: %q", runs)
	}
	pv := goModRequire(t, "github.com/containernetworking/plugins")
	for _, p := range []string{"portmap", "bandwidth"} {
		want := "github.com/containernetworking/plugins/plugins/meta/" + p + "@" + pv
		if !slices.ContainsFunc(runs, func(r string) bool { return strings.Contains(r, want) }) {
			t.Errorf("the build stage must install %s (go.mod's version)", want)
		}
	}
	_, outDir, bins := makeBuild(t, "x")
	workdir := ""
	for _, in := range build.Instrs {
		if in.Cmd == "WORKDIR" {
			workdir = in.Args
		}
	}
	srcs, dests := final.copies("build")
	for _, b := range bins {
		if want := path.Join(workdir, outDir, b); !slices.Contains(srcs, want) {
			t.Errorf("the final stage does not copy %s (make build produces it); copies %v", want, srcs)
		}
	}
	// The DaemonSet runs what the image holds.
	ds := daemonSet(t, loadDir(t, manifestsDir))
	agent := container(t, ds.Spec.Template.Spec.Containers, "agent")
	init := ds.Spec.Template.Spec.InitContainers[0]
	need := []string{agent.Command[0], "/usr/local/bin/strata-cni", "/opt/strata/cni/portmap", "/opt/strata/cni/bandwidth"}
	for _, p := range need {
		if !slices.Contains(dests, p) {
			t.Errorf("the DaemonSet uses %s, which the image does not have (image files: %v)", p, dests)
		}
	}
	for _, p := range need[1:] {
		if !strings.Contains(init.Args[0], path.Dir(p)) {
			t.Errorf("install-cni script does not read %s", p)
		}
	}
	checkEntrypoint(t, final, agent)
}

func checkEntrypoint(t *testing.T, final *dfStage, agent *corev1.Container) {
	t.Helper()
	for _, in := range final.Instrs {
		if in.Cmd == "ENTRYPOINT" && !strings.Contains(in.Args, agent.Command[0]) {
			t.Errorf("ENTRYPOINT %s differs from the DaemonSet's command %v", in.Args, agent.Command)
		}
	}
}

func mustRead(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseDockerfileErrors(t *testing.T) {
	for name, src := range map[string]string{
		"empty":           "",
		"no from":         "RUN true\n",
		"unknown":         "FROM x\nFROBNICATE y\n",
		"dangling":        "FROM x\nRUN a \\\n",
		"heredoc":         "FROM x\nRUN <<EOF\nx\nEOF\n",
		"bad from":        "FROM a b\n",
		"env before from": "ENV A=b\nFROM x\n",
	} {
		if _, err := parseDockerfile(src); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
	df, err := parseDockerfile("ARG V=1\n# c\nFROM img:${V} AS b\nRUN --mount=type=cache,target=/x \\\n  # inside\n  echo a \\\n  b\nFROM scratch\nCOPY --from=b /o/x /o/y /bin/\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := df.Stages[0].Instrs[0]; strings.Join(strings.Fields(got.Args), " ") != "echo a b" || got.Flags[0] != "--mount=type=cache,target=/x" {
		t.Errorf("continuation: %+v", got)
	}
	srcs, dests := df.Stages[1].copies("b")
	if !slices.Equal(srcs, []string{"/o/x", "/o/y"}) || !slices.Equal(dests, []string{"/bin/x", "/bin/y"}) {
		t.Errorf("copies: %v -> %v", srcs, dests)
	}
}

// FuzzParseDockerfile: the parser never panics, and what it accepts has a
// stage for every FROM.
func FuzzParseDockerfile(f *testing.F) {
	f.Add(mustReadF(f, "Dockerfile"))
	f.Add("FROM a AS b\nRUN x \\\n y\n")
	f.Add("ARG X\nFROM $X\nCOPY --from=0 a b\n")
	f.Add("FROM a\nRUN \\\n")
	f.Fuzz(func(t *testing.T, src string) {
		df, err := parseDockerfile(src)
		if err != nil {
			return
		}
		froms := 0
		for _, l := range strings.Split(src, "\n") {
			if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(l)), "FROM ") {
				froms++
			}
		}
		if len(df.Stages) == 0 || len(df.Stages) > froms {
			t.Fatalf("%d stages from %d FROM lines", len(df.Stages), froms)
		}
	})
}

func mustReadF(f *testing.F, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	return string(b)
}

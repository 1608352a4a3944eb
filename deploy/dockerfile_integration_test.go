//go:build integration

package deploy

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// contextExcluded mirrors deploy/Dockerfile.dockerignore: what BuildKit
// leaves out of the build context.
func contextExcluded(rel string, d fs.DirEntry) bool {
	if d.IsDir() {
		switch rel {
		case ".git", "_out", "docs", "tests/tools":
			return true
		}
		return d.Name() == "testdata"
	}
	return strings.HasSuffix(rel, "_test.go")
}

// buildContext writes the build context into dir: the committed tree (what
// a clean checkout, as in CI, holds; uncommitted work in this shared tree
// stays out), or the work tree when there is no git, minus the ignore
// file's patterns.
func buildContext(t *testing.T, dir string) {
	t.Helper()
	archive := exec.Command("git", "-C", "..", "archive", "--format=tar", "HEAD")
	untar := exec.Command("tar", "-x", "-C", dir)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	untar.Stdin = pipe
	if err := archive.Start(); err == nil {
		out, uerr := untar.CombinedOutput()
		if werr := archive.Wait(); werr != nil || uerr != nil {
			t.Fatalf("git archive HEAD | tar -x: %v %v %s", werr, uerr, out)
		}
	} else {
		copyTree(t, "..", dir)
	}
	// Apply the ignore file.
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel != "." && contextExcluded(rel, d) {
			if err := os.RemoveAll(p); err != nil {
				return err
			}
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if rel == ".git" || rel == "_out" {
			return filepath.SkipDir
		}
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestIntegrationDockerfileBuildStages runs the image build without a Docker
// engine: the build context (the repo minus Dockerfile.dockerignore) is
// copied to a fresh directory standing for WORKDIR /src, every RUN of the
// build stage runs there with the stage's ARG/ENV, and every file the final
// stage copies must then exist, be a static executable (no ELF interpreter,
// so it runs on Alpine) and work.
func TestIntegrationDockerfileBuildStages(t *testing.T) {
	df := readDockerfile(t)
	build := df.stage("build")
	workdir := ""
	for _, in := range build.Instrs {
		if in.Cmd == "WORKDIR" {
			workdir = in.Args
		}
	}
	src := t.TempDir()
	buildContext(t, src)
	const version = "v0.0.0-imagetest"
	vars := df.vars(build, map[string]string{"VERSION": version})
	env := os.Environ()
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	for _, in := range build.Instrs {
		if in.Cmd != "RUN" {
			continue
		}
		script := strings.ReplaceAll(in.Args, workdir+"/", src+"/")
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.Dir, cmd.Env = src, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("Dockerfile line %d: RUN %s: %v\n%s", in.Line, in.Args, err, out)
		}
	}
	final := &df.Stages[len(df.Stages)-1]
	srcs, dests := final.copies("build")
	if len(srcs) == 0 {
		t.Fatal("the final stage copies nothing from the build stage")
	}
	files := map[string]string{} // image path -> built file
	for i, s := range srcs {
		p := strings.Replace(s, workdir, src, 1)
		files[dests[i]] = p
		f, err := elf.Open(p)
		if err != nil {
			t.Errorf("%s (for %s): %v", s, dests[i], err)
			continue
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked: it would not run on the Alpine base", s)
			}
		}
		f.Close()
	}
	out, err := exec.Command(files["/usr/local/bin/strata-agent"], "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), version) {
		t.Errorf("strata-agent --version: %v: %s (want %s: the build stage passes VERSION to make build)", err, out, version)
	}
	for _, p := range []string{"/usr/local/bin/strata-cni", "/opt/strata/cni/portmap", "/opt/strata/cni/bandwidth"} {
		cmd := exec.Command(files[p])
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		cmd.Stdin = bytes.NewReader([]byte(`{"cniVersion":"1.0.0"}`))
		out, err := cmd.Output()
		var v struct {
			Supported []string `json:"supportedVersions"`
		}
		if err != nil || json.Unmarshal(out, &v) != nil || len(v.Supported) == 0 {
			t.Errorf("%s VERSION: %v: %s", p, err, out)
		}
	}
}

package xsessiond

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryPackageHasDoc fails when a Go package of the module has no
// package doc comment, or when a folder named in the design has no Go
// package at all.
func TestEveryPackageHasDoc(t *testing.T) {
	pkgs := map[string]bool{} // dir -> has doc
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		dir := filepath.Dir(path)
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		pkgs[dir] = pkgs[dir] || (f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir, hasDoc := range pkgs {
		if !hasDoc {
			t.Errorf("package in %s has no package doc comment (add a doc.go)", dir)
		}
	}
	for _, dir := range []string{"bpf", "loader", "fifo", "sessions", "nsbind", "datapath", "datapath/xsk",
		"datapath/udp", "api", "app", "flow", "daemon", "cmd/xsessiond", "examples/udpecho", "examples/udpsink", "examples/tcpecho", "examples/httpd", "perf",
		"vagrant", "deploy"} {
		if _, ok := pkgs[filepath.FromSlash(dir)]; !ok {
			if _, err := os.Stat(dir); err != nil {
				t.Errorf("folder %s of the design is missing", dir)
			} else {
				t.Errorf("folder %s has no Go package with a doc comment", dir)
			}
		}
	}
}

// TestLayering fails when a package that only carries sessions reaches the
// session layer through its imports (test files aside), or when flow, the
// bottom of the graph, imports anything of this module.
func TestLayering(t *testing.T) {
	const mod = "github.com/xsessiond/xsessiond/"
	imports := map[string][]string{} // dir -> module-internal imports (as dirs)
	var load func(dir string) []string
	load = func(dir string) []string {
		if deps, ok := imports[dir]; ok {
			return deps
		}
		imports[dir] = nil
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		var deps []string
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				p := strings.Trim(imp.Path.Value, `"`)
				if d, ok := strings.CutPrefix(p, mod); ok && !seen[d] {
					seen[d] = true
					deps = append(deps, d)
				}
			}
		}
		imports[dir] = deps
		return deps
	}
	reaches := func(from, to string) []string {
		prev := map[string]string{from: ""}
		queue := []string{from}
		for len(queue) > 0 {
			d := queue[0]
			queue = queue[1:]
			if d == to {
				var path []string
				for ; d != ""; d = prev[d] {
					path = append([]string{d}, path...)
				}
				return path
			}
			for _, n := range load(d) {
				if _, ok := prev[n]; !ok {
					prev[n] = d
					queue = append(queue, n)
				}
			}
		}
		return nil
	}
	for _, p := range []string{"datapath/frame", "nsbind", "loader", "api", "app", "fifo", "flow"} {
		if path := reaches(p, "sessions"); path != nil {
			t.Errorf("%s imports the session layer: %s", p, strings.Join(path, " -> "))
		}
	}
	if deps := load("flow"); len(deps) > 0 {
		t.Errorf("flow imports %v; it must import nothing of this module", deps)
	}
}

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
		"datapath/udp", "api", "app", "cmd/xsessiond", "examples/udpecho", "examples/udpsink", "perf",
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

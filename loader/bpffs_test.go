package loader

import (
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

func TestEnsureBPFFS(t *testing.T) {
	nstest.RequirePrivileged(t)
	dir := filepath.Join(t.TempDir(), "bpf")
	if err := EnsureBPFFS(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, 0) })
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		t.Fatalf("%s is not bpffs after EnsureBPFFS (type %#x)", dir, st.Type)
	}
	// A second call finds it mounted and mounts nothing more. leakcheck
	// compares the set of mounts at dir: the mount table is the whole
	// mount namespace's, where other processes mount and unmount too.
	mounts := leakcheck.Take(t, leakcheck.Options{Mounts: []string{dir}})
	if err := EnsureBPFFS(dir); err != nil {
		t.Fatal(err)
	}
	if !mounts.Check(t) {
		t.Fatal("second EnsureBPFFS mounted again")
	}
	if err := EnsureBPFFS(""); err != nil {
		t.Fatal(err)
	}
}

package loader

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// BPFFSPath is where the bpf filesystem is mounted.
const BPFFSPath = "/sys/fs/bpf"

// EnsureBPFFS mounts the bpf filesystem at path (BPFFSPath when empty) when
// nothing of type bpf is mounted there yet. It is idempotent.
func EnsureBPFFS(path string) error {
	if path == "" {
		path = BPFFSPath
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	} else if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("statfs %s: %w", path, err)
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := unix.Mount("bpf", path, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", path, err)
	}
	return nil
}

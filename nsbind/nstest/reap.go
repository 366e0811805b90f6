package nstest

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// rigName matches the namespace names rigs take: "xs<pid>-<seq>-<a|b|m>".
var rigName = regexp.MustCompile(`^xs([0-9]+)-[0-9]+-[abm]$`)

var reapOnce sync.Once

// reapStale removes, once per process, the rig namespaces under
// /run/netns whose process is gone: a process killed before its cleanup
// (SIGKILL, a test binary's timeout) leaves its named namespaces, and with
// them their veths, behind for good. A name whose pid is alive, this
// process's included, is left alone, as is anything not named as a rig.
// Errors are ignored: a namespace left is what there was before.
func reapStale() {
	reapOnce.Do(func() {
		ents, err := os.ReadDir(netnsDir)
		if err != nil {
			return
		}
		for _, e := range ents {
			m := rigName.FindStringSubmatch(e.Name())
			if m == nil {
				continue
			}
			pid, err := strconv.Atoi(m[1])
			if err != nil || pid == os.Getpid() || processAlive(pid) {
				continue
			}
			if err := netns.DeleteNamed(e.Name()); errors.Is(err, unix.EINVAL) {
				// No namespace bound there: a name left as a plain
				// file (its process died between creating the file
				// and binding it, or in a mount namespace of its own).
				_ = os.Remove(filepath.Join(netnsDir, e.Name()))
			}
		}
	})
}

// processAlive reports whether a process with this pid exists (in this
// process's pid namespace). When that cannot be told, it says yes.
func processAlive(pid int) bool {
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return err == nil || !errors.Is(err, os.ErrNotExist)
}

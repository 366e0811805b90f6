package nstest

import (
	"os/exec"
	"strings"
	"testing"
)

// FeatureOn reports whether the offload feature name of h's veth end (as
// ethtool -k names it: tx-udp-segmentation, …) is on, read with ethtool
// in h's namespace, as an operator would. It fails t when ethtool fails
// or does not list the feature.
func (h *Host) FeatureOn(t testing.TB, name string) bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", h.Name, "ethtool", "-k", h.Link).CombinedOutput()
	if err != nil {
		t.Fatalf("ethtool -k %s in %s: %v: %s", h.Link, h.Name, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+":"); ok {
			return strings.HasPrefix(strings.TrimSpace(v), "on")
		}
	}
	t.Fatalf("ethtool -k %s in %s: no %s line:\n%s", h.Link, h.Name, name, out)
	return false
}

package datapath_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestFewerQueuesServedWarns: an engine that serves fewer queues than its
// interface receives on says so as it starts, naming what becomes of the
// packets of the others and what to do; one that serves them all says
// nothing of it.
func TestFewerQueuesServedWarns(t *testing.T) {
	nstest.RequirePrivileged(t)
	p := nstest.NewPair(t, nstest.Options{Queues: 2})
	ns, err := nsbind.OpenNamed(p.B.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	for _, c := range []struct {
		queues int
		warn   bool
	}{{1, true}, {0, false}, {2, false}} {
		var log bytes.Buffer
		eng, err := datapath.New(datapath.Config{IfName: p.B.Link, Netns: ns, NetnsName: p.B.Name, Queues: c.queues,
			Logger: slog.New(slog.NewTextHandler(&log, nil))})
		if err != nil {
			t.Fatal(err)
		}
		eng.Close()
		got := strings.Contains(log.String(), "fewer queues served than the interface receives on")
		if got != c.warn {
			t.Errorf("--queues %d of 2: warned %v, want %v; the log:\n%s", c.queues, got, c.warn, log.String())
		}
		if got && (!strings.Contains(log.String(), "served=1") || !strings.Contains(log.String(), "ethtool -X")) {
			t.Errorf("--queues %d: the warning names no count or remedy:\n%s", c.queues, log.String())
		}
	}
}

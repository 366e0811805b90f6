package tcp

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	glog "gvisor.dev/gvisor/pkg/log"
)

func TestLogTo(t *testing.T) {
	was := glog.Log().Emitter
	t.Cleanup(func() { glog.SetTarget(was) })
	var buf bytes.Buffer
	LogTo(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	glog.Warningf("handshake failed for %s: %v", "10.0.0.1", "port is in use")
	glog.Infof("chatter %d", 1)
	out := buf.String()
	if !strings.Contains(out, `level=WARN msg="handshake failed for 10.0.0.1: port is in use" component=gvisor`) {
		t.Errorf("gVisor's warning not in the log as a warning: %q", out)
	}
	if strings.Contains(out, "chatter") {
		t.Errorf("gVisor's info line logged above debug level: %q", out)
	}
}

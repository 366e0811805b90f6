package tcp

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	glog "gvisor.dev/gvisor/pkg/log"
)

// LogTo sends gVisor's log to l: its warnings (rate-limited by gVisor, such
// as a handshake it could not complete) as warnings, the rest at debug
// level, each with component=gvisor. gVisor keeps one log for the process;
// without LogTo it writes lines of its own format to stderr.
func LogTo(l *slog.Logger) {
	glog.SetTarget(slogEmitter{l})
}

type slogEmitter struct{ l *slog.Logger }

func (e slogEmitter) Emit(_ int, level glog.Level, _ time.Time, format string, v ...any) {
	sl := slog.LevelDebug
	if level == glog.Warning {
		sl = slog.LevelWarn
	}
	ctx := context.Background()
	if !e.l.Enabled(ctx, sl) {
		return
	}
	e.l.Log(ctx, sl, fmt.Sprintf(format, v...), "component", "gvisor")
}

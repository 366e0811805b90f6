package daemon

import (
	"context"

	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/sessions"
)

// engine is what the daemon needs of a datapath: the datapath.Engine of one
// interface (dpEngine), behind this interface so that the control plane
// also runs without one (noEngine, Config.NoDatapath).
type engine interface {
	// Workers returns the number of datapath workers (sessions shards).
	Workers() int
	// Datapath returns what the session layer calls, or nil when there is
	// no datapath (connects to remote peers then fail with ErrConnect).
	Datapath() sessions.Datapath
	// Start mirrors the layer's tables into the datapath and starts the
	// workers.
	Start(l *sessions.Layer) error
	// KickFDs returns one eventfd per worker, in worker order, or none.
	KickFDs() []int
	// Stats returns the datapath's counters.
	Stats() EngineStats
	// WaitMirror waits until the datapath's tables (the XDP program's
	// maps) reflect every change the session layer made before the call.
	WaitMirror(ctx context.Context) error
	// Close stops the workers, detaches and unpins; idempotent.
	Close() error
}

// EngineStats are a datapath's counters as the daemon reports them (ctl
// show stats, metrics).
type EngineStats struct {
	Datapath string       `json:"datapath"` // "none" without a datapath
	XDPMode  string       `json:"xdp_mode,omitempty"`
	Checksum string       `json:"checksum,omitempty"` // the UDP checksum mode in effect (datapath.Config.Checksum)
	Queues   []QueueStats `json:"queues"`
	// Detail is the datapath's own report (a datapath.Stats in the
	// daemon, a JSON object once decoded), shown as is.
	Detail any `json:"detail,omitempty"`
}

// QueueStats are the counters of one queue's worker.
type QueueStats struct {
	Queue     int    `json:"queue"`
	RxPackets uint64 `json:"rx_packets"`
	TxPackets uint64 `json:"tx_packets"`
	Delivered uint64 `json:"delivered"`
	// PartialCsum counts datagrams delivered with a partial checksum (a
	// local sender's offload), accepted by the checksum mode.
	PartialCsum uint64            `json:"partial_csum,omitempty"`
	Drops       map[string]uint64 `json:"drops,omitempty"` // by reason
}

// noEngine is the control plane without a datapath: one shard, no
// workers, no kick eventfds. Binds work, cut-through sessions work,
// connects to remote peers fail with flow.ErrConnect.
type noEngine struct{}

func (noEngine) Workers() int                { return 1 }
func (noEngine) Datapath() sessions.Datapath { return nil }
func (noEngine) Start(*sessions.Layer) error { return nil }
func (noEngine) KickFDs() []int              { return nil }
func (noEngine) Stats() EngineStats          { return EngineStats{Datapath: "none", Queues: []QueueStats{}} }
func (noEngine) Close() error                { return nil }

func (noEngine) WaitMirror(context.Context) error { return nil }

// dpEngine adapts a datapath.Engine to the daemon's engine.
type dpEngine struct {
	*datapath.Engine
}

func newDatapathEngine(cfg datapath.Config) (engine, error) {
	e, err := datapath.New(cfg)
	if err != nil {
		return nil, err
	}
	return dpEngine{e}, nil
}

func (e dpEngine) Stats() EngineStats {
	s := e.Engine.Stats()
	out := EngineStats{Datapath: "af_xdp", XDPMode: s.XDPMode, Checksum: s.Checksum, Queues: make([]QueueStats, 0, len(s.Queues)), Detail: s}
	for _, q := range s.Queues {
		out.Queues = append(out.Queues, QueueStats{Queue: q.Queue, RxPackets: q.Rx, TxPackets: q.Tx, Delivered: q.Delivered, PartialCsum: q.PartialCsum, Drops: q.Drops})
	}
	return out
}

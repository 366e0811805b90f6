package main

import (
	"context"
	"log/slog"

	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/sessions"
)

// engine is what the daemon needs of a datapath: the datapath.Engine of one
// interface, behind this interface so that the control plane also runs
// without one (noEngine), which tests and the quickstart use when the
// datapath cannot be started.
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
	Stats() engineStats
	// WaitMirror waits until the datapath's tables (the XDP program's
	// maps) reflect every change the session layer made before the call.
	WaitMirror(ctx context.Context) error
	// Close stops the workers, detaches and unpins; idempotent.
	Close() error
}

// engineStats are a datapath's counters as the daemon reports them (ctl
// show stats, metrics).
type engineStats struct {
	Datapath string       `json:"datapath"` // "none" without a datapath
	XDPMode  string       `json:"xdp_mode,omitempty"`
	Queues   []queueStats `json:"queues"`
	// Detail is the datapath's own report, shown as is.
	Detail any `json:"detail,omitempty"`
}

// queueStats are the counters of one queue's worker.
type queueStats struct {
	Queue     int               `json:"queue"`
	RxPackets uint64            `json:"rx_packets"`
	TxPackets uint64            `json:"tx_packets"`
	Delivered uint64            `json:"delivered"`
	Drops     map[string]uint64 `json:"drops,omitempty"` // by reason
}

// engineConfig is what the daemon gives a datapath constructor.
type engineConfig struct {
	IfName    string
	Netns     *nsbind.Namespace
	NetnsName string
	Queues    int
	Batch     int
	BusyPoll  bool
	XDPMode   string
	Logger    *slog.Logger
}

// newEngineFunc makes the engine of an interface.
type newEngineFunc func(cfg engineConfig) (engine, error)

// noEngine is the control plane without a datapath: one shard, no
// workers, no kick eventfds. Binds work, cut-through sessions work,
// connects to remote peers fail with flow.ErrConnect.
type noEngine struct{}

func (noEngine) Workers() int                { return 1 }
func (noEngine) Datapath() sessions.Datapath { return nil }
func (noEngine) Start(*sessions.Layer) error { return nil }
func (noEngine) KickFDs() []int              { return nil }
func (noEngine) Stats() engineStats          { return engineStats{Datapath: "none", Queues: []queueStats{}} }
func (noEngine) Close() error                { return nil }

func (noEngine) WaitMirror(context.Context) error { return nil }

// newNoEngine is a newEngineFunc for noEngine.
func newNoEngine(engineConfig) (engine, error) { return noEngine{}, nil }

package main

import (
	"github.com/xsessiond/xsessiond/datapath"
)

// datapathEngine makes the AF_XDP datapath engine of an interface.
var datapathEngine newEngineFunc = newDatapathEngine

// dpEngine adapts a datapath.Engine to the daemon's engine.
type dpEngine struct {
	*datapath.Engine
}

func newDatapathEngine(cfg engineConfig) (engine, error) {
	e, err := datapath.New(datapath.Config{
		IfName: cfg.IfName, Netns: cfg.Netns, NetnsName: cfg.NetnsName,
		Queues: cfg.Queues, Batch: cfg.Batch, BusyPoll: cfg.BusyPoll, XDPMode: cfg.XDPMode,
		Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	return dpEngine{e}, nil
}

func (e dpEngine) Stats() engineStats {
	s := e.Engine.Stats()
	out := engineStats{Datapath: "af_xdp", XDPMode: s.XDPMode, Queues: make([]queueStats, 0, len(s.Queues)), Detail: s}
	for _, q := range s.Queues {
		out.Queues = append(out.Queues, queueStats{Queue: q.Queue, RxPackets: q.Rx, TxPackets: q.Tx, Delivered: q.Delivered, Drops: q.Drops})
	}
	return out
}

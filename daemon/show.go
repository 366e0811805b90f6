package daemon

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// AppView is an attached app as `ctl show apps` lists it: the session
// layer's view plus the peer credentials of its connection.
type AppView struct {
	sessions.AppInfo
	PID      int32  `json:"pid"`
	UID      uint32 `json:"uid"`
	GID      uint32 `json:"gid"`
	Since    string `json:"since"`
	FifoUsed uint64 `json:"fifo_used_bytes"`
	FifoSize uint64 `json:"fifo_size_bytes"`
}

// RuleView is a rule as `ctl show rules` lists it.
type RuleView struct {
	ID         uint32 `json:"id"`
	Namespace  string `json:"namespace"`
	Proto      string `json:"proto"`
	Local      string `json:"local"`
	LocalPort  uint16 `json:"local_port"`
	Remote     string `json:"remote"`
	RemotePort uint16 `json:"remote_port"`
	Action     string `json:"action"`
	App        uint32 `json:"app,omitempty"`
	Scope      string `json:"scope"`
	Tag        string `json:"tag,omitempty"`
	Hits       uint64 `json:"hits"` // packets and connects the rule acted on
}

// StatsView is `ctl show stats`: the daemon, its tables' sizes and its
// datapath's counters.
type StatsView struct {
	Version    string      `json:"version"`
	Iface      string      `json:"iface"`
	Netns      string      `json:"netns"`
	IfIndex    int         `json:"ifindex"`
	Uptime     string      `json:"uptime"`
	Apps       int         `json:"apps"`
	Conns      int         `json:"connections"`
	Listeners  int         `json:"listeners"`
	Sessions   int         `json:"sessions"`
	Namespaces int         `json:"namespaces"`
	Rules      int         `json:"rules"`
	Workers    int         `json:"workers"`
	Engine     EngineStats `json:"engine"`
}

// show builds the JSON document of a Show request.
func (d *Daemon) show(what api.ShowWhat) ([]byte, error) {
	var v any
	switch what {
	case api.ShowApps:
		v = d.AppViews()
	case api.ShowSessions:
		v = nonNil(d.layer.Sessions())
	case api.ShowListeners:
		v = nonNil(d.layer.Listeners())
	case api.ShowNamespaces:
		v = nonNil(d.layer.Namespaces())
	case api.ShowRules:
		v = d.RuleViews()
	case api.ShowStats:
		v = d.Stats()
	default:
		return nil, fmt.Errorf("show %d: %w", uint8(what), flow.ErrInvalidValue)
	}
	return json.Marshal(v)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (d *Daemon) AppViews() []AppView {
	apps := d.layer.Apps()
	fill := d.fifoFill()
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]AppView, 0, len(apps))
	for _, a := range apps {
		v := AppView{AppInfo: a}
		if c := d.clients[a.Client]; c != nil {
			v.PID, v.UID, v.GID = c.cred.PID, c.cred.UID, c.cred.GID
			v.Since = c.since.UTC().Format(time.RFC3339)
		}
		f := fill[a.ID]
		v.FifoUsed, v.FifoSize = f.rxUsed+f.txUsed, f.rxSize+f.txSize
		out = append(out, v)
	}
	return out
}

func (d *Daemon) RuleViews() []RuleView {
	rules := d.layer.Rules()
	out := make([]RuleView, 0, len(rules))
	for _, r := range rules {
		out = append(out, RuleView{
			ID: r.ID, Namespace: r.Namespace, Proto: r.Transport.String(),
			Local: prefixString(r.Local), LocalPort: r.LocalPort,
			Remote: prefixString(r.Remote), RemotePort: r.RemotePort,
			Action: r.Action.String(), App: uint32(r.App), Scope: r.Scope.String(), Tag: r.Tag, Hits: r.Hits,
		})
	}
	return out
}

func prefixString(p interface {
	IsValid() bool
	String() string
}) string {
	if !p.IsValid() {
		return "any"
	}
	return p.String()
}

// Stats returns what `ctl show stats` shows, once started.
func (d *Daemon) Stats() StatsView {
	d.mu.Lock()
	conns := len(d.clients)
	d.mu.Unlock()
	return StatsView{
		Version: d.cfg.Version, Iface: d.cfg.Datapath.IfName, Netns: d.cfg.Datapath.NetnsName, IfIndex: d.iface.Index,
		Uptime: time.Since(d.start).Round(time.Second).String(),
		Apps:   len(d.layer.Apps()), Conns: conns, Listeners: len(d.layer.Listeners()),
		Sessions: len(d.layer.Sessions()), Namespaces: len(d.layer.Namespaces()), Rules: len(d.layer.Rules()),
		Workers: d.eng.Workers(), Engine: d.eng.Stats(),
	}
}

// fill is how full an app's fifos are.
type fill struct {
	rxUsed, rxSize, txUsed, txSize uint64
}

// fifoFill reads the fill of every fifo the daemon knows of, per app.
func (d *Daemon) fifoFill() map[sessions.AppID]fill {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[sessions.AppID]fill{}
	for app, m := range d.fifos {
		for _, p := range m {
			if p.ct != nil {
				if !p.ct.refs.tryRef() {
					continue
				}
			}
			rx, tx := p.pair.Rx, p.pair.Tx
			if rx != nil && tx != nil {
				f := out[app]
				u, s := fifoUsed(rx)
				f.rxUsed += uint64(u)
				f.rxSize += uint64(s)
				u, s = fifoUsed(tx)
				f.txUsed += uint64(u)
				f.txSize += uint64(s)
				out[app] = f
			}
			if p.ct != nil {
				p.ct.release()
			}
		}
	}
	return out
}

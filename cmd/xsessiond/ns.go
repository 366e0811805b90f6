package main

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/sessions"
)

// addNamespace adds an app namespace on interface iface of the named
// netns ("" is the netns of the daemon's interface). The daemon follows
// that netns's addresses for as long as a namespace lives in it.
func (d *daemon) addNamespace(id string, secret uint64, iface, netnsName string) error {
	if id == "" {
		return fmt.Errorf("ns add: empty id (the default namespace is built in): %w", flow.ErrInvalidValue)
	}
	if iface == "" {
		return fmt.Errorf("ns add %q: no interface: %w", id, flow.ErrInvalidValue)
	}
	r, err := d.netnsRef(netnsName)
	if err != nil {
		return fmt.Errorf("ns add %q: %w", id, err)
	}
	fib := r.ns.FIB()
	ifc, err := r.ns.InterfaceByName(iface)
	if err != nil {
		d.netnsUnref(fib)
		where := "the daemon's netns"
		if r.name != "" {
			where = fmt.Sprintf("netns %q", r.name)
		}
		return fmt.Errorf("ns add %q: interface %q does not exist in %s: %w", id, iface, where, flow.ErrInvalidValue)
	}
	if err := d.layer.AddNamespace(sessions.NamespaceConfig{ID: id, Secret: secret, IfIndex: ifc.Index, FIB4: fib, FIB6: fib}); err != nil {
		d.netnsUnref(fib)
		return fmt.Errorf("ns add: %w", err)
	}
	d.mu.Lock()
	d.nsNetns[id] = fib
	d.mu.Unlock()
	d.log.Info("namespace added", "id", id, "iface", iface, "netns", netnsName, "ifindex", ifc.Index)
	return nil
}

// delNamespace removes an app namespace that has no apps attached.
func (d *daemon) delNamespace(id string) error {
	if id == "" {
		return fmt.Errorf("ns del: the default namespace cannot be deleted: %w", flow.ErrInvalidValue)
	}
	if err := d.layer.DelNamespace(id); err != nil {
		return fmt.Errorf("ns del: %w", err)
	}
	d.mu.Lock()
	fib, ok := d.nsNetns[id]
	delete(d.nsNetns, id)
	d.mu.Unlock()
	if ok {
		d.netnsUnref(fib)
	}
	d.log.Info("namespace deleted", "id", id)
	return nil
}

// netnsRef opens (or references again) the named netns and its view. ""
// is the netns of the daemon's interface.
func (d *daemon) netnsRef(name string) (*netnsRef, error) {
	if name == "" {
		d.mu.Lock()
		defer d.mu.Unlock()
		r := d.netnss[d.ns.FIB()]
		r.refs++
		return r, nil
	}
	ns, err := nsbind.OpenNamed(name)
	if err != nil {
		return nil, fmt.Errorf("netns %q: %w: %w", name, flow.ErrInvalidValue, err)
	}
	d.mu.Lock()
	if r := d.netnss[ns.FIB()]; r != nil {
		r.refs++
		d.mu.Unlock()
		ns.Close()
		return r, nil
	}
	d.mu.Unlock()
	view, err := nsbind.NewView(ns, nsbind.ViewOptions{})
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("watch netns %q: %w", name, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if r := d.netnss[ns.FIB()]; r != nil { // added meanwhile
		r.refs++
		view.Close()
		ns.Close()
		return r, nil
	}
	if err := d.views.Add(view); err != nil {
		view.Close()
		ns.Close()
		return nil, fmt.Errorf("watch netns %q: %w", name, err)
	}
	r := &netnsRef{name: name, ns: ns, view: view, refs: 1}
	d.netnss[ns.FIB()] = r
	return r, nil
}

func (d *daemon) netnsUnref(fib flow.FIBID) {
	d.mu.Lock()
	r := d.netnss[fib]
	if r == nil {
		d.mu.Unlock()
		return
	}
	r.refs--
	if r.refs > 0 {
		d.mu.Unlock()
		return
	}
	delete(d.netnss, fib)
	d.views.Remove(fib)
	d.mu.Unlock()
	r.view.Close()
	r.ns.Close()
}

// ruleFromAPI checks every enum of a rule from the control socket.
func ruleFromAPI(r api.Rule) (sessions.Rule, error) {
	if err := validTransport(r.Transport); err != nil {
		return sessions.Rule{}, err
	}
	if err := validScope(r.Scope); err != nil {
		return sessions.Rule{}, err
	}
	var action sessions.RuleAction
	switch r.Action {
	case api.ActionDrop:
		action = sessions.RuleDrop
	case api.ActionAllow:
		action = sessions.RuleAllow
	case api.ActionForward:
		action = sessions.RuleForward
	default:
		return sessions.Rule{}, fmt.Errorf("action %d: %w", uint8(r.Action), flow.ErrInvalidValue)
	}
	out := sessions.Rule{
		Transport: r.Transport, Local: r.Local, LocalPort: r.LocalPort, Remote: r.Remote, RemotePort: r.RemotePort,
		Action: action, Scope: r.Scope, Namespace: r.Namespace, Tag: r.Tag,
	}
	if action == sessions.RuleForward {
		out.App = sessions.AppID(r.AppIndex)
	}
	return out, nil
}

// parseScope reads global, local or both.
func parseScope(s string) (flow.Scope, error) {
	switch s {
	case "", "global":
		return flow.ScopeGlobal, nil
	case "local":
		return flow.ScopeLocal, nil
	case "both":
		return flow.ScopeGlobal | flow.ScopeLocal, nil
	}
	return 0, fmt.Errorf("scope %q: want global, local or both: %w", s, flow.ErrInvalidValue)
}

func parseTransport(s string) (flow.Transport, error) {
	switch s {
	case "udp":
		return flow.TransportUDP, nil
	case "tcp":
		return flow.TransportTCP, nil
	}
	return 0, fmt.Errorf("proto %q: want udp or tcp: %w", s, flow.ErrInvalidValue)
}

func parseAction(s string) (api.RuleAction, error) {
	switch s {
	case "drop":
		return api.ActionDrop, nil
	case "allow":
		return api.ActionAllow, nil
	case "forward":
		return api.ActionForward, nil
	}
	return 0, fmt.Errorf("action %q: want drop, allow or forward: %w", s, flow.ErrInvalidValue)
}

func parsePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("prefix %q: %w", s, flow.ErrInvalidValue)
	}
	return p.Masked(), nil
}

// apiRule turns a configured rule into the control protocol's form;
// appIndex resolves the app a forward rule names.
func (rc RuleConfig) apiRule(appIndex func(name string) (uint32, bool)) (api.Rule, error) {
	var r api.Rule
	var err error
	if r.Transport, err = parseTransport(rc.Proto); err != nil {
		return r, err
	}
	if r.Local, err = parsePrefix(rc.Local); err != nil {
		return r, err
	}
	if r.Remote, err = parsePrefix(rc.Remote); err != nil {
		return r, err
	}
	if r.Action, err = parseAction(rc.Action); err != nil {
		return r, err
	}
	if r.Scope, err = parseScope(rc.Scope); err != nil {
		return r, err
	}
	r.LocalPort, r.RemotePort, r.Tag, r.Namespace = rc.LocalPort, rc.RemotePort, rc.Tag, rc.Namespace
	if r.Action == api.ActionForward {
		idx, ok := appIndex(rc.App)
		if !ok {
			return r, fmt.Errorf("forward to app %q: %w", rc.App, flow.ErrNotAttached)
		}
		r.AppIndex = idx
	}
	return r, nil
}

// appIndexByName finds an attached app by name.
func (d *daemon) appIndexByName(name string) (uint32, bool) {
	for _, a := range d.layer.Apps() {
		if a.Name == name {
			return uint32(a.ID), true
		}
	}
	return 0, false
}

// applyConfig makes the namespaces and rules of the config file the ones
// the daemon has from it: namespaces it added before and that are gone are
// deleted (when no app uses them), new ones added, changed ones replaced
// (when no app uses them); the rules it added before are replaced by the
// new set in one step. Forward rules to apps not attached are skipped with
// a warning. Namespaces and rules added with ctl are left alone.
func (d *daemon) applyConfig(nss []NamespaceConfig, rules []RuleConfig) error {
	d.mu.Lock()
	prevNs := slices.Clone(d.cfgNs)
	prevRules := slices.Clone(d.cfgRules)
	d.mu.Unlock()
	cur := map[string]sessions.NamespaceInfo{}
	for _, n := range d.layer.Namespaces() {
		cur[n.ID] = n
	}
	want := map[string]NamespaceConfig{}
	for _, n := range nss {
		want[n.ID] = n
	}
	var errs []error
	var keep []string
	for _, id := range prevNs {
		if _, ok := want[id]; !ok {
			if err := d.delNamespace(id); err != nil {
				errs = append(errs, err)
				keep = append(keep, id)
			}
		}
	}
	for _, n := range nss {
		if old, ok := cur[n.ID]; ok {
			if !slices.Contains(prevNs, n.ID) {
				keep = append(keep, n.ID) // added with ctl: taken over as is
				continue
			}
			ifc, err := d.lookupIface(n.Netns, n.Iface)
			if err == nil && ifc == old.IfIndex && !d.secretChanged(n) {
				keep = append(keep, n.ID)
				continue
			}
			if err := d.delNamespace(n.ID); err != nil {
				errs = append(errs, fmt.Errorf("namespace %q changed but cannot be replaced: %w", n.ID, err))
				keep = append(keep, n.ID)
				continue
			}
		}
		if err := d.addNamespace(n.ID, n.Secret, n.Iface, n.Netns); err != nil {
			errs = append(errs, err)
			continue
		}
		keep = append(keep, n.ID)
	}
	var add []sessions.Rule
	for i, rc := range rules {
		ar, err := rc.apiRule(d.appIndexByName)
		if err != nil {
			if errors.Is(err, flow.ErrNotAttached) {
				d.log.Warn("config rule skipped", "rule", i, "err", err)
				continue
			}
			errs = append(errs, fmt.Errorf("rules[%d]: %w", i, err))
			continue
		}
		r, err := ruleFromAPI(ar)
		if err != nil {
			errs = append(errs, fmt.Errorf("rules[%d]: %w", i, err))
			continue
		}
		add = append(add, r)
	}
	for _, id := range prevRules {
		_ = d.layer.DelRule(id) // may be gone already (ctl rule del, app detached)
	}
	ids, err := d.layer.AddRules(add)
	if err != nil {
		errs = append(errs, fmt.Errorf("rules: %w", err))
	}
	d.mu.Lock()
	d.cfgNs = keep
	d.cfgRules = ids
	d.mu.Unlock()
	return errors.Join(errs...)
}

// secrets of configured namespaces, to tell a changed secret on reload.
func (d *daemon) secretChanged(n NamespaceConfig) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, o := range d.opts.Namespaces {
		if o.ID == n.ID {
			return o.Secret != n.Secret
		}
	}
	return true
}

func (d *daemon) lookupIface(netnsName, iface string) (int, error) {
	r, err := d.netnsRef(netnsName)
	if err != nil {
		return 0, err
	}
	defer d.netnsUnref(r.ns.FIB())
	ifc, err := r.ns.InterfaceByName(iface)
	if err != nil {
		return 0, err
	}
	return ifc.Index, nil
}

// reload re-reads the config file's namespaces and rules (SIGHUP).
func (d *daemon) reload(c *Config) error {
	err := d.applyConfig(c.Namespaces, c.Rules)
	d.mu.Lock()
	d.opts.Namespaces, d.opts.Rules = c.Namespaces, c.Rules
	d.mu.Unlock()
	return err
}

package daemon

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/testhook"
	"github.com/xsessiond/xsessiond/nsbind"
	"github.com/xsessiond/xsessiond/sessions"
)

// AddNamespace adds an app namespace on interface iface of the named
// netns ("" is the netns of the daemon's interface). The daemon follows
// that netns's addresses for as long as a namespace lives in it. The id
// must have the form sessions.ValidNamespaceID allows.
func (d *Daemon) AddNamespace(id string, secret uint64, iface, netnsName string) error {
	if id == "" {
		return fmt.Errorf("ns add: empty id (the default namespace is built in): %w", flow.ErrInvalidValue)
	}
	return d.addNamespace("ns add", fmt.Sprintf("ns add %q", id), id, secret, iface, netnsName)
}

// addNamespace is AddNamespace for a request of origin: its errors begin
// with origin ("ns add", "config file") when they name the namespace
// themselves, with name ("ns add \"blue\"") otherwise.
func (d *Daemon) addNamespace(origin, name, id string, secret uint64, iface, netnsName string) error {
	if err := sessions.ValidNamespaceID(id); err != nil {
		return fmt.Errorf("%s: %w", origin, err)
	}
	if id == DefaultNamespace {
		return fmt.Errorf("%s: the name of the built-in default namespace: %w", name, flow.ErrInvalidValue)
	}
	if iface == "" {
		return fmt.Errorf("%s: no interface: %w", name, flow.ErrInvalidValue)
	}
	r, err := d.netnsRef(netnsName)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	fib := r.ns.FIB()
	ifc, err := r.ns.InterfaceByName(iface)
	if err != nil {
		d.netnsUnref(fib)
		where := "the daemon's netns"
		if r.name != "" {
			where = fmt.Sprintf("netns %q", r.name)
		}
		return fmt.Errorf("%s: interface %q does not exist in %s: %w", name, iface, where, flow.ErrInvalidValue)
	}
	if !d.cfg.NoDatapath && fib != d.ns.FIB() {
		d.netnsUnref(fib)
		return fmt.Errorf("%s: interface %q of netns %q is not in the FIB this daemon serves (the netns of %s, %q): "+
			"its sessions could never reach the wire; run a daemon on that interface instead: %w",
			name, iface, r.name, d.cfg.Datapath.IfName, d.cfg.Datapath.NetnsName, flow.ErrInvalidValue)
	}
	// The layer's add and the netns reference it holds go together: a
	// delete of the id between them would find no reference to drop, and
	// the netns's view would be held for good.
	d.nsOps.Lock()
	if err := d.layer.AddNamespace(sessions.NamespaceConfig{ID: id, Secret: secret, IfIndex: ifc.Index, FIB4: fib, FIB6: fib}); err != nil {
		d.nsOps.Unlock()
		d.netnsUnref(fib)
		return fmt.Errorf("%s: %w", origin, err)
	}
	if p := testhook.NamespaceAddPause.Load(); p > 0 {
		time.Sleep(time.Duration(p))
	}
	d.mu.Lock()
	d.nsNetns[id] = fib
	d.mu.Unlock()
	d.nsOps.Unlock()
	d.log.Info("namespace added", "id", id, "iface", iface, "netns", netnsName, "ifindex", ifc.Index)
	return nil
}

// DelNamespace removes an app namespace that has no apps attached.
func (d *Daemon) DelNamespace(id string) error {
	if id == "" || id == DefaultNamespace {
		return fmt.Errorf("ns del: the default namespace is built in and cannot be deleted: %w", flow.ErrInvalidValue)
	}
	d.nsOps.Lock()
	if err := d.layer.DelNamespace(id); err != nil {
		d.nsOps.Unlock()
		return fmt.Errorf("ns del: %w", err)
	}
	d.mu.Lock()
	fib, ok := d.nsNetns[id]
	delete(d.nsNetns, id)
	delete(d.nsAccess, id)
	d.mu.Unlock()
	d.nsOps.Unlock()
	if ok {
		d.netnsUnref(fib)
	}
	d.log.Info("namespace deleted", "id", id)
	return nil
}

// SetNamespaceSecret replaces the secret of namespace id: later attaches
// need the new one, apps attached keep working.
func (d *Daemon) SetNamespaceSecret(id string, secret uint64) error {
	if id == "" || id == DefaultNamespace {
		return fmt.Errorf("ns set-secret: the default namespace has no secret, apps attach to it without one: %w", flow.ErrInvalidValue)
	}
	if err := d.layer.SetNamespaceSecret(id, secret); err != nil {
		return fmt.Errorf("ns set-secret: %w", err)
	}
	d.log.Info("namespace secret changed", "id", id)
	return nil
}

// netnsRef opens (or references again) the named netns and its view. ""
// is the netns of the daemon's interface.
func (d *Daemon) netnsRef(name string) (*netnsRef, error) {
	if name == "" {
		d.mu.Lock()
		defer d.mu.Unlock()
		r := d.netnss[d.ns.FIB()]
		r.refs++
		return r, nil
	}
	ns, err := nsbind.OpenNamed(name)
	if err != nil {
		return nil, fmt.Errorf("netns %q: %w; ip netns list names the ones there are (%w)", name, err, flow.ErrInvalidValue)
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

func (d *Daemon) netnsUnref(fib flow.FIBID) {
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
		Action: action, Scope: r.Scope, Namespace: NamespaceID(r.Namespace), Tag: r.Tag,
	}
	if action == sessions.RuleForward {
		out.App = sessions.AppID(r.AppIndex)
	}
	return out, nil
}

// appIndexByName finds an attached app by name among the apps of app
// namespace ns (its layer id: "" for the default one). An app chooses its
// name: one of another namespace that took the name must neither get a
// forward rule meant for an app of ns nor have the layer refuse the
// file's whole set of rules for it.
func (d *Daemon) appIndexByName(name, ns string) (uint32, bool) {
	for _, a := range d.layer.Apps() {
		if a.Name == name && a.Namespace == ns {
			return uint32(a.ID), true
		}
	}
	return 0, false
}

// applyConfig makes the namespaces and rules of the config file the ones
// the daemon has from it: namespaces it added before and that are gone are
// deleted (when no app uses them), new ones added, changed ones replaced
// (when no app uses them); the rules it added before are replaced by the
// new set in one step (applyConfigRules). Namespaces and rules added with
// ctl are left alone, unless the file lists a namespace of the same id:
// then it is the file's, with the file's secret and interface. d.cfgApply
// is held.
func (d *Daemon) applyConfig(nss []NamespaceConfig, rules []RuleConfig) error {
	d.mu.Lock()
	prevNs := slices.Clone(d.cfgNs)
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
			if err := d.DelNamespace(id); err != nil {
				errs = append(errs, fmt.Errorf("config file: namespace %q is no longer listed but cannot be deleted: %w", id, err))
				keep = append(keep, id)
			}
		}
	}
	for _, n := range nss {
		if old, ok := cur[n.ID]; ok {
			// One of the file's before, or one added with ctl that the
			// file lists now: the file's secret and interface apply.
			ifc, err := d.lookupIface(n.Netns, n.Iface)
			if err != nil && !errors.Is(err, nsbind.ErrNoInterface) && !errors.Is(err, nsbind.ErrNoNamespace) {
				// Not known to have changed (a netlink timeout, say):
				// kept as it is, rather than deleted under its apps'
				// feet for an error of the lookup.
				errs = append(errs, fmt.Errorf("config file: namespace %q kept as it was: its interface could not be looked up: %w", n.ID, err))
				keep = append(keep, n.ID)
				continue
			}
			if err == nil && ifc == old.IfIndex {
				if d.secretChanged(n) {
					// Rotated in place: attached apps keep working.
					if err := d.SetNamespaceSecret(n.ID, n.Secret); err != nil {
						errs = append(errs, fmt.Errorf("config file: namespace %q: %w", n.ID, err))
					}
				}
				keep = append(keep, n.ID)
				continue
			}
			if err := d.DelNamespace(n.ID); err != nil {
				errs = append(errs, fmt.Errorf("config file: namespace %q changed but cannot be replaced: %w", n.ID, err))
				keep = append(keep, n.ID)
				continue
			}
		}
		// Its allow-list first: an attach between the namespace's add
		// and the list's would be let in by no list at all.
		if acl := n.access(); !acl.Empty() {
			d.mu.Lock()
			d.nsAccess[n.ID] = acl
			d.mu.Unlock()
		}
		if err := d.addNamespace("config file", fmt.Sprintf("config file: namespace %q", n.ID), n.ID, n.Secret, n.Iface, n.Netns); err != nil {
			errs = append(errs, err)
			d.mu.Lock()
			delete(d.nsAccess, n.ID)
			d.mu.Unlock()
			continue
		}
		keep = append(keep, n.ID)
	}
	d.mu.Lock()
	for _, id := range prevNs {
		delete(d.nsAccess, id)
	}
	for _, n := range nss {
		if acl := n.access(); !acl.Empty() && slices.Contains(keep, n.ID) {
			d.nsAccess[n.ID] = acl
		}
	}
	d.cfgNs = keep
	d.mu.Unlock()
	return errors.Join(append(errs, d.applyConfigRules(rules, true)...)...)
}

// applyConfigRules makes rules, the config file's, the rules in force
// from it: those it added before are replaced in one step, and a set the
// layer refuses leaves them. A forward rule names its app by name: one
// to an app not attached is skipped (with a warning when warn) and added
// when an app of that name attaches (configForwardsTo). d.cfgApply is
// held.
func (d *Daemon) applyConfigRules(rules []RuleConfig, warn bool) []error {
	var errs []error
	var add []sessions.Rule
	for i, rc := range rules {
		ar, err := rc.apiRule(func(name string) (uint32, bool) { return d.appIndexByName(name, NamespaceID(rc.Namespace)) })
		if err != nil {
			if errors.Is(err, flow.ErrNotAttached) {
				if warn {
					d.log.Warn("config rule skipped until its app attaches", "rule", i, "err", err)
				}
				continue
			}
			errs = append(errs, fmt.Errorf("config file: rules[%d]: %w", i, err))
			continue
		}
		r, err := ruleFromAPI(ar)
		if err != nil {
			errs = append(errs, fmt.Errorf("config file: rules[%d]: %w", i, err))
			continue
		}
		add = append(add, r)
	}
	// In one step: the rules of the file before (those still there: ctl
	// rule del or an app's detach may have taken some) go as the new
	// ones come, those unchanged keeping their IDs and hits; a new set
	// the layer refuses leaves the old one in force.
	d.mu.Lock()
	prev := slices.Clone(d.cfgRules)
	d.mu.Unlock()
	ids, err := d.layer.ReplaceRules(prev, add)
	if err != nil {
		return append(errs, fmt.Errorf("config file: rules: %w; the rules the file gave before stay", err))
	}
	d.mu.Lock()
	d.cfgRules = ids
	d.mu.Unlock()
	return errs
}

// configForwardsTo says whether a forward rule of the config file names
// the app name.
func (d *Daemon) configForwardsTo(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.ContainsFunc(d.cfg.Rules, func(rc RuleConfig) bool { return rc.App == name && rc.Action == "forward" })
}

// applyForwardsTo adds the config file's forward rules to the app name,
// which just attached, with the file's other rules (applyConfigRules).
func (d *Daemon) applyForwardsTo(name string) {
	if !d.configForwardsTo(name) {
		return
	}
	d.cfgApply.Lock()
	defer d.cfgApply.Unlock()
	d.mu.Lock()
	rules := d.cfg.Rules
	d.mu.Unlock()
	if errs := d.applyConfigRules(rules, false); len(errs) > 0 {
		d.log.Warn("config file's forward rules to an app that attached", "name", name, "err", errors.Join(errs...))
		return
	}
	d.log.Info("config file's forward rules to an app that attached added", "name", name)
}

// secrets of configured namespaces, to tell a changed secret on reload.
func (d *Daemon) secretChanged(n NamespaceConfig) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, o := range d.cfg.Namespaces {
		if o.ID == n.ID {
			return o.Secret != n.Secret
		}
	}
	return true
}

func (d *Daemon) lookupIface(netnsName, iface string) (int, error) {
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

// Reload makes nss and rules the namespaces and rules of the config file
// (run calls it on SIGHUP), as applyConfig describes.
func (d *Daemon) Reload(nss []NamespaceConfig, rules []RuleConfig) error {
	d.cfgApply.Lock()
	defer d.cfgApply.Unlock()
	err := d.applyConfig(nss, rules)
	d.mu.Lock()
	d.cfg.Namespaces, d.cfg.Rules = nss, rules
	d.mu.Unlock()
	return err
}

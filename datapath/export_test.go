package datapath

import "github.com/xsessiond/xsessiond/loader"

// ListenerEntries returns the entries of e's bpf listener map.
func ListenerEntries(e *Engine) ([]loader.ListenerEntry, error) { return e.objs.Listeners.Entries() }

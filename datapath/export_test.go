package datapath

import (
	"github.com/xsessiond/xsessiond/datapath/xsk"
	"github.com/xsessiond/xsessiond/loader"
)

// ListenerEntries returns the entries of e's bpf listener map.
func ListenerEntries(e *Engine) ([]loader.ListenerEntry, error) { return e.objs.Listeners.Entries() }

// SocketFDs returns the file descriptors of e's AF_XDP sockets, by queue.
func SocketFDs(e *Engine) []int {
	fds := make([]int, len(e.work))
	for i, w := range e.work {
		fds[i] = w.sock.FD()
	}
	return fds
}

// SocketOptions returns the options e's first AF_XDP socket was opened with.
func SocketOptions(e *Engine) xsk.Options { return e.work[0].sock.Options() }

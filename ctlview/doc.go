// Package ctlview owns the text forms of the daemon's show documents for
// people: the tables of `ctl show`, the `ctl top` screen, and the capture
// stream as pcapng (the conversion itself is daemon.CaptureToPcapng, which
// ctl capture runs in its own process). It also reads a session rule
// written as words (ctl rule add|del) into an api.Rule. It renders and
// reads text only; the calls to the daemon stay with the caller.
package ctlview

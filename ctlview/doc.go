// Package ctlview owns the text forms of the daemon's show documents for
// people: the tables of `ctl show` and the `ctl top` screen. It also reads a
// session rule written as words (ctl rule add|del) into an api.Rule. The
// pcapng of `ctl capture` is not made here: the conversion is
// daemon.CaptureToPcapng, which ctl capture runs in its own process. It
// renders and reads text only; the calls to the daemon stay with the caller.
package ctlview

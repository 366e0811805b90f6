// Command xsessiond is the xsessiond daemon's command line: run starts the
// daemon (package daemon) on one interface from flags and a YAML config
// file, ctl talks to a running one over its control socket, demo runs the
// quickstart (a netns rig, the daemon in-process, an echo app, and kernel
// UDP and TCP clients), cleanup removes what a killed daemon left on an
// interface (its XDP program and pins), version prints the build's
// version. Everything the daemon does lives in package daemon and the text
// forms of its documents in package ctlview; this command only reads what
// to run.
package main

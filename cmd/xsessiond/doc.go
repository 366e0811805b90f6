// Command xsessiond is the xsessiond daemon and its command line: run starts
// the daemon, ctl talks to a running one, demo runs the quickstart.
package main

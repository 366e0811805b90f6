// Package api is the control protocol between xsessiond and its apps: a
// versioned binary protocol over a unix SOCK_SEQPACKET socket, with file
// descriptors (segments, event queue eventfds) passed by SCM_RIGHTS.
package api

// Package sessions is xsessiond's session layer: apps attached to namespaces,
// endpoints and URIs, listener and session tables in local and global scope,
// session rules, bind/unbind/connect/disconnect, cut-through sessions, proxy
// apps, handles and errors.
//
// It is pure logic and makes no system calls; the kernel view it needs
// (addresses of interfaces, which addresses are local) is given to it through
// interfaces that package nsbind satisfies.
package sessions

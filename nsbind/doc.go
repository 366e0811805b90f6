// Package nsbind is xsessiond's view of Linux network namespaces and
// interfaces through netlink: which addresses an interface has, which FIB a
// namespace maps to, neighbours and routes, and a subscription to their
// changes.
//
// The test rig (two or more hosts as network namespaces joined by veth) lives
// in the subpackage nstest.
package nsbind

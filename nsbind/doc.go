// Package nsbind is xsessiond's view of Linux network namespaces and
// interfaces through netlink: which addresses an interface has, which FIB a
// namespace maps to, neighbours and routes, and a subscription to their
// changes.
//
// # Namespaces
//
// A Namespace is an open network namespace, found by name (/run/netns/NAME,
// OpenNamed), by path (/proc/PID/ns/net or any nsfs file, OpenPath,
// OpenPID) or as the caller's own (OpenCurrent). It holds a descriptor on
// the namespace and an rtnetlink handle inside it, and answers direct
// questions: Interfaces, InterfaceByName/Index (addresses, MAC, MTU,
// up/running, rx/tx queue counts, link kind), RouteGet, Neighbour,
// ResolveNeighbour, WaitNeighbour. Close releases it; its methods are safe
// for concurrent use.
//
// # FIB ids
//
// A namespace's FIBID is the inode number of its nsfs file (ls -iL
// /proc/PID/ns/net, the N of "net:[N]"). It is the same however the
// namespace was opened, differs between live namespaces, is never zero,
// and may be reused after a namespace is destroyed. IPv4 and IPv6 of one
// namespace share the id; the address says which family is meant.
//
// # Views
//
// A View follows one namespace's interfaces and addresses through
// rtnetlink subscriptions and keeps them as an immutable Snapshot behind an
// atomic pointer, so HasAddress and IsLocal (the session layer's NetView)
// are cheap, allocation-free and safe from any goroutine. Changes go out as
// Events to Subscribe channels; WaitFor waits until a snapshot satisfies a
// condition. On a subscription failure (ENOBUFS after an overflow, any
// receive error) the view resubscribes, re-reads the namespace and reports
// the differences. Views gathers Views of several namespaces into one
// NetView. A View must be closed; Close waits for its goroutines.
//
// Only usable addresses count: IPv6 addresses still in duplicate address
// detection (the kernel announces them only once it completes) and
// addresses whose detection failed are left out. Loopback addresses
// (127.0.0.0/8, ::1) are always local to the namespace's FIB.
//
// # Neighbours
//
// Neighbour reads the kernel's neighbour table and only reports entries
// whose link-layer address may be used (reachable, stale, delay, probe,
// permanent, noarp: the kernel's valid states). ResolveNeighbour starts
// resolution without waiting (see its doc for how, per family);
// WaitNeighbour follows the table until the entry is usable or fails.
//
// Errors are the sentinels ErrNoNamespace, ErrNoInterface, ErrNoRoute,
// ErrNoNeighbour, ErrInvalidAddress and ErrClosed, wrapped with what was
// being done.
//
// The test rig (two or more hosts as network namespaces joined by veth)
// lives in the subpackage nstest.
package nsbind

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/loader"
	"github.com/xsessiond/xsessiond/nsbind"
)

func newCleanupCmd() *cobra.Command {
	var iface, netns string
	var stale bool
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove the XDP program and pins a killed daemon left on an interface",
		Long: `Remove what a daemon that did not stop cleanly (SIGKILL, a crash) left on an
interface: its pinned bpf link (which keeps the XDP program attached), the
pinned maps under /sys/fs/bpf/xsessiond/NETNS/IFACE, and its instance lock;
on a veth in generic mode, the peer's tx-udp-segmentation it had turned off
is turned back on. A program that is not xsessiond's is left alone. It refuses to run while a
daemon serves the interface.

--stale instead removes the pins of every interface that no longer exists:
in a network namespace that was deleted, or gone from one that still is.
Such pins keep a killed daemon's program and maps in the kernel. It also
removes the instance lock files under /run/xsessiond that no daemon holds
(a killed daemon leaves its own).`,
		Args: noArgs("give the interface with --iface IF"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case stale && (iface != "" || netns != ""):
				return errors.New("--stale looks at every interface: give it alone, or --iface without it")
			case stale:
				return sweepStale(cmd)
			case iface == "":
				return errors.New("no interface: give --iface, or --stale for the pins of interfaces that are gone")
			}
			return cleanup(cmd, iface, netns)
		},
	}
	cmd.Flags().StringVar(&iface, "iface", "", "the interface to clean up")
	cmd.Flags().StringVar(&netns, "netns", "", "the named network namespace the interface lives in (default: this one)")
	cmd.Flags().BoolVar(&stale, "stale", false, "remove the pins of every interface or network namespace that no longer exists, and the lock files no daemon holds")
	return cmd
}

func sweepStale(cmd *cobra.Command) error {
	rep, err := loader.SweepStale("")
	out := cmd.OutOrStdout()
	for _, d := range rep.Dirs {
		fmt.Fprintf(out, "removed %s\n", d)
	}
	switch {
	case len(rep.Dirs) > 0:
		fmt.Fprintf(out, "%d pin folder(s) of interfaces that are gone: %d link(s) unpinned, %d map pin(s) removed\n", len(rep.Dirs), rep.Links, rep.MapPins)
	case err == nil:
		fmt.Fprintf(out, "nothing stale under %s (%d interface pin folder(s) looked at)\n", loader.DefaultPinRoot, rep.Examined)
	}
	// A sweep that could not look at every folder says so instead of
	// "nothing stale": it does not know.
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("cannot look at the pins under %s, so some may be stale: %w: run it as root (sudo xsessiond cleanup --stale)", loader.DefaultPinRoot, fs.ErrPermission)
	}
	// The lock files of killed daemons: one per interface each served.
	locks, lerr := daemon.SweepStaleLocks("")
	for _, l := range locks {
		fmt.Fprintf(out, "removed %s\n", l)
	}
	if len(locks) > 0 {
		fmt.Fprintf(out, "%d lock file(s) no daemon held\n", len(locks))
	}
	if errors.Is(lerr, fs.ErrPermission) {
		lerr = fmt.Errorf("cannot take the lock files under %s, so some may be stale: %w: run it as root (sudo xsessiond cleanup --stale)", daemon.DefaultRunDir, fs.ErrPermission)
	}
	return errors.Join(err, lerr)
}

// missingInterface is cleanup's error for an interface that is not in
// netns ("": this one): where to look for it, and the named namespaces
// that have an interface of that name.
func missingInterface(iface, netns string) error {
	if netns != "" {
		return fmt.Errorf("interface %q does not exist in netns %q: ip -n %s link lists the interfaces there (cleanup --stale removes the pins of interfaces that are gone)", iface, netns, netns)
	}
	hint := "one in a named netns needs --netns NAME (ip netns list)"
	if in := namedNetnsWith(iface); len(in) > 0 {
		hint = fmt.Sprintf("netns %s has one: give --netns %s", strings.Join(in, ", "), in[0])
	}
	return fmt.Errorf("interface %q does not exist in this netns: %s (cleanup --stale removes the pins of interfaces that are gone)", iface, hint)
}

// namedNetnsWith lists the named network namespaces that have an
// interface called iface.
func namedNetnsWith(iface string) []string {
	ents, err := os.ReadDir(nsbind.NamedDir)
	if err != nil {
		return nil
	}
	var in []string
	for _, e := range ents {
		ns, err := nsbind.OpenNamed(e.Name())
		if err != nil {
			continue
		}
		if _, err := ns.InterfaceByName(iface); err == nil {
			in = append(in, e.Name())
		}
		ns.Close()
	}
	return in
}

func cleanup(cmd *cobra.Command, iface, netns string) error {
	if err := checkNetns(netns); err != nil {
		return fmt.Errorf("%w (cleanup --stale removes the pins of namespaces that are gone)", err)
	}
	var ns *nsbind.Namespace
	var err error
	nsPath := ""
	if netns != "" {
		ns, err = nsbind.OpenNamed(netns)
		nsPath = filepath.Join("/run/netns", netns)
	} else {
		ns, err = nsbind.OpenCurrent()
	}
	if err != nil {
		return fmt.Errorf("netns %q: %w (cleanup --stale removes the pins of namespaces that are gone)", netns, err)
	}
	defer ns.Close()
	ifc, err := ns.InterfaceByName(iface)
	if err != nil {
		return missingInterface(iface, netns)
	}
	unlock, err := daemon.LockInstance(daemon.LockPath("", ns.Inode(), ifc.Index))
	if errors.Is(err, daemon.ErrInstanceRunning) {
		return fmt.Errorf("interface %s: %w: stop it instead (it cleans up as it stops)", iface, err)
	}
	if err != nil {
		return err
	}
	defer unlock()
	rep, err := loader.Cleanup(loader.AttachOptions{Interface: ifc.Name, Netns: nsPath, NetnsName: netns})
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	// A daemon in generic mode on a veth turns the peer's UDP
	// segmentation offload off while it runs; killed, it left it off.
	restored, rerr := ns.RestorePeerUDPSegmentation(ifc.Index)
	if rerr != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "%s: the veth peer's tx-udp-segmentation, which the killed daemon turned off, was not turned back on: %v (ethtool -K PEER tx-udp-segmentation on in the peer's namespace)\n", iface, rerr)
	}
	if restored {
		fmt.Fprintf(out, "%s: turned the veth peer's tx-udp-segmentation back on\n", iface)
	}
	switch {
	case !rep.LinkPinned && rep.MapPins == 0 && !rep.Detached:
		if !restored {
			fmt.Fprintf(out, "%s: nothing to clean up\n", iface)
		}
	default:
		fmt.Fprintf(out, "%s: removed", iface)
		if rep.LinkPinned {
			fmt.Fprint(out, " the pinned link (program detached),")
		}
		if rep.Detached {
			fmt.Fprint(out, " an attached xsessiond program,")
		}
		fmt.Fprintf(out, " %d map pin(s) under %s\n", rep.MapPins, rep.PinDir)
	}
	return nil
}

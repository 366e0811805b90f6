package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

func newDemoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Build a two-host netns rig and run xsessiond against the kernel",
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			p, err := nstest.NewPairNoTest(nstest.Options{})
			if err != nil {
				return fmt.Errorf("build rig (needs root: go run -exec sudo ./cmd/xsessiond demo): %w", err)
			}
			defer p.Close()
			fmt.Fprintf(out, "rig: host A %s (%s, %s) <-> host B %s (%s, %s)\n",
				p.A.Name, p.A.IPv4, p.A.IPv6, p.B.Name, p.B.IPv4, p.B.IPv6)
			fmt.Fprintln(out, "the datapath is not built yet: nothing was sent; rig removed")
			return fmt.Errorf("demo incomplete: no datapath")
		},
	}
}

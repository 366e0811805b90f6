package main

import "testing"

// TestRunIfacePicksFileInterface: with several interfaces in the config
// file, --iface picks the one to serve (docs/cli.md, run), with the file's
// settings for that interface (its netns, queues, cpus, checksum), not the
// first one's.
func TestRunIfacePicksFileInterface(t *testing.T) {
	file := "interfaces:\n" +
		"  - {name: eth1, queues: 2, checksum: verify}\n" +
		"  - {name: eth2, netns: red, queues: 4, checksum: accept-partial}\n"
	dp := mergedConfig(t, file, "eth2").Datapath
	if dp.IfName != "eth2" || dp.NetnsName != "red" || dp.Queues != 4 || dp.Checksum != "accept-partial" {
		t.Errorf("--iface eth2: interface %q in netns %q, %d queues, checksum %q; want eth2 in red, 4 queues, accept-partial (the file's eth2)",
			dp.IfName, dp.NetnsName, dp.Queues, dp.Checksum)
	}
	// An interface the file does not list takes the first one's settings.
	dp = mergedConfig(t, file, "vb").Datapath
	if dp.IfName != "vb" || dp.Queues != 2 || dp.Checksum != "verify" {
		t.Errorf("--iface vb: interface %q, %d queues, checksum %q; want vb with the file's first interface's settings", dp.IfName, dp.Queues, dp.Checksum)
	}
}

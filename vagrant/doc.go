// Package vagrant holds no Go code: its folder carries the Vagrantfile and
// provisioning script of a two-VM rig (generator and device under test on
// virtio-net multi-queue) for running the perf harness on a real NIC driver.
package vagrant

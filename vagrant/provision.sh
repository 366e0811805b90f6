#!/usr/bin/env bash
# Provisions one VM of the two-VM perf rig (generator "gen" or device under
# test "dut"): system packages, Go, the project built from the synced tree,
# and the private NIC's virtio-net queues.
#
# Usage:
#   provision.sh [--role gen|dut] [--src DIR] [--ip ADDR] [--queues N] [--user NAME]
#   provision.sh --check   [--src DIR]   verify tools and versions, change nothing
#   provision.sh --dry-run [...]         print every command instead of running it
#
# Environment: GO_VERSION (default: the go directive of DIR/go.mod),
# GO_SHA256 (checked against the downloaded tarball when set).
set -euo pipefail

role=dut
src=/home/vagrant/xsessiond
ip=""
queues=""
user=vagrant
mode=provision

usage() {
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-2}"
}

while [ $# -gt 0 ]; do
	case "$1" in
	--role) role=${2:?--role needs gen or dut}; shift 2 ;;
	--src) src=${2:?--src needs a directory}; shift 2 ;;
	--ip) ip=${2:?--ip needs an address}; shift 2 ;;
	--queues) queues=${2:?--queues needs a number}; shift 2 ;;
	--user) user=${2:?--user needs a name}; shift 2 ;;
	--check) mode=check; shift ;;
	--dry-run) mode=dry-run; shift ;;
	-h | --help) usage 0 ;;
	*) echo "provision.sh: unknown argument $1" >&2; usage 2 ;;
	esac
done

case "$role" in
gen | dut) ;;
*) echo "provision.sh: --role must be gen or dut, not $role" >&2; exit 2 ;;
esac
if [ -n "$queues" ] && ! [[ "$queues" =~ ^[1-9][0-9]*$ ]]; then
	echo "provision.sh: --queues must be a positive number" >&2
	exit 2
fi

export PATH="$PATH:/usr/local/go/bin"

# run executes a command, or prints it under --dry-run.
run() {
	if [ "$mode" = dry-run ]; then
		printf '+ %s\n' "$*"
	else
		"$@"
	fi
}

step() { printf '\n== %s\n' "$*"; }

# version_ge A B: A >= B in version order.
version_ge() {
	[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

# go_required prints the go directive of the project's go.mod.
go_required() {
	if [ -r "$src/go.mod" ]; then
		awk '$1 == "go" { print $2; exit }' "$src/go.mod"
	else
		echo 1.26.0
	fi
}

# go_have prints the installed Go version, or nothing.
go_have() {
	command -v go >/dev/null 2>&1 || return 0
	go env GOVERSION 2>/dev/null | sed 's/^go//'
}

packages=(clang llvm libbpf-dev linux-libc-dev build-essential git ca-certificates curl ethtool iproute2 shellcheck)

check() {
	local bad=0 want have
	want=$(go_required)
	have=$(go_have)
	if [ -n "$have" ] && version_ge "$have" "$want"; then
		echo "go: ok ($have, need $want)"
	else
		echo "go: MISSING (have ${have:-none}, need $want)"
		bad=1
	fi
	for tool in clang llvm-strip; do
		if command -v "$tool" >/dev/null 2>&1; then
			echo "$tool: ok ($("$tool" --version | head -n1))"
		else
			echo "$tool: MISSING"
			bad=1
		fi
	done
	if [ -e /usr/include/bpf/bpf_helpers.h ]; then
		echo "libbpf headers: ok"
	else
		echo "libbpf headers: MISSING (libbpf-dev)"
		bad=1
	fi
	# Needed on the VMs, not to build: reported, not fatal.
	for tool in ethtool shellcheck ip; do
		if command -v "$tool" >/dev/null 2>&1; then
			echo "$tool: ok"
		else
			echo "$tool: not installed (provisioning installs it)"
		fi
	done
	if [ -r "$src/go.mod" ]; then
		echo "project: ok ($src)"
	else
		echo "project: not found at $src (pass --src)"
	fi
	return "$bad"
}

install_packages() {
	step "system packages"
	export DEBIAN_FRONTEND=noninteractive
	run apt-get update -qq
	run apt-get install -y -qq "${packages[@]}"
}

install_go() {
	step "Go"
	local want have arch url tarball
	want=${GO_VERSION:-$(go_required)}
	have=$(go_have)
	if [ -n "$have" ] && version_ge "$have" "$want"; then
		echo "Go $have is installed (need $want)"
		return
	fi
	arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
	url="https://go.dev/dl/go${want}.linux-${arch}.tar.gz"
	tarball=/tmp/go${want}.tar.gz
	run curl -fsSL -o "$tarball" "$url"
	if [ -n "${GO_SHA256:-}" ]; then
		if [ "$mode" = dry-run ]; then
			printf '+ sha256sum -c (%s)\n' "$GO_SHA256"
		else
			echo "$GO_SHA256  $tarball" | sha256sum -c -
		fi
	fi
	run rm -rf /usr/local/go
	run tar -C /usr/local -xzf "$tarball"
	run ln -sf /usr/local/go/bin/go /usr/local/bin/go
	run ln -sf /usr/local/go/bin/gofmt /usr/local/bin/gofmt
}

build_project() {
	step "build the project in $src"
	if [ ! -r "$src/go.mod" ] && [ "$mode" != dry-run ]; then
		echo "provision.sh: no go.mod in $src: is the project synced?" >&2
		exit 1
	fi
	# Build as the login user so the module cache is theirs.
	run sudo -u "$user" -H env PATH="$PATH" sh -c "cd '$src' && go build ./... && go build -o bin/xsessiond ./cmd/xsessiond && go build -o bin/perf ./perf"
}

# nic_for prints the interface that holds address $1.
nic_for() {
	ip -o -4 addr show 2>/dev/null | awk -v a="$1" '{ split($4, p, "/"); if (p[1] == a) { print $2; exit } }'
}

setup_nic() {
	step "private NIC"
	if [ -z "$ip" ]; then
		echo "no --ip given: leaving the NICs alone"
		return
	fi
	local nic want
	nic=$(nic_for "$ip")
	if [ -z "$nic" ]; then
		if [ "$mode" = dry-run ]; then
			nic="<interface with $ip>"
		else
			echo "provision.sh: no interface has $ip" >&2
			exit 1
		fi
	fi
	want=${queues:-$(nproc)}
	# virtio-net comes up with one combined channel in use even when the
	# device offers more: ask for as many as there are vCPUs.
	run ethtool -L "$nic" combined "$want" || echo "ethtool -L $nic combined $want failed: the device offers fewer queues (ethtool -l $nic)"
	run ethtool -l "$nic" || true
	# Room for the kernel-socket baseline's receive buffers.
	run sysctl -q -w net.core.rmem_max=67108864 net.core.wmem_max=67108864 net.core.netdev_max_backlog=10000
	echo "$role: $nic carries $ip"
}

case "$mode" in
check)
	check
	;;
provision | dry-run)
	if [ "$mode" = provision ] && [ "$(id -u)" -ne 0 ]; then
		echo "provision.sh: run as root (vagrant provisions with sudo)" >&2
		exit 1
	fi
	install_packages
	install_go
	build_project
	setup_nic
	step "done"
	check || true
	;;
esac

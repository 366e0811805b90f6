package datapath

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCPUList writes CPU sets as the kernel's lists are written.
func TestCPUList(t *testing.T) {
	for _, c := range []struct {
		cpus []int
		want string
	}{
		{nil, ""},
		{[]int{5}, "5"},
		{[]int{0, 1, 2, 3, 6}, "0-3,6"},
		{[]int{0, 2, 4}, "0,2,4"},
		{[]int{1, 2, 7, 8, 9, 1023}, "1-2,7-9,1023"},
	} {
		var set unix.CPUSet
		for _, n := range c.cpus {
			set.Set(n)
		}
		if got := cpuList(&set); got != c.want {
			t.Errorf("cpuList(%v) = %q, want %q", c.cpus, got, c.want)
		}
	}
}

// TestCheckCPUs: the CPUs this process may run on pass; a negative one,
// one past the largest set and one outside the process's mask fail with
// ErrInvalidConfig and a message that names the CPU and the mask.
func TestCheckCPUs(t *testing.T) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(os.Getpid(), &allowed); err != nil {
		t.Fatal(err)
	}
	var in []int
	out := -1
	for c := 0; c < len(allowed)*64; c++ {
		if allowed.IsSet(c) {
			in = append(in, c)
		} else if out < 0 {
			out = c
		}
	}
	if err := CheckCPUs(nil); err != nil {
		t.Errorf("no CPUs: %v", err)
	}
	if err := CheckCPUs(in); err != nil {
		t.Errorf("the process's CPUs %v: %v", in, err)
	}
	bad := []int{-1, len(allowed) * 64}
	if out >= 0 {
		bad = append(bad, out)
	}
	for _, c := range bad {
		err := CheckCPUs([]int{in[0], c})
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("CPU %d: %v, want ErrInvalidConfig", c, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "CPU "+strconv.Itoa(c)+" ") || !strings.Contains(msg, cpuList(&allowed)) {
			t.Errorf("CPU %d: %q names neither the CPU nor the mask %s", c, msg, cpuList(&allowed))
		}
	}
}

// TestParseCPUList reads the kernel's list form in its order and refuses
// what is no list of distinct CPUs.
func TestParseCPUList(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []int
	}{
		{"3", []int{3}},
		{"2-5,8", []int{2, 3, 4, 5, 8}},
		{"8, 0-1", []int{8, 0, 1}},
		{"1023", []int{1023}},
	} {
		got, err := ParseCPUList(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("ParseCPUList(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "a", "1,", "-1", "3-1", "1-2,2", "1024", "0-1024", "1--2", "2-"} {
		if got, err := ParseCPUList(in); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseCPUList(%q) = %v, %v; want ErrInvalidConfig", in, got, err)
		}
	}
}

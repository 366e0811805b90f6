package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestCaptureHandleForms checks that --listener and --session take a
// handle as show listeners and show sessions print it (hex after 0x), or
// in decimal digits, as --secret takes a number, and refuse the other
// forms of Go's number syntax (010 read as octal 8, 0b1, 0o7, 1_000), a
// handle's hex without its 0x, and 0, naming the flag and the form wanted.
func TestCaptureHandleForms(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock") // no daemon: a handle read gets that far
	for _, flag := range []string{"--listener", "--session"} {
		for _, h := range []string{"010", "0b1", "0o7", "1_000", "0x1_0", "0x0", "0", "-1", "+1", "7ffffffd00000000", "0x", " 0x1"} {
			_, err := ctl(t, sock, "capture", "-w", "-", flag, h)
			if err == nil || !strings.Contains(err.Error(), flag) || !strings.Contains(err.Error(), "in hex after 0x") {
				t.Errorf("capture %s %q: %v, want it refused, naming %s and the form of a handle", flag, h, err, flag)
			}
		}
		for _, h := range []string{"0x7ffffffd00000000", "0X7FFFFFFD00000000", "0x1", "9223372034707292160"} {
			_, err := ctl(t, sock, "capture", "-w", "-", flag, h)
			if err == nil || !strings.Contains(err.Error(), "no daemon at") {
				t.Errorf("capture %s %q: %v, want it read and the missing daemon named", flag, h, err)
			}
		}
	}
}

// TestCaptureDurationRange checks that a --duration capture cannot take
// says what it can.
func TestCaptureDurationRange(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, d := range []string{"-1s", "1200h"} {
		_, err := ctl(t, sock, "capture", "-w", "-", "--duration", d)
		if err == nil || !strings.Contains(err.Error(), "--duration") || !strings.Contains(err.Error(), "want 0 (no limit) or a positive duration of at most 1193h2m47.295s") {
			t.Errorf("capture --duration %s: %v", d, err)
		}
	}
}

// TestCtlValuesOverLimits checks that a value longer than the control
// protocol carries (an interface name of 16 bytes, a tag of 65, …), or
// not UTF-8, is named by its flag or word with its bound, not passed on
// as the protocol encoder's error.
func TestCtlValuesOverLimits(t *testing.T) {
	d := startDaemon(t)
	sock := d.Socket()
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"ns", "add", "blue", "--secret", "1", "--iface", long(16)}, []string{"--iface", "16 bytes", "at most 15"}},
		{[]string{"ns", "add", "blue", "--secret", "1", "--iface", "lo", "--netns", long(256)}, []string{"--netns", "256 bytes", "at most 255"}},
		{[]string{"ns", "del", long(65)}, []string{"ns del", "65 bytes", "no namespace has such an id"}},
		{[]string{"ns", "set-secret", long(65), "--secret", "1"}, []string{"ns set-secret", "65 bytes", "no namespace has such an id"}},
		{[]string{"ns", "del", "b\xffd"}, []string{"ns del", "not allowed", "no namespace has such an id"}},
		{[]string{"rule", "add", "proto", "udp", "action", "drop", "tag", long(65)}, []string{"tag", "65 bytes", "at most 64"}},
		{[]string{"rule", "add", "proto", "udp", "action", "drop", "ns", long(65)}, []string{"ns", "65 bytes", "at most 64"}},
		{[]string{"rule", "del", "tag", long(65)}, []string{"tag", "65 bytes", "at most 64"}},
		{[]string{"rule", "add", "proto", "udp", "action", "drop", "tag", "b\xffd"}, []string{"tag", "not valid UTF-8"}},
		{[]string{"capture", "-w", "-", "--reason", long(65)}, []string{"--reason", "65 bytes", "at most 64", "ctl show stats"}},
	} {
		out, err := ctl(t, sock, c.args...)
		if err == nil {
			t.Errorf("%.60q: no error:\n%s", c.args, out)
			continue
		}
		if strings.Contains(err.Error(), "api:") {
			t.Errorf("%.60q: the protocol's error: %v", c.args, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%.60q: %v: want %q in it", c.args, err, w)
			}
		}
	}
}

// TestDemoFlagsNamed checks that demo names the flag whose value it
// refuses, with that value.
func TestDemoFlagsNamed(t *testing.T) {
	for _, c := range []struct {
		args      []string
		want, not string
	}{
		{[]string{"demo", "--window", "0"}, "--window 0: want 1 or more", "--duration"},
		{[]string{"demo", "--duration", "-1s"}, "--duration -1s: want a positive duration", "--window"},
	} {
		_, err := runRoot(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), c.not) {
			t.Errorf("%q: %v, want %q in it and not %q", c.args, err, c.want, c.not)
		}
	}
}

package api

import (
	"errors"
	"os"
	"strconv"
	"strings"
)

// SecretEnv is the environment variable the CLI and the examples read a
// namespace's secret from when no --secret flag gives one: unlike a
// flag, other users cannot read it in ps(1) or /proc/PID/cmdline.
const SecretEnv = "XSESSIOND_SECRET"

// SecretArg is the secret a --secret flag's value flag gives, or, when it
// is empty, $XSESSIOND_SECRET's, with where it came from for errors.
func SecretArg(flag string) (value, from string) {
	if flag != "" {
		return flag, "--secret"
	}
	return os.Getenv(SecretEnv), "$" + SecretEnv
}

// ParseSecret reads a namespace's secret as a person writes one on a
// command line: 0 to 2^64-1 in decimal digits, or in hex after 0x (42,
// 0x2a). Go's number syntax (strconv's base 0) takes more, not all of it
// what it seems: 1_000 for 1000, 0o17, 0b101, and 0123 for 83 (octal)
// where a person reads 123; those are refused, with an error that says
// what to give.
func ParseSecret(s string) (uint64, error) {
	digits, base := s, 10
	if h, ok := strings.CutPrefix(s, "0x"); ok {
		digits, base = h, 16
	} else if h, ok := strings.CutPrefix(s, "0X"); ok {
		digits, base = h, 16
	}
	if base == 10 && len(digits) > 1 && digits[0] == '0' && strings.Trim(digits, "0123456789") == "" {
		return 0, errors.New("a leading 0 is ambiguous (Go's number syntax reads it as octal): give the number without it, or in hex after 0x")
	}
	// With its base given, ParseUint takes neither a sign nor the
	// underscores base 0 takes.
	v, err := strconv.ParseUint(digits, base, 64)
	if err != nil {
		return 0, errors.New("want a number from 0 to 2^64-1 in decimal digits, or in hex after 0x (42 or 0x2a)")
	}
	return v, nil
}

package main

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/xsessiond/xsessiond/daemon"
)

// configSections names, by the Go type the YAML decoder reports, where in
// the config file a key was looked for, with the type whose keys are the
// known ones there.
var configSections = map[string]struct {
	where string
	typ   reflect.Type
}{
	"main.Config":            {"at the top level", reflect.TypeFor[Config]()},
	"main.InterfaceConfig":   {"in an interface", reflect.TypeFor[InterfaceConfig]()},
	"main.TCPConfig":         {"under tcp", reflect.TypeFor[TCPConfig]()},
	"main.ReassemblyConfig":  {"under reassembly", reflect.TypeFor[ReassemblyConfig]()},
	"daemon.NamespaceConfig": {"in a namespace", reflect.TypeFor[daemon.NamespaceConfig]()},
	"daemon.RuleConfig":      {"in a rule", reflect.TypeFor[daemon.RuleConfig]()},
	"daemon.ControlLimits":   {"under control", reflect.TypeFor[daemon.ControlLimits]()},
	"daemon.Limits":          {"under limits", reflect.TypeFor[daemon.Limits]()},
	"daemon.Auth":            {"under authorization", reflect.TypeFor[daemon.Auth]()},
}

var (
	unknownKey = regexp.MustCompile(`^(line \d+): field (\S+) not found in type (\S+)$`)
	badValue   = regexp.MustCompile("^(line \\d+): cannot unmarshal !!\\w+ `(.*)` into (\\S+)$")
)

// configError says what the YAML decoder found wrong in words of the
// config file rather than of the Go types behind it: an unknown key with
// where it was and the keys known there, a value with what it should be.
func configError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("config: %w", err)
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = m
		if p := unknownKey.FindStringSubmatch(m); p != nil {
			if s, ok := configSections[p[3]]; ok {
				msgs[i] = fmt.Sprintf("%s: unknown key %q %s (known there: %s)", p[1], p[2], s.where, strings.Join(yamlKeys(s.typ), ", "))
			}
		} else if p := badValue.FindStringSubmatch(m); p != nil {
			if want := valueWords(p[3]); want != "" {
				msgs[i] = fmt.Sprintf("%s: %q is not %s", p[1], p[2], want)
			}
		}
	}
	return fmt.Errorf("config: %s", strings.Join(msgs, "; "))
}

// valueWords says what a value of the Go type named t is written as in the
// file, "" when there is nothing plainer to say.
func valueWords(t string) string {
	switch {
	case t == "time.Duration":
		return "a duration (like 120us, 2ms, 30s)"
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "a whole number"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	}
	return ""
}

// yamlKeys are the keys of a struct type in the config file, sorted.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	slices.Sort(keys)
	return keys
}

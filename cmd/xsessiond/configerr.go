package main

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

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
	badKind    = regexp.MustCompile(`^(line \d+): cannot unmarshal !!(map|seq) into (\S+)$`)
)

// kindWords name a YAML value that has no text of its own.
var kindWords = map[string]string{"map": "a section of keys", "seq": "a list"}

// configError says what the YAML decoder found wrong in words of the
// config file rather than of the Go types behind it: an unknown key with
// where it was and the keys known there, a value with what it should be.
func configError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("config: %w (the file is YAML: look at the indentation, quotes and brackets there; deploy/xsessiond.yaml is a sample)", err)
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
		} else if p := badKind.FindStringSubmatch(m); p != nil {
			if want := valueWords(p[3]); want != "" {
				msgs[i] = fmt.Sprintf("%s: %s where the file wants %s", p[1], kindWords[p[2]], want)
			}
		}
	}
	return fmt.Errorf("config: %s", strings.Join(msgs, "; "))
}

// valueWords says what a value of the Go type named t is written as in the
// file, "" when there is nothing plainer to say.
func valueWords(t string) string {
	if _, ok := configSections[t]; ok {
		return "a section of keys (key: value, as in deploy/xsessiond.yaml)"
	}
	switch {
	case t == "time.Duration":
		return "a duration (like 120us, 2ms, 30s)"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a single value"
	case t == "uint8", t == "uint16", t == "uint32", t == "uint64", t == "uint":
		bits := 64
		if t != "uint" && t != "uint64" {
			bits, _ = strconv.Atoi(t[4:])
		}
		return fmt.Sprintf("a whole number from 0 to %d", uint64(1)<<bits-1)
	case strings.HasPrefix(t, "int"):
		return "a whole number"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	}
	return ""
}

// fractions finds a number with a fraction where the config file wants a
// whole one: the YAML decoder makes 1.5 into 1 without a word. It also
// finds a whole number written in a form the CLI refuses (numberForm).
func fractions(n *yaml.Node, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := fractions(c, t); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		if t.Kind() != reflect.Struct {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			for f := range t.Fields() {
				if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == n.Content[i].Value {
					if err := fractions(n.Content[i+1], f.Type); err != nil {
						return err
					}
				}
			}
		}
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice {
			return nil
		}
		for _, c := range n.Content {
			if err := fractions(c, t.Elem()); err != nil {
				return err
			}
		}
	case yaml.ScalarNode:
		if n.Tag == "!!float" && t != reflect.TypeFor[time.Duration]() && (t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64) {
			return fmt.Errorf("config: line %d: %q is not %s", n.Line, n.Value, valueWords(t.String()))
		}
		isNumber := t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64 || t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64
		if n.Tag == "!!int" && t != reflect.TypeFor[time.Duration]() && isNumber {
			if why := numberForm(n.Value); why != "" {
				return fmt.Errorf("config: line %d: %s %s: give it in decimal digits (or in hex after 0x)", n.Line, n.Value, why)
			}
		}
	}
	return nil
}

// numberForm says why the YAML integer v is written in a form that the
// CLI's numbers refuse, as a person would not read it, or "": the YAML
// decoder reads 010 as octal 8, and takes 0o10, 0b11 and 1_000 too.
func numberForm(v string) string {
	digits := strings.TrimLeft(v, "+-")
	switch {
	case strings.Contains(digits, "_"):
		return "has an underscore"
	case strings.HasPrefix(digits, "0x"), strings.HasPrefix(digits, "0X"):
		return ""
	case len(digits) > 1 && digits[0] == '0' && strings.Trim(digits, "0123456789") == "":
		return "has a leading 0, which YAML reads as octal"
	case len(digits) > 1 && digits[0] == '0':
		return "is in a base other than 10 or 16"
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

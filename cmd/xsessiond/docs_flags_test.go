package main

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// docTableRows are the rows of the markdown tables in text, each split
// into its cells (an escaped \| stays in its cell, unescaped).
func docTableRows(text string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, "| ") || strings.HasPrefix(l, "| ---") {
			continue
		}
		l = strings.ReplaceAll(strings.Trim(l, "| "), `\|`, "\x00")
		var cells []string
		for _, c := range strings.Split(l, " | ") {
			cells = append(cells, strings.ReplaceAll(strings.TrimSpace(c), "\x00", "|"))
		}
		rows = append(rows, cells)
	}
	return rows
}

// docFlag is a flag named in a usage cell: --name or -x.
var docFlag = regexp.MustCompile(`(?:^|[\s\[(|])(--[a-z][a-z-]*|-[a-z])\b`)

// hasDefault reports whether f has a default a reader must be told.
func hasDefault(f *pflag.Flag) bool {
	switch f.DefValue {
	case "", "0", "0s", "false", "[]":
		return false
	}
	return true
}

// cmdFlag finds the flag a usage names (--name or a shorthand) on c, its
// own or inherited.
func cmdFlag(c *cobra.Command, name string) *pflag.Flag {
	if long, ok := strings.CutPrefix(name, "--"); ok {
		return c.Flags().Lookup(long)
	}
	return c.Flags().ShorthandLookup(strings.TrimPrefix(name, "-"))
}

// TestDocsCommandTables: each row of docs/cli.md's command tables names a
// command that exists, only flags that command has, and the default of
// each of its flags that has one (top's --interval 1s, demo's --window
// 32), so that the tables stay what --help says.
func TestDocsCommandTables(t *testing.T) {
	doc := cliDoc(t)
	intro, _, _ := strings.Cut(doc, "\n## ")
	root := newRootCmd()
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	seen := map[*cobra.Command]bool{}
	for i, part := range strings.SplitN(intro, "The other commands:", 2) {
		for _, row := range docTableRows(part) {
			if row[0] == "command" || !strings.HasPrefix(row[0], "`") {
				continue
			}
			usage := strings.Trim(strings.SplitN(row[0], "`", 3)[1], " ")
			var path []string
			if i == 0 {
				path = append(path, "ctl")
			}
			for _, w := range strings.Fields(usage) {
				if !regexp.MustCompile(`^[a-z][a-z-]*$`).MatchString(w) {
					break
				}
				path = append(path, w)
			}
			c, _, err := root.Find(path)
			if err != nil || c == root {
				t.Errorf("docs/cli.md documents %q, which is no command (%v)", usage, err)
				continue
			}
			seen[c] = true
			for _, m := range docFlag.FindAllStringSubmatch(usage, -1) {
				if cmdFlag(c, m[1]) == nil {
					t.Errorf("docs/cli.md documents %q: %s has no flag %s", usage, c.CommandPath(), m[1])
				}
			}
			c.LocalFlags().VisitAll(func(f *pflag.Flag) {
				if !hasDefault(f) || !strings.Contains(usage, "--"+f.Name) {
					return
				}
				if !strings.Contains(row[1], f.DefValue) {
					t.Errorf("docs/cli.md's row %q does not give --%s's default, %s", usage, f.Name, f.DefValue)
				}
			})
		}
	}
	if len(seen) < 10 {
		t.Fatalf("docs/cli.md's command tables name %d commands: has their form changed?", len(seen))
	}
}

// TestDocsRunFlags: docs/cli.md's table of run's flags has a row for each
// flag run takes and for no other, and each row of a flag with a default
// gives it as --help does.
func TestDocsRunFlags(t *testing.T) {
	rows := docTableRows(docSection(t, cliDoc(t), "run"))
	run, _, err := newRootCmd().Find([]string{"run"})
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, row := range rows {
		m := regexp.MustCompile("^`--([a-z-]+)[ `]").FindStringSubmatch(row[0])
		if m == nil {
			continue
		}
		documented[m[1]] = true
		f := run.Flags().Lookup(m[1])
		if f == nil {
			t.Errorf("docs/cli.md's run table has --%s, which run does not take", m[1])
			continue
		}
		if hasDefault(f) && !strings.Contains(row[len(row)-1], "`"+f.DefValue+"`") {
			t.Errorf("docs/cli.md's run table: --%s's row does not give its default `%s`", f.Name, f.DefValue)
		}
		if hasDefault(f) && !strings.Contains(row[len(row)-1], "default") {
			t.Errorf("docs/cli.md's run table: --%s's row does not say which value is the default (%s)", f.Name, f.DefValue)
		}
	}
	var missing []string
	run.LocalFlags().VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" && !documented[f.Name] {
			missing = append(missing, f.Name)
		}
	})
	slices.Sort(missing)
	for _, n := range missing {
		t.Errorf("run takes --%s, which docs/cli.md's run table has no row for", n)
	}
}

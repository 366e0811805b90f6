package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// buildVersion is version, or, when the build did not set it, what Go
// recorded of the build: the module's version (go install ...@vX.Y.Z) or
// the commit a build in a git checkout was made from, "+modified" when the
// tree had changes.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if version != "dev" || !ok {
		return version
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return version
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "+modified"
	}
	return "dev-" + rev
}

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "xsessiond:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(exitUsage)
		}
		os.Exit(1)
	}
}

// exitUsage is the exit status of a run refused for its command line or
// its config file: trying again cannot help, and the unit in deploy/ does
// not restart on it (RestartPreventExitStatus), as it does on status 1
// (an interface gone, which may come back).
const exitUsage = 2

// usageError marks an error of the command line or the config file.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// usagef is a usageError of the command line: a flag's value or a
// command's words, refused before anything is asked of a daemon.
func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// usage marks err, nil or a refusal of the command line, as a usageError.
func usage(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "xsessiond",
		Short:         "VPP-style sessions on a Linux host: XDP, AF_XDP and shared-memory fifos",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          noArgs(""),
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(newVersionCmd(), newRunCmd(), newCtlCmd(), newDemoCmd(), newCleanupCmd())
	root.SetHelpCommand(newHelpCmd(root))
	decimalFlags(root)
	return root
}

// errNotDecimal and errLeadingZero are what a numeric flag's value that
// decimalFlag refuses is; flagError says them in its words.
var (
	errNotDecimal  = errors.New("not decimal digits")
	errLeadingZero = errors.New("a leading 0")
)

// decimalFlag is a numeric flag's value that takes its number as --help
// and docs/cli.md write one: decimal digits, a minus sign first where the
// flag takes negative numbers. pflag reads numbers as Go source does
// (strconv's base 0): 1_000 as 1000, 0x10 as 16, 0b11 as 3, and 010 as 8,
// which a person who typed 010 did not mean; those are refused.
type decimalFlag struct {
	pflag.Value
}

func (v decimalFlag) Set(s string) error {
	digits := s
	if t := v.Type(); strings.HasPrefix(t, "int") {
		digits = strings.TrimPrefix(s, "-")
	}
	switch {
	case digits == "" || strings.Trim(digits, "0123456789") != "":
		return errNotDecimal
	case len(digits) > 1 && digits[0] == '0':
		return errLeadingZero
	}
	return v.Value.Set(s)
}

// decimalFlags makes every numeric flag of cmd and its commands take
// decimal digits only (decimalFlag).
func decimalFlags(cmd *cobra.Command) {
	wrap := func(f *pflag.Flag) {
		if _, done := f.Value.(decimalFlag); done {
			return
		}
		switch f.Value.Type() {
		case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
			f.Value = decimalFlag{f.Value}
		}
	}
	cmd.Flags().VisitAll(wrap)
	cmd.PersistentFlags().VisitAll(wrap)
	for _, c := range cmd.Commands() {
		decimalFlags(c)
	}
}

// newHelpCmd is xsessiond help [command]: the command's help, as --help
// prints it; a command that is not there is an error that names the ones
// there are (cobra's own help printed the nearest command's help and
// exited 0).
func newHelpCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  "Help about any command: xsessiond help ctl show prints what xsessiond ctl show --help does.",
		// No socket or daemon needed.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			target, _, err := root.Find(args)
			if err != nil || target == nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, sub := range target.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := root.Find(args)
			switch {
			case err != nil || target == nil:
				return noArgs("")(root, args)
			case len(rest) > 0 && target.HasAvailableSubCommands():
				return noArgs("")(target, rest)
			}
			// Words after a command without commands of its own are its
			// arguments (help ctl show apps): its help.
			target.InitDefaultHelpFlag() // listed as --help lists it
			return target.Help()
		},
	}
}

// noArgs is cobra.NoArgs with a message that says what to type: the
// commands of a command that has them, else that it takes none, and hint.
func noArgs(hint string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		if cmd.HasAvailableSubCommands() {
			var names []string
			for _, c := range cmd.Commands() {
				if c.IsAvailableCommand() && c.Name() != "completion" {
					names = append(names, c.Name())
				}
			}
			return usagef("%s: no such command; want %s (see %s --help)", strings.TrimSpace(words(cmd)+" "+args[0]), strings.Join(names, ", "), cmd.CommandPath())
		}
		if hint != "" {
			hint = ": " + hint
		}
		return usagef("%s takes no arguments, and %q is one%s", words(cmd), args[0], hint)
	}
}

// words is the command's path as its messages name it: ns add, rule del.
func words(cmd *cobra.Command) string {
	w := strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name())
	return strings.TrimPrefix(strings.TrimSpace(w), "ctl ")
}

// maxArgs is cobra.MaximumNArgs with a message that says what to type.
func maxArgs(n int, msg string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > n {
			return fmt.Errorf("%s: %s", strings.Join(args, " "), msg)
		}
		return nil
	}
}

var (
	badFlagValue    = regexp.MustCompile(`^invalid argument "(.*)" for "(?:-\w, )?--([\w-]+)" flag: `)
	negativeAsFlags = regexp.MustCompile(`^unknown shorthand flag: '\d' in (-\d+)$`)
	oneDash         = regexp.MustCompile(`^unknown shorthand flag: '.' in -([a-z][\w-]+)(?:=.*)?$`)
)

// flagError says what a flag's value should be in place of the parser's
// words (strconv.ParseUint: parsing "x": invalid syntax), takes a
// negative number among a command's words for what it is, a long flag
// written with one dash (-json) for the flag, and points every other flag
// error (an unknown flag, one without its value) at the command's help:
// a usage error.
func flagError(cmd *cobra.Command, err error) error {
	return usageError{flagErrorText(cmd, err)}
}

// flagErrorText is flagError's words.
func flagErrorText(cmd *cobra.Command, err error) error {
	if p := negativeAsFlags.FindStringSubmatch(err.Error()); p != nil {
		if cmd.HasParent() && cmd.Parent().Name() == "rule" {
			return fmt.Errorf("%s %s: a port is 0 to 65535 (0: any) and a rule id 1 or more (see %s --help)", words(cmd), p[1], cmd.CommandPath())
		}
		return fmt.Errorf("%s %s: no negative numbers here (see %s --help)", words(cmd), p[1], cmd.CommandPath())
	}
	if p := oneDash.FindStringSubmatch(err.Error()); p != nil && cmd.Flags().Lookup(p[1]) != nil {
		return fmt.Errorf("-%s: a long flag takes two dashes: --%s (see %s --help)", p[1], p[1], cmd.CommandPath())
	}
	see := fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())
	p := badFlagValue.FindStringSubmatch(err.Error())
	if p == nil {
		return see // an unknown flag, one without its value
	}
	f := cmd.Flags().Lookup(p[2])
	if f == nil {
		return see
	}
	name := "--" + f.Name
	if f.Shorthand != "" {
		name = "-" + f.Shorthand + "/" + name
	}
	var want string
	switch t := f.Value.Type(); t {
	case "duration":
		want = "a duration with its unit, like 500ms, 2s or 1m"
	case "int", "int64":
		want = "a whole number"
	case "uint32":
		want = "a whole number from 0 to 4294967295"
	case "uint16":
		want = "a whole number from 0 to 65535"
	case "bool":
		want = "true or false"
	default:
		return see
	}
	switch {
	case strings.HasSuffix(err.Error(), ": "+errLeadingZero.Error()):
		want += ", in decimal digits without a leading 0"
	case strings.HasSuffix(err.Error(), ": "+errNotDecimal.Error()):
		want += ", in decimal digits"
	}
	return fmt.Errorf("%s %q: want %s (see %s --help)", name, p[1], want, cmd.CommandPath())
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs(""),
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "xsessiond", buildVersion())
		},
	}
}

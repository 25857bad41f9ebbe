package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// io3 is a command's standard input and outputs.
type io3 struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// command is a node of the command tree: a leaf that runs, a group of
// subcommands, or both (outpost gateway runs the gateway and groups its
// admin commands).
type command struct {
	name    string
	summary string // one line, for the parent's list
	// run runs the command with the arguments after its name; nil for a
	// group that only holds subcommands. Given -h it prints its usage and
	// returns flag.ErrHelp.
	run  func(ctx context.Context, s io3, args []string) error
	subs []*command
}

// commands is the whole command line of outpost.
func commands() *command {
	leaf := func(name, summary string, run func(ctx context.Context, s io3, args []string) error) *command {
		return &command{name: name, summary: summary, run: run}
	}
	apikey := func(sub string) func(ctx context.Context, s io3, args []string) error {
		return func(ctx context.Context, s io3, args []string) error {
			return runAPIKey(ctx, append([]string{sub}, args...), s.stdout, s.stderr)
		}
	}
	secrets := func(verb string) func(ctx context.Context, s io3, args []string) error {
		return func(ctx context.Context, s io3, args []string) error {
			return runSecretsTransfer(ctx, verb, args, s.stdout, s.stderr)
		}
	}
	return &command{name: "outpost", subs: []*command{
		leaf("dev", "try it: gateway + agent + sample target on loopback", func(ctx context.Context, s io3, args []string) error {
			return runDev(ctx, args, s.stdout, s.stderr)
		}),
		{name: "gateway", summary: "run the gateway, or manage it", run: func(ctx context.Context, s io3, args []string) error {
			return runGateway(ctx, args, s.stdout, s.stderr)
		}, subs: []*command{
			{name: "apikey", summary: "manage API keys on the gateway's store", subs: []*command{
				leaf("create", "create a key with scopes; prints it once", apikey("create")),
				leaf("list", "list the keys, revoked ones included", apikey("list")),
				leaf("revoke", "revoke a key by id", apikey("revoke")),
			}},
			{name: "token", summary: "agent enrollment tokens", subs: []*command{
				leaf("create", "mint a one-time agent enrollment token", func(ctx context.Context, s io3, args []string) error {
					return runTokenCreate(ctx, args, s.stdout, s.stderr)
				}),
			}},
			{name: "seal-key", summary: "the key that seals the CA and keys in PostgreSQL", subs: []*command{
				leaf("create", "create a seal key file", func(_ context.Context, s io3, args []string) error {
					return runSealKey(append([]string{"create"}, args...), s.stdout, s.stderr)
				}),
			}},
			leaf("export-secrets", "write a gateway's CA, keys and store rows to a sealed bundle", secrets("export")),
			leaf("import-secrets", "load a sealed bundle into a PostgreSQL store", secrets("import")),
		}},
		{name: "agent", summary: "enroll and run this machine as an agent", subs: []*command{
			leaf("enroll", "enroll this machine as an agent", func(ctx context.Context, s io3, args []string) error {
				return runAgentEnroll(ctx, args, s.stdin, s.stdout, s.stderr)
			}),
			leaf("run", "run the enrolled agent until stopped", func(ctx context.Context, s io3, args []string) error {
				return runAgentRun(ctx, args, s.stderr)
			}),
			leaf("up", "enroll if needed, then run", func(ctx context.Context, s io3, args []string) error {
				return runAgentUp(ctx, args, s.stdin, s.stdout, s.stderr)
			}),
		}},
		{name: "session", summary: "session tokens", subs: []*command{
			leaf("create", "mint a session token for a target (admin API key)", func(ctx context.Context, s io3, args []string) error {
				return runSessionCreate(ctx, args, s.stdout, s.stderr)
			}),
		}},
		leaf("connect", "reach a target through the gateway with a session token", func(ctx context.Context, s io3, args []string) error {
			return runConnect(ctx, args, s.stdin, s.stdout, s.stderr)
		}),
		leaf("agents", "list the enrolled agents", func(ctx context.Context, s io3, args []string) error {
			return runAgentsList(ctx, args, s.stdout, s.stderr)
		}),
		leaf("sessions", "list recent sessions from the audit", func(ctx context.Context, s io3, args []string) error {
			return runSessionsList(ctx, args, s.stdout, s.stderr)
		}),
		leaf("gateways", "list the gateway replicas of the cluster and their state", func(ctx context.Context, s io3, args []string) error {
			return runGatewaysList(ctx, args, s.stdout, s.stderr)
		}),
		leaf("version", "show the version, commit, build date and protocol", func(_ context.Context, s io3, args []string) error {
			return runVersion(args, s.stdout, s.stderr)
		}),
	}}
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "help" || arg == "-h" || arg == "-help" || arg == "--help"
}

// dispatch runs the command line args below c, whose name path leads to
// it: a subcommand by name, help (-h, --help, help [sub…]) or --version at
// any level, else c's own run.
func (c *command) dispatch(ctx context.Context, s io3, path, args []string) error {
	if len(args) > 0 {
		switch {
		case args[0] == "help" && len(args) > 1:
			// "outpost help gateway token": the help of that command.
			target, tpath := c, path
			for _, name := range args[1:] {
				sub := target.sub(name)
				if sub == nil {
					fmt.Fprint(s.stderr, target.usage(tpath))
					return fmt.Errorf("%w: unknown command %q", errUsage, strings.Join(append(tpath, name), " "))
				}
				target, tpath = sub, append(tpath, name)
			}
			return target.help(ctx, s, tpath)
		case isHelp(args[0]):
			return c.help(ctx, s, path)
		case args[0] == "--version" || args[0] == "-version":
			return errVersion
		}
		if sub := c.sub(args[0]); sub != nil {
			return sub.dispatch(ctx, s, append(slices.Clip(path), sub.name), args[1:])
		}
	}
	if c.run != nil {
		return c.run(ctx, s, args)
	}
	fmt.Fprint(s.stderr, c.usage(path))
	if len(path) > 0 && (len(args) == 0 || strings.HasPrefix(args[0], "-")) {
		return fmt.Errorf("%w: %s needs a subcommand: %s", errUsage, strings.Join(path, " "), c.subNames())
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, strings.Join(append(path, args[0]), " "))
}

// help prints c's usage on stdout: the list of subcommands, then the flags
// of its own run, if it has one. The result is nil (exit 0).
func (c *command) help(ctx context.Context, s io3, path []string) error {
	if len(c.subs) > 0 || c.run == nil {
		fmt.Fprint(s.stdout, c.usage(path))
	}
	if c.run == nil {
		return nil
	}
	if len(c.subs) > 0 {
		fmt.Fprintln(s.stdout)
	}
	// Asked for, the flags go to stdout (a usage error prints them on
	// stderr).
	if err := c.run(ctx, io3{s.stdin, s.stdout, s.stdout}, []string{"-h"}); err != nil && !errors.Is(err, flag.ErrHelp) {
		return err
	}
	return nil
}

func (c *command) sub(name string) *command {
	for _, sc := range c.subs {
		if sc.name == name {
			return sc
		}
	}
	return nil
}

func (c *command) subNames() string {
	names := make([]string, len(c.subs))
	for i, sc := range c.subs {
		names[i] = sc.name
	}
	return strings.Join(names, ", ")
}

// usage is the help text of a group: the root's hand-written overview, or
// the list of subcommands.
func (c *command) usage(path []string) string {
	if len(path) == 0 {
		return usage
	}
	var b strings.Builder
	name := "outpost " + strings.Join(path, " ")
	if c.run != nil {
		fmt.Fprintf(&b, "Usage: %s [flags]\n       %s <command> [flags]\n\n", name, name)
	} else {
		fmt.Fprintf(&b, "Usage: %s <command> [flags]\n\n", name)
	}
	b.WriteString("Commands:\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, sc := range c.subs {
		fmt.Fprintf(tw, "  %s\t%s\n", sc.name, sc.summary)
	}
	tw.Flush()
	fmt.Fprintf(&b, "\nRun \"%s <command> -h\" for the flags of a command.\n", name)
	return b.String()
}

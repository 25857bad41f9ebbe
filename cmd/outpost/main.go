// Command outpost is the single Outpost binary: the gateway, the agent, the
// client-side connector and the admin commands. It only parses flags, builds the
// root logger and calls into the server and agent packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"
)

const usage = `outpost — reach machines in private networks through an outbound-only agent tunnel.

Usage:
  outpost dev                              try it: gateway + agent + sample target on loopback
  outpost gateway [flags]                  run the gateway
  outpost gateway apikey create|list|revoke  manage API keys on the gateway's store
  outpost gateway token create [flags]     mint a one-time agent enrollment token
  outpost gateway seal-key create --out F  create the key that seals the CA and keys in PostgreSQL
  outpost gateway export-secrets|import-secrets
                                           move a gateway's CA, keys and store onto PostgreSQL
  outpost agent enroll --token <jwt|->     enroll this machine as an agent
                                           (or --secret-file F --gateway URL --ca-pin HEX)
  outpost agent run [--config-dir DIR]     run the enrolled agent until stopped
  outpost agent up --token <jwt|->         enroll if needed, then run
  outpost session create --target H:P      mint a session token (admin API key)
  outpost agents --api-key-file F          list the enrolled agents (table or --json)
  outpost sessions --api-key-file F        list recent sessions from the audit (table or --json)
  outpost connect --gateway URL --token-file F
                                           reach the target: --listen ADDR or --stdio
  outpost help                             show this help

Run "outpost <command> -h" for the flags of a command.
`

// errUsage marks a command-line mistake: the message is printed with a usage hint, exit 2.
var errUsage = errors.New("usage")

// errReported marks an error the command has already printed: exit 1 without
// printing it again.
var errReported = errors.New("reported")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errReported):
		os.Exit(1)
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "outpost:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "outpost:", err)
		os.Exit(1)
	}
}

// run dispatches a command line. It is main without the process exit, for tests.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command given", errUsage)
	}
	switch args[0] {
	case "gateway":
		if len(args) > 1 && args[1] == "apikey" {
			return runAPIKey(ctx, args[2:], stdout, stderr)
		}
		if len(args) > 1 && (args[1] == "export-secrets" || args[1] == "import-secrets") {
			return runSecretsTransfer(ctx, strings.TrimSuffix(args[1], "-secrets"), args[2:], stdout, stderr)
		}
		if len(args) > 1 && args[1] == "seal-key" {
			return runSealKey(args[2:], stdout, stderr)
		}
		if len(args) > 2 && args[1] == "token" && args[2] == "create" {
			return runTokenCreate(ctx, args[3:], stdout, stderr)
		}
		return runGateway(ctx, args[1:], stdout, stderr)
	case "agent":
		return runAgent(ctx, args[1:], stdin, stdout, stderr)
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr)
	case "connect":
		return runConnect(ctx, args[1:], stdin, stdout, stderr)
	case "agents":
		return runAgentsList(ctx, args[1:], stdout, stderr)
	case "sessions":
		return runSessionsList(ctx, args[1:], stdout, stderr)
	case "session":
		if len(args) > 1 && args[1] == "create" {
			return runSessionCreate(ctx, args[2:], stdout, stderr)
		}
		return fmt.Errorf("%w: session needs a subcommand: create", errUsage)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

// logFlags are the logging flags every long-running command takes.
type logFlags struct {
	level string
	json  bool
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: trace, debug, info, warn, error")
	fs.BoolVar(&l.json, "log-json", false, "write logs as JSON lines")
}

// logger builds the root logger; every component gets a named child of it.
func (l *logFlags) logger(w io.Writer) (hclog.Logger, error) {
	level := hclog.LevelFromString(l.level)
	if level == hclog.NoLevel {
		return nil, fmt.Errorf("%w: unknown -log-level %q", errUsage, l.level)
	}
	return hclog.New(&hclog.LoggerOptions{Name: "outpost", Level: level, JSONFormat: l.json, Output: w}), nil
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: outpost %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args and refuses positional leftovers.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

// stringList is a repeatable flag that also accepts comma-separated values.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

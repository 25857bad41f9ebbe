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
	"strconv"
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
  outpost version                          show the version, commit, build date and protocol
  outpost help [command]                   show this help, or a command's

Every command answers -h, --help and help with its usage, and --version.
`

// errUsage marks a command-line mistake: the message is printed with a usage hint, exit 2.
var errUsage = errors.New("usage")

// errVersion asks run to print the version instead of running the command
// (--version given to any command).
var errVersion = errors.New("version requested")

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
	err := commands().dispatch(ctx, io3{stdin, stdout, stderr}, nil, args)
	if errors.Is(err, errVersion) {
		printVersion(stdout)
		return nil
	}
	return err
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
	fs.Bool("version", false, "print the version and exit")
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
	if f := fs.Lookup("version"); f != nil && f.Value.String() == "true" {
		return errVersion
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

// fractionFlag is a float64 flag that prints as people write a fraction
// ("0.333", not 0.3333333333333333) and also accepts one as "1/3".
type fractionFlag float64

func (f *fractionFlag) String() string { return strconv.FormatFloat(float64(*f), 'g', 3, 64) }

func (f *fractionFlag) Set(v string) error {
	num, den, isRatio := strings.Cut(v, "/")
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil {
		return fmt.Errorf("%q is not a number or a fraction such as 1/3", v)
	}
	if isRatio {
		d, err := strconv.ParseFloat(strings.TrimSpace(den), 64)
		if err != nil || d == 0 {
			return fmt.Errorf("%q is not a number or a fraction such as 1/3", v)
		}
		n /= d
	}
	*f = fractionFlag(n)
	return nil
}

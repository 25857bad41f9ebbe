package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/outposthq/outpost/agent"
)

func runAgent(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: agent needs a subcommand: enroll", errUsage)
	}
	switch args[0] {
	case "enroll":
		return runAgentEnroll(ctx, args[1:], stdin, stdout, stderr)
	}
	return fmt.Errorf("%w: unknown agent subcommand %q", errUsage, args[0])
}

// readToken returns the token flag's value, reading stdin for "-" (keeps the
// token out of ps).
func readToken(v string, stdin io.Reader) (string, error) {
	if v != "-" {
		return strings.TrimSpace(v), nil
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, 64<<10)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("read token from stdin: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// enrollFlags are shared by "agent enroll" and "agent up".
type enrollFlags struct {
	token, name, hostname, quicEndpoint, configDir string
	subnets, domains                               stringList
}

func (e *enrollFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&e.token, "token", "", "enrollment token, or - to read it from stdin (required)")
	fs.StringVar(&e.name, "name", "", "agent name (default: the token's, else this host's name)")
	fs.StringVar(&e.hostname, "hostname", "", "DNS name of this host, added to the certificate (optional)")
	fs.Var(&e.subnets, "advertise-subnets", "IPv4 subnets to advertise, comma-separated (default: the token's routes)")
	fs.Var(&e.domains, "advertise-domains", "domains to advertise, comma-separated (default: the token's routes)")
	fs.StringVar(&e.quicEndpoint, "quic-endpoint", "", "gateway QUIC host:port (default: the token's, else the gateway's answer)")
	fs.StringVar(&e.configDir, "config-dir", "", "config directory (default $"+agent.ConfigDirEnv+" or "+agent.DefaultConfigDir+")")
}

func (e *enrollFlags) options(stdin io.Reader) (agent.EnrollOptions, error) {
	if e.token == "" {
		return agent.EnrollOptions{}, fmt.Errorf("%w: --token is required", errUsage)
	}
	tok, err := readToken(e.token, stdin)
	if err != nil {
		return agent.EnrollOptions{}, err
	}
	o := agent.EnrollOptions{
		Token: tok, ConfigDir: agent.ConfigDir(e.configDir),
		Name: e.name, Hostname: e.hostname, QUICEndpoint: e.quicEndpoint,
	}
	if e.subnets != nil {
		o.Subnets = e.subnets
	}
	if e.domains != nil {
		o.Domains = e.domains
	}
	return o, nil
}

func runAgentEnroll(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("agent enroll", stderr, "agent enroll --token <jwt|-> [flags]")
	var (
		ef enrollFlags
		lf logFlags
	)
	ef.register(fs)
	lf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	o, err := ef.options(stdin)
	if err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	res, err := agent.Enroll(ctx, o, log)
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	fmt.Fprintf(stdout, "enrolled agent %q as %s; certificate valid until %s\nconfig: %s (gateway %s)\n",
		res.AgentName, res.AgentID, res.CertNotAfter.UTC().Format(time.RFC3339), res.ConfigPath, res.GatewayEndpoint)
	return nil
}

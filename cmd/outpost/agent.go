package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/agent"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/dataplane/transport"
)

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
	if tok := strings.TrimSpace(line); tok != "" {
		return tok, nil
	}
	return "", fmt.Errorf("%w: --token - read an empty line from stdin: pipe the token in, e.g. --token - < token.jwt", errUsage)
}

// enrollFlags are shared by "agent enroll" and "agent up".
type enrollFlags struct {
	token, name, hostname, quicEndpoint, configDir string
	secretFile, gateway, caPin                     string
	subnets, domains                               stringList
}

func (e *enrollFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&e.token, "token", "", "enrollment token, or - to read it from stdin (a token given here shows in ps)")
	fs.StringVar(&e.secretFile, "secret-file", "", "file holding the gateway's static enrollment secret, in place of a token (with --gateway and --ca-pin)")
	fs.StringVar(&e.gateway, "gateway", "", "gateway API URL, https://host:port (with --secret-file; a token names its own)")
	fs.StringVar(&e.caPin, "ca-pin", "", "SHA-256 of the gateway CA's public key, hex (with --secret-file; the gateway logs it as ca_spki_sha256)")
	fs.StringVar(&e.name, "name", "", "agent name (default: the token's, else this host's name)")
	fs.StringVar(&e.hostname, "hostname", "", "DNS name of this host, added to the certificate (optional)")
	fs.Var(&e.subnets, "advertise-subnets", "IPv4 subnets to advertise, comma-separated (default: the token's routes)")
	fs.Var(&e.domains, "advertise-domains", "domains to advertise, comma-separated (default: the token's routes)")
	fs.StringVar(&e.quicEndpoint, "quic-endpoint", "", "gateway QUIC host:port (default: the token's, else the gateway's answer)")
	fs.StringVar(&e.configDir, "config-dir", "", "config directory (default $"+agent.ConfigDirEnv+" or "+agent.DefaultConfigDir+")")
}

// credential fills o with the token, or with the static secret and where it
// goes.
func (e *enrollFlags) credential(o *agent.EnrollOptions, stdin io.Reader) error {
	switch {
	case e.token != "" && e.secretFile != "":
		return fmt.Errorf("%w: give --token or --secret-file, not both", errUsage)
	case e.secretFile != "" && (e.gateway == "" || e.caPin == ""):
		return fmt.Errorf("%w: --secret-file needs --gateway URL and --ca-pin HEX (a secret, unlike a token, names neither)", errUsage)
	case e.secretFile != "":
		secret, err := readSecretFile(e.secretFile, "enrollment secret file")
		if err != nil {
			return err
		}
		o.Secret, o.GatewayURL, o.CAPin = secret, e.gateway, e.caPin
		return nil
	case e.gateway != "" || e.caPin != "":
		return fmt.Errorf("%w: --gateway and --ca-pin go with --secret-file; a token names its gateway and CA", errUsage)
	case e.token == "":
		return fmt.Errorf("%w: --token (or --secret-file) is required", errUsage)
	}
	tok, err := readToken(e.token, stdin)
	if err != nil {
		return err
	}
	o.Token = tok
	return nil
}

func (e *enrollFlags) options(stdin io.Reader) (agent.EnrollOptions, error) {
	o := agent.EnrollOptions{
		ConfigDir: agent.ConfigDir(e.configDir),
		Name:      e.name, Hostname: e.hostname, QUICEndpoint: e.quicEndpoint,
	}
	if err := e.credential(&o, stdin); err != nil {
		return agent.EnrollOptions{}, err
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
	fs := newFlagSet("agent enroll", stderr, "agent enroll (--token <jwt|-> | --secret-file F --gateway URL --ca-pin HEX) [flags]")
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
	fmt.Fprintf(stdout, "approved routes: subnets [%s], domains [%s]\n", strings.Join(res.ApprovedSubnets, ", "), strings.Join(res.ApprovedDomains, ", "))
	if len(res.UnapprovedRoutes) > 0 {
		fmt.Fprintf(stdout, "warning: not approved, sessions will not reach them: %s\n", strings.Join(res.UnapprovedRoutes, ", "))
	}
	return nil
}

// runFlags are the flags of the running agent, shared by "agent run" and "agent up".
type runFlags struct {
	configDir     string
	drainTimeout  time.Duration
	idleHeartbeat time.Duration
	renewFraction fractionFlag
	metricsListen string
	maxSessions   int64
	haConnections int
	pprof         pprofFlag
}

func (r *runFlags) register(fs *flag.FlagSet, withConfigDir bool) {
	if withConfigDir {
		fs.StringVar(&r.configDir, "config-dir", "", "config directory (default $"+agent.ConfigDirEnv+" or "+agent.DefaultConfigDir+")")
	}
	fs.DurationVar(&r.drainTimeout, "drain-timeout", agent.DefaultDrainTimeout, "on SIGTERM, how long live sessions may take to finish")
	fs.DurationVar(&r.idleHeartbeat, "idle-heartbeat", agent.DefaultIdleHeartbeat, "send a heartbeat after hearing nothing from the gateway this long (keep it above the gateway's keep-alive; how soon an idle agent notices a restarted gateway)")
	fs.Int64Var(&r.maxSessions, "max-sessions", agent.DefaultMaxSessions, "concurrent sessions the gateway may open (QUIC streams); raise the gateway's --max-sessions-per-agent with it")
	fs.IntVar(&r.haConnections, "ha-connections", agent.DefaultHAConnections, "keep this many connections, each to a distinct gateway replica behind the gateway endpoint (a gateway that is not a cluster gets one; 1 = always one)")
	fs.StringVar(&r.metricsListen, "metrics-listen", "", "serve Prometheus metrics on this address at /metrics (e.g. 127.0.0.1:9101; default off)")
	r.renewFraction = agent.DefaultRenewFraction
	fs.Var(&r.renewFraction, "renew-fraction", "renew the agent certificate when this `fraction` of its lifetime is left: 0 < f < 1, as a decimal or a ratio (1/3)")
	r.pprof.register(fs)
}

// maxSessionsLimit bounds --max-sessions: every session costs the agent a
// QUIC stream, a TCP connection and two goroutines.
const maxSessionsLimit = 1 << 20

// check rejects out-of-range values before anything is done.
func (r *runFlags) check() error {
	if !(r.renewFraction > 0 && r.renewFraction < 1) {
		return fmt.Errorf("%w: --renew-fraction %v: want a part of the certificate lifetime, between 0 and 1 (e.g. 0.33)", errUsage, r.renewFraction.String())
	}
	if r.maxSessions < 1 || r.maxSessions > maxSessionsLimit {
		return fmt.Errorf("%w: --max-sessions %d: want 1 to %d", errUsage, r.maxSessions, maxSessionsLimit)
	}
	if r.haConnections < 1 || r.haConnections > agent.MaxHAConnections {
		return fmt.Errorf("%w: --ha-connections %d: want 1 to %d", errUsage, r.haConnections, agent.MaxHAConnections)
	}
	if r.idleHeartbeat <= 0 {
		return fmt.Errorf("%w: --idle-heartbeat %v must be positive", errUsage, r.idleHeartbeat)
	}
	if r.drainTimeout < 0 {
		return fmt.Errorf("%w: --drain-timeout %v must not be negative", errUsage, r.drainTimeout)
	}
	return nil
}

// parseRun parses the flags of a command that runs the agent, checks them
// and returns the logger they ask for.
func parseRun(fs *flag.FlagSet, args []string, rf *runFlags, lf *logFlags, stderr io.Writer) (hclog.Logger, error) {
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	if err := rf.check(); err != nil {
		return nil, err
	}
	return lf.logger(stderr)
}

func runAgentRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("agent run", stderr, "agent run [--config-dir DIR] [flags]")
	var (
		rf runFlags
		lf logFlags
	)
	rf.register(fs, true)
	lf.register(fs)
	log, err := parseRun(fs, args, &rf, &lf, stderr)
	if err != nil {
		return err
	}
	return runTunnel(ctx, agent.ConfigDir(rf.configDir), rf, log)
}

func runAgentUp(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("agent up", stderr, "agent up (--token <jwt|-> | --secret-file F --gateway URL --ca-pin HEX) [flags]")
	var (
		ef enrollFlags
		rf runFlags
		lf logFlags
	)
	ef.register(fs)
	rf.register(fs, false)
	lf.register(fs)
	log, err := parseRun(fs, args, &rf, &lf, stderr)
	if err != nil {
		return err
	}
	dir := agent.ConfigDir(ef.configDir)
	if id, ok := agent.Enrolled(dir); ok {
		log.Info("already enrolled; using the existing identity", "agent_id", id, "config_dir", dir)
	} else {
		o, err := ef.options(stdin)
		if err != nil {
			return err
		}
		res, err := agent.Enroll(ctx, o, log)
		if err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		fmt.Fprintf(stdout, "enrolled agent %q as %s\n", res.AgentName, res.AgentID)
	}
	return runTunnel(ctx, dir, rf, log)
}

// runTunnel runs the agent until ctx ends; SIGHUP re-reads the config.
func runTunnel(ctx context.Context, dir string, rf runFlags, log hclog.Logger) error {
	var counters relay.Counters
	r, err := agent.NewRunner(agent.RunnerConfig{ConfigDir: dir, DrainTimeout: rf.drainTimeout, IdleHeartbeat: rf.idleHeartbeat, RenewFraction: float64(rf.renewFraction), Counters: &counters,
		HAConnections: rf.haConnections,
		QUIC:          transport.Config{MaxIncomingStreams: rf.maxSessions}}, log)
	if err != nil {
		return err
	}
	if rf.metricsListen != "" {
		stop, err := serveMetrics(rf.metricsListen, agent.MetricsHandler(r, &counters), log)
		if err != nil {
			return err
		}
		defer stop()
	}
	stopPprof, err := rf.pprof.start(log)
	if err != nil {
		return err
	}
	defer stopPprof()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		signal.Stop(hup)
		close(done)
		wg.Wait()
	}()
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-hup:
				log.Info("SIGHUP: reloading the config")
				r.Reload()
			}
		}
	})
	if err := r.Run(ctx); err != nil {
		// Run gives up only on what retrying cannot fix; the error says
		// what to do.
		log.Error("the agent stopped", "error", err)
		return errReported
	}
	return nil
}

// serveMetrics serves h at /metrics on addr until the returned stop is
// called; stop closes the listener and waits for the server.
func serveMetrics(addr string, h http.Handler, log hclog.Logger) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	return serveHTTP(addr, "metrics", "/metrics", mux, log)
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outposthq/outpost/server"
)

func runGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gateway", stderr, "gateway --data-dir DIR [flags]")
	var (
		lf         logFlags
		configFile string
		flagCfg    server.Config
		hostnames  stringList
		shutdown   time.Duration
		secretFile string
		leeway     time.Duration
		certValid  time.Duration
		idle       time.Duration
		keepAlive  time.Duration
		silence    time.Duration
		hedge      time.Duration
		direct     bool
		directNets stringList
		directDoms stringList
		proxies    stringList
		pf         pprofFlag
	)
	lf.register(fs)
	pf.register(fs)
	fs.StringVar(&configFile, "config", "", "JSON config file (keys as in server.Config); flags override it")
	fs.StringVar(&flagCfg.DataDir, "data-dir", "", "directory for the CA, keys, store and admin.key (required)")
	fs.StringVar(&flagCfg.Store, "store", "", storeUsage)
	fs.StringVar(&flagCfg.SealKeyFile, "seal-key-file", "", sealKeyUsage)
	fs.StringVar(&flagCfg.Listen, "listen", server.DefaultListen, "TCP address for the TLS API port (gRPC, REST, health, metrics)")
	fs.StringVar(&flagCfg.QUICListen, "quic-listen", server.DefaultQUICListen, "UDP address for agent QUIC connections")
	fs.StringVar(&flagCfg.MetricsListen, "metrics-listen", "", "separate plain-HTTP address for /metrics (default: on the API port)")
	fs.Var(&hostnames, "hostname", "DNS name or IP the server certificate covers; repeatable or comma-separated (default "+server.DefaultHostname+")")
	fs.StringVar(&flagCfg.PublicURL, "public-url", "", "HTTPS base URL agents enroll at (default https://<first hostname>:<listen port>)")
	fs.StringVar(&flagCfg.PublicQUICEndpoint, "public-quic-endpoint", "", "host:port agents dial (default <first hostname>:<quic port>)")
	fs.StringVar(&flagCfg.ReplicaName, "replica-name", "", "this gateway's name among the replicas of a cluster (default: the host name)")
	fs.StringVar(&flagCfg.ReplicaQUICEndpoint, "replica-quic-endpoint", "", "host:port of this replica's own QUIC listener, for the peer link of a cluster (default: the bound --quic-listen address, the host name for an unspecified IP)")
	fs.StringVar(&flagCfg.ReplicaAPIEndpoint, "replica-api-endpoint", "", "host:port of this replica's own API listener, as ListGateways shows it (default: the bound --listen address, the host name for an unspecified IP)")
	fs.DurationVar(&shutdown, "shutdown-timeout", server.DefaultShutdownTimeout, "how long a graceful stop may take")
	fs.StringVar(&secretFile, "enrollment-secret-file", "", "file holding a static enrollment secret accepted in place of a token (default: none)")
	fs.StringVar(&flagCfg.ProvisionerPublicKey, "provisioner-public-key", "", "PEM file of an ECDSA P-256 key whose enrollment JWTs are accepted (default: none)")
	fs.StringVar(&flagCfg.ProvisionerAudience, "provisioner-audience", "", "the aud the provisioner's enrollment JWTs must carry for this gateway (required with --provisioner-public-key)")
	fs.DurationVar(&leeway, "enrollment-token-leeway", server.DefaultEnrollmentTokenLeeway, "clock skew tolerated on enrollment tokens: a token still enrolls this long after it expired (0 to "+shortDuration(server.MaxEnrollmentTokenLeeway)+")")
	fs.IntVar(&flagCfg.EnrollRateLimit, "enroll-rate-limit", server.DefaultEnrollRateLimit, "Enroll calls allowed per source IP per minute")
	fs.DurationVar(&certValid, "agent-cert-validity", server.DefaultAgentCertValidity, "lifetime of agent certificates")
	fs.BoolVar(&direct, "allow-direct", false, "let the gateway dial targets no agent covers itself, only inside --direct-subnets/--direct-domains")
	fs.Var(&directNets, "direct-subnets", "IPv4 subnets the gateway may dial directly with --allow-direct; repeatable or comma-separated")
	fs.Var(&directDoms, "direct-domains", "domains (name or *.name) the gateway may dial directly with --allow-direct; repeatable or comma-separated")
	fs.IntVar(&flagCfg.MaxSessionsPerAgent, "max-sessions-per-agent", server.DefaultMaxSessionsPerAgent, "concurrent sessions allowed through one agent")
	fs.DurationVar(&idle, "quic-idle-timeout", server.DefaultQUICIdleTimeout, "close an agent connection silent for this long (also how long a vanished agent's sessions hang)")
	fs.Var(&proxies, "trusted-proxies", "load balancers or proxies (address or CIDR) whose X-Forwarded-For and PROXY headers are believed; repeatable or comma-separated (default: none)")
	fs.BoolVar(&flagCfg.ProxyProtocol, "proxy-protocol", false, "accept PROXY protocol v1/v2 headers on the API port from --trusted-proxies")
	fs.DurationVar(&keepAlive, "quic-keep-alive", server.DefaultQUICKeepAlive, "PING an agent connection quiet for this long (capped at half the idle timeout)")
	fs.DurationVar(&silence, "agent-silence-timeout", server.DefaultAgentSilenceTimeout, "mark an agent unresponsive (skipped by routing) after this long without a packet from it; at least twice --quic-keep-alive")
	fs.DurationVar(&hedge, "hedge-delay", server.DefaultHedgeDelay, "start the next agent candidate in parallel when the one asked shows no sign of life for this long (negative: never)")
	fs.BoolVar(&flagCfg.AcceptAnyRoutes, "accept-any-routes", false, "accept every route agents advertise, approved or not (labs only: any agent can capture another's sessions)")
	fs.IntVar(&flagCfg.MaxRoutesPerAgent, "max-routes-per-agent", 1024, "subnets plus domains allowed in one route advertisement; a longer one is refused")
	fs.IntVar(&flagCfg.MaxRouteChangesPerMinute, "max-route-changes-per-minute", 30, "route changes allowed per agent per minute; more are ignored until the minute has passed")
	if err := parse(fs, args); err != nil {
		return err
	}

	var cfg server.Config
	if configFile != "" {
		var err error
		if cfg, err = server.LoadConfigFile(configFile); err != nil {
			return err
		}
	}
	if v := os.Getenv(storeEnv); v != "" {
		cfg.Store = v
	}
	// Flags given on the command line override the environment and the file.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "data-dir":
			cfg.DataDir = flagCfg.DataDir
		case "store":
			cfg.Store = flagCfg.Store
		case "seal-key-file":
			cfg.SealKeyFile = flagCfg.SealKeyFile
		case "listen":
			cfg.Listen = flagCfg.Listen
		case "quic-listen":
			cfg.QUICListen = flagCfg.QUICListen
		case "metrics-listen":
			cfg.MetricsListen = flagCfg.MetricsListen
		case "hostname":
			cfg.Hostnames = hostnames
		case "public-url":
			cfg.PublicURL = flagCfg.PublicURL
		case "public-quic-endpoint":
			cfg.PublicQUICEndpoint = flagCfg.PublicQUICEndpoint
		case "replica-name":
			cfg.ReplicaName = flagCfg.ReplicaName
		case "replica-quic-endpoint":
			cfg.ReplicaQUICEndpoint = flagCfg.ReplicaQUICEndpoint
		case "replica-api-endpoint":
			cfg.ReplicaAPIEndpoint = flagCfg.ReplicaAPIEndpoint
		case "shutdown-timeout":
			cfg.ShutdownTimeout = server.Duration(shutdown)
		case "provisioner-public-key":
			cfg.ProvisionerPublicKey = flagCfg.ProvisionerPublicKey
		case "provisioner-audience":
			cfg.ProvisionerAudience = flagCfg.ProvisionerAudience
		case "enrollment-token-leeway":
			d := server.Duration(leeway)
			cfg.EnrollmentTokenLeeway = &d
		case "enroll-rate-limit":
			cfg.EnrollRateLimit = flagCfg.EnrollRateLimit
		case "agent-cert-validity":
			cfg.AgentCertValidity = server.Duration(certValid)
		case "max-sessions-per-agent":
			cfg.MaxSessionsPerAgent = flagCfg.MaxSessionsPerAgent
		case "allow-direct":
			cfg.AllowDirect = direct
		case "direct-subnets":
			cfg.DirectSubnets = directNets
		case "direct-domains":
			cfg.DirectDomains = directDoms
		case "trusted-proxies":
			cfg.TrustedProxies = proxies
		case "proxy-protocol":
			cfg.ProxyProtocol = flagCfg.ProxyProtocol
		case "quic-idle-timeout":
			cfg.QUICIdleTimeout = server.Duration(idle)
		case "quic-keep-alive":
			cfg.QUICKeepAlive = server.Duration(keepAlive)
		case "agent-silence-timeout":
			cfg.AgentSilenceTimeout = server.Duration(silence)
		case "hedge-delay":
			cfg.HedgeDelay = server.Duration(hedge)
		case "accept-any-routes":
			cfg.AcceptAnyRoutes = flagCfg.AcceptAnyRoutes
		case "max-routes-per-agent":
			cfg.MaxRoutesPerAgent = flagCfg.MaxRoutesPerAgent
		case "max-route-changes-per-minute":
			cfg.MaxRouteChangesPerMinute = flagCfg.MaxRouteChangesPerMinute
		}
	})
	if secretFile != "" {
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return fmt.Errorf("enrollment secret: %w", err)
		}
		// server.Config checks the length, for the file and the JSON config alike.
		cfg.EnrollmentSecret = strings.TrimSpace(string(b))
	}
	if cfg.DataDir == "" {
		return fmt.Errorf("%w: --data-dir is required (or data_dir in --config)", errUsage)
	}

	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	gw, err := server.New(cfg, log)
	if err != nil {
		return err
	}
	defer gw.Close()
	stopPprof, err := pf.start(log)
	if err != nil {
		return err
	}
	defer stopPprof()
	if f := gw.FirstAdminKeyFile(); f != "" {
		// The path only: stdout ends up in journald and container logs.
		q := shellQuote(f)
		fmt.Fprintf(stdout, "First admin API key written to %s (0600). Use it with --api-key-file %s,\nor as -H \"Authorization: Bearer $(cat %s)\".\n", q, q, q)
	}
	return gw.Run(ctx)
}

// storeEnv is the environment variable that gives --store, so that a DSN
// with a password stays off the command line.
const storeEnv = "OUTPOST_STORE"

const sealKeyUsage = "file of the key that seals the CA, server key and token key in a PostgreSQL store (required with one; the same on every gateway; see gateway seal-key create)"

const storeUsage = "the gateway's database: a postgres:// URL, or empty for the SQLite file in --data-dir (default $" + storeEnv + ")"

func runAPIKey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const synopsis = "gateway apikey create|list|revoke (--data-dir DIR | --store postgres://…) [flags]"
	if len(args) == 0 {
		fmt.Fprintf(stderr, "Usage: outpost %s\n", synopsis)
		return fmt.Errorf("%w: apikey needs a subcommand: create, list or revoke", errUsage)
	}
	sub := args[0]
	fs := newFlagSet("gateway apikey "+sub, stderr, synopsis)
	var (
		dataDir, storeDSN, name, id string
		scopes                      stringList
	)
	fs.StringVar(&dataDir, "data-dir", "", "the gateway's data directory (required unless --store names a PostgreSQL database)")
	fs.StringVar(&storeDSN, "store", "", storeUsage)
	switch sub {
	case "create":
		fs.StringVar(&name, "name", "", "a name for the key (required)")
		fs.Var(&scopes, "scopes", "scopes, comma-separated: *, enroll.create, agents.read, agents.write, routes.read, sessions.create, sessions.read, metrics.read (required)")
	case "revoke":
		fs.StringVar(&id, "id", "", "id of the key to revoke (required; see apikey list)")
	case "list":
	default:
		return fmt.Errorf("%w: unknown apikey subcommand %q (want create, list or revoke)", errUsage, sub)
	}
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if storeDSN == "" {
		storeDSN = os.Getenv(storeEnv)
	}
	if dataDir == "" && storeDSN == "" {
		return fmt.Errorf("%w: --data-dir (or --store) is required", errUsage)
	}
	admin, err := server.OpenKeyAdmin(ctx, dataDir, storeDSN, nil)
	if err != nil {
		return err
	}
	defer admin.Close()
	switch sub {
	case "create":
		if name == "" || len(scopes) == 0 {
			return fmt.Errorf("%w: --name and --scopes are required", errUsage)
		}
		secret, err := admin.Create(ctx, name, scopes)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, secret)
	case "revoke":
		if id == "" {
			return fmt.Errorf("%w: --id is required", errUsage)
		}
		if err := admin.Revoke(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s\n", id)
	case "list":
		keys, err := admin.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tSCOPES\tCREATED\tREVOKED")
		for _, k := range keys {
			revoked := "-"
			if k.RevokedAt != nil {
				revoked = k.RevokedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, strings.Join(k.Scopes, ","), k.CreatedAt.UTC().Format(time.RFC3339), revoked)
		}
		return tw.Flush()
	}
	return nil
}

// runSealKey runs "gateway seal-key create --out FILE".
func runSealKey(args []string, stdout, stderr io.Writer) error {
	const synopsis = "gateway seal-key create --out FILE"
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprintf(stderr, "Usage: outpost %s\n", synopsis)
		return fmt.Errorf("%w: seal-key needs the subcommand create", errUsage)
	}
	fs := newFlagSet("gateway seal-key create", stderr, synopsis)
	var out string
	fs.StringVar(&out, "out", "", "file to create (mode 0600; an existing file is never replaced) (required)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	id, err := server.CreateSealKeyFile(out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Seal key %s written to %s (0600). Give every gateway on the database this file (--seal-key-file),\nand keep a copy somewhere safe: without it the CA and keys in the store cannot be opened.\n", id, shellQuote(out))
	return nil
}

// runSecretsTransfer runs "gateway export-secrets" and "gateway
// import-secrets".
func runSecretsTransfer(ctx context.Context, verb string, args []string, stdout, stderr io.Writer) error {
	synopsis := "gateway export-secrets --data-dir DIR --seal-key-file F --out FILE [--secrets-only]"
	if verb == "import" {
		synopsis = "gateway import-secrets --store postgres://… --seal-key-file F --in FILE [--secrets-only]"
	}
	fs := newFlagSet("gateway "+verb+"-secrets", stderr, synopsis)
	var (
		lf                          logFlags
		dataDir, dsn, keyFile, path string
		secretsOnly                 bool
	)
	lf.register(fs)
	fs.StringVar(&dsn, "store", "", storeUsage)
	fs.StringVar(&keyFile, "seal-key-file", "", "the seal key the bundle is sealed under: the one the gateways on PostgreSQL are given (required)")
	if verb == "export" {
		fs.StringVar(&dataDir, "data-dir", "", "the gateway's data directory (required unless --store names a PostgreSQL database)")
		fs.StringVar(&path, "out", "", "the bundle file to create, mode 0600 (required)")
		fs.BoolVar(&secretsOnly, "secrets-only", false, "leave the store's rows (API keys, agents, tokens, audit) out of the bundle")
	} else {
		fs.StringVar(&path, "in", "", "the bundle file export-secrets wrote (required)")
		fs.BoolVar(&secretsOnly, "secrets-only", false, "import the secrets only, not the bundle's rows")
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if dsn == "" {
		dsn = os.Getenv(storeEnv)
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	var sum server.TransferSummary
	switch verb {
	case "export":
		if keyFile == "" || path == "" || dataDir == "" && dsn == "" {
			return fmt.Errorf("%w: --seal-key-file, --out and --data-dir (or --store) are required", errUsage)
		}
		sum, err = server.ExportSecrets(ctx, server.ExportOptions{DataDir: dataDir, Store: dsn, SealKeyFile: keyFile, Out: path, SecretsOnly: secretsOnly}, log)
	default:
		if keyFile == "" || path == "" || dsn == "" {
			return fmt.Errorf("%w: --store, --seal-key-file and --in are required", errUsage)
		}
		sum, err = server.ImportSecrets(ctx, server.ImportOptions{Store: dsn, SealKeyFile: keyFile, In: path, SecretsOnly: secretsOnly}, log)
	}
	if err != nil {
		return err
	}
	switch {
	case verb == "export":
		fmt.Fprintf(stdout, "Exported to %s, sealed under seal key %s:\n", shellQuote(path), sum.SealKeyID)
	case sum.SecretsStored:
		fmt.Fprintf(stdout, "Imported into the store, under seal key %s:\n", sum.SealKeyID)
	default:
		fmt.Fprintf(stdout, "The store already held these secrets (seal key %s):\n", sum.SealKeyID)
	}
	fmt.Fprintf(stdout, "  CA          ca_spki_sha256 %s\n  server key  server_spki_sha256 %s\n  token key\n", sum.CASPKISHA256, sum.ServerSPKISHA256)
	if sum.Rows == nil {
		fmt.Fprintln(stdout, "  no store rows")
		return nil
	}
	tables := make([]string, 0, len(sum.Rows))
	for t := range sum.Rows {
		tables = append(tables, t)
	}
	slices.Sort(tables)
	for _, t := range tables {
		fmt.Fprintf(stdout, "  %-27s %d rows\n", t, sum.Rows[t])
	}
	return nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/client"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server"
)

func runConnect(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("connect", stderr, "connect --gateway URL (--token-file F | --token -) (--listen 127.0.0.1:PORT | --stdio) [--ca-file F | --ca-pin HEX]")
	var (
		gateway, tok, tokFile, listen, caFile, caPin string
		stdio                                        bool
		replay                                       bool
		lf                                           logFlags
		pf                                           pprofFlag
	)
	fs.StringVar(&gateway, "gateway", "", "gateway URL: https://host:port, or the wss:// connect URL (required)")
	fs.StringVar(&tokFile, "token-file", "", "file holding the session token (as session create --token-file writes it)")
	fs.StringVar(&tok, "token", "", "session token, or - to read it from stdin (not with --stdio); a token given here shows in ps")
	fs.StringVar(&listen, "listen", "", "local TCP address to serve, e.g. 127.0.0.1:2222")
	fs.BoolVar(&stdio, "stdio", false, "bridge stdin/stdout instead (for ssh -o ProxyCommand)")
	fs.StringVar(&caFile, "ca-file", "", "gateway CA certificate (PEM) to trust")
	fs.StringVar(&caPin, "ca-pin", "", "SHA-256 of the gateway CA's public key (hex), as CreateSession returns it")
	fs.BoolVar(&replay, "replay-on-loss", false, "when the gateway connection is lost before a session's first answer, open it again and send the first bytes again (up to 64 KiB; the target may get them twice: only for protocols where that is harmless; reusable tokens)")
	lf.register(fs)
	pf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case gateway == "" || tok == "" && tokFile == "":
		return fmt.Errorf("%w: --gateway and --token-file (or --token -) are required", errUsage)
	case tok != "" && tokFile != "":
		return fmt.Errorf("%w: give --token or --token-file, not both", errUsage)
	case stdio == (listen != ""):
		return fmt.Errorf("%w: give exactly one of --listen and --stdio", errUsage)
	case stdio && tok == "-":
		return fmt.Errorf("%w: --token - reads stdin, which --stdio carries: use --token-file", errUsage)
	}
	var err error
	if tokFile != "" {
		tok, err = readSecretFile(tokFile, "token file")
	} else {
		tok, err = readToken(tok, stdin)
	}
	if err != nil {
		return err
	}
	var ca []byte
	if caFile != "" {
		if ca, err = os.ReadFile(caFile); err != nil {
			return fmt.Errorf("ca file: %w", err)
		}
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	stopPprof, err := pf.start(log)
	if err != nil {
		return err
	}
	defer stopPprof()
	opts := client.Config{Gateway: gateway, Token: tok, CAPEM: ca, CAPin: caPin, ReplayOnLoss: replay, Logger: log}
	var reported atomic.Bool
	if stdio {
		// Print the reason while ssh still reads our stderr, before stdout
		// closes (see OnFailure).
		opts.OnFailure = func(reason string) {
			fmt.Fprintf(stderr, "outpost: session failed: %s\n", reason)
			reported.Store(true)
		}
	}
	c, err := client.New(opts)
	if err != nil {
		return err
	}
	defer c.Close()
	if stdio {
		err := c.Stdio(ctx, stdin, stdout)
		if err != nil && reported.Load() {
			return fmt.Errorf("%w: %v", errReported, err)
		}
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if c.SingleUse() {
		fmt.Fprintf(stderr, "listening on %s; the token is single-use: serving one connection\n", ln.Addr())
	} else {
		fmt.Fprintf(stderr, "listening on %s; Ctrl-C to stop\n", ln.Addr())
	}
	return c.Listen(ctx, ln)
}

func runSessionCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("session create", stderr, "session create --target host:port --api-key-file F [--token-file F [--force]] [--ca-file F | --ca-pin HEX] [--gateway URL] [--agent ID] [--reusable] [--ttl D]")
	var (
		af              adminFlags
		target, agentID string
		out             tokenOutput
		reusable        bool
		ttl             time.Duration
	)
	af.register(fs)
	fs.StringVar(&target, "target", "", "host:port to reach (IPv6 as [addr]:port) (required)")
	fs.StringVar(&agentID, "agent", "", "agent id that must carry the session (default: chosen by routes)")
	fs.BoolVar(&reusable, "reusable", false, "let the token open any number of sessions until it expires")
	fs.DurationVar(&ttl, "ttl", server.DefaultSessionTokenTTL, "how long the token stays valid")
	out.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if target == "" {
		return fmt.Errorf("%w: --target is required", errUsage)
	}
	if err := out.check(); err != nil {
		return err
	}
	conn, err := af.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := outpostv1.NewRouteResolveServiceClient(conn).CreateSession(ctx, &outpostv1.CreateSessionRequest{
		Target: target, AgentId: agentID, Reusable: reusable, Ttl: durationpb.New(ttl),
	})
	if err != nil {
		return af.callErr(ctx, "create session", err)
	}
	// Only the token goes to stdout (or the file); everything else is
	// for the user, on stderr, and never holds the token.
	if err := out.write(stdout, resp.GetToken()); err != nil {
		return err
	}
	printConnectHints(stderr, resp, target, reusable, out.file, args)
	return nil
}

// printConnectHints tells how to use a session token just minted, with
// commands that work as printed and never carry the token themselves: it is
// read from tokFile or, when it went to stdout, from a pipe (args are the
// session create arguments, to repeat).
func printConnectHints(w io.Writer, resp *outpostv1.CreateSessionResponse, target string, reusable bool, tokFile string, args []string) {
	gw := strings.TrimSuffix(resp.GetConnectUrl(), "/v1/connect")
	gw = "https" + strings.TrimPrefix(gw, "wss")
	self := selfCommand()
	connect := self + " " + shellJoin("connect", "--gateway", gw, "--ca-pin", resp.GetGatewayCaSpkiSha256())
	use := "single-use: it serves one connection"
	if reusable {
		use = "reusable until it expires"
	}
	fmt.Fprintf(w, "session %s to %s, token valid until %s (%s)\n", resp.GetSessionId(), target,
		resp.GetExpiresAt().AsTime().Format(time.RFC3339), use)
	if tokFile == "" {
		fmt.Fprintf(w, "The token is on stdout. Give it to connect on stdin (--token -) or in a file\n"+
			"(--token-file), not as --token: arguments show in ps. To mint one and connect\nin one step:\n  %s | %s\n"+
			"With --token-file FILE this prints ready-made connect and ssh lines.\n",
			self+" "+shellJoin(append([]string{"session", "create"}, args...)...),
			connect+" "+shellJoin("--token", "-", "--listen", "127.0.0.1:10022"))
		return
	}
	fmt.Fprintf(w, "The token is in %s (0600). Connect with:\n  %s\n", shellQuote(tokFile),
		connect+" "+shellJoin("--token-file", tokFile, "--listen", "127.0.0.1:10022"))
	proxy := connect + " " + shellJoin("--token-file", tokFile, "--stdio")
	fmt.Fprintf(w, "or, for an ssh server, as its ProxyCommand:\n  ssh -o %s %s\n", shellQuote("ProxyCommand="+proxy), shellQuote(hostOf(target)))
}

func hostOf(target string) string {
	h, _, err := net.SplitHostPort(target)
	if err != nil {
		return target
	}
	return h
}

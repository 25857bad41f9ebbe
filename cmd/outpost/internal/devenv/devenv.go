// Package devenv runs a complete Outpost on loopback for trying it out
// ("outpost dev"): a gateway, an agent enrolled through the real enrollment
// path, and a sample web server standing in for a private target.
package devenv

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"

	"github.com/outposthq/outpost/agent"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/apiclient"
)

// Defaults of Config: the gateway's default ports, on loopback.
const (
	DefaultListen     = "127.0.0.1" + server.DefaultListen
	DefaultQUICListen = "127.0.0.1" + server.DefaultQUICListen
)

// Config configures the environment Run starts.
type Config struct {
	// DataDir keeps the gateway's and the agent's state; if empty a
	// temporary directory is used and removed at the end.
	DataDir string
	// Listen and QUICListen are the gateway's addresses (loopback). If
	// empty, DefaultListen and DefaultQUICListen.
	Listen, QUICListen string
	// Command is how the printed instructions invoke outpost, e.g.
	// "go run ./cmd/outpost".
	Command string
	Logger  hclog.Logger
	// Ready, if set, is called with the environment once everything is up.
	Ready func(Env)
}

// Env describes a running environment.
type Env struct {
	DataDir, GatewayURL, CAFile, AdminKeyFile string
	AgentID, AgentName, Target                string
	// TokenFile is where the printed "session create" writes the session
	// token (0600), inside DataDir; Run removes it when it ends.
	TokenFile string
	// ConnectListen is the local address the printed "connect" serves,
	// a loopback port that was free when Run started.
	ConnectListen string
	// ConsoleURL is the gateway's web console; one signs in with the key
	// in AdminKeyFile.
	ConsoleURL string
}

// tokenFileName is the session token file in the data directory.
const tokenFileName = "session.token"

// Run starts everything, prints what to try to out, and runs until ctx ends.
// Ending ctx (Ctrl-C) is how the demo stops: Run then returns nil, whether
// it was up or still starting, once everything has stopped and what it
// wrote is removed (the temporary data directory, or the session token
// file in a kept one).
func Run(ctx context.Context, o Config, out io.Writer) error {
	err := run(ctx, o, out)
	if ctx.Err() != nil {
		// Whatever failed while stopping failed because of the stop.
		return nil
	}
	return err
}

func run(ctx context.Context, o Config, out io.Writer) (err error) {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.QUICListen == "" {
		o.QUICListen = DefaultQUICListen
	}
	if o.Command == "" {
		o.Command = "outpost"
	}
	dir := o.DataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "outpost-dev-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	gwDir, agentDir := filepath.Join(dir, "gateway"), filepath.Join(dir, "agent")
	// The printed commands put a session token here; it goes with the demo.
	tokenFile := filepath.Join(dir, tokenFileName)
	defer os.Remove(tokenFile)

	gw, err := server.New(server.Config{DataDir: gwDir, Listen: o.Listen, QUICListen: o.QUICListen}, o.Logger.Named("gateway"))
	if err != nil {
		return fmt.Errorf("dev: gateway: %w (is another outpost dev running? use --listen/--quic-listen)", err)
	}
	defer gw.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return gw.Run(ctx) })

	target, stopTarget, err := sampleTarget()
	if err != nil {
		cancel()
		return errors.Join(err, eg.Wait())
	}
	defer stopTarget()

	listen, err := freeLoopbackAddr()
	if err != nil {
		cancel()
		return errors.Join(err, eg.Wait())
	}
	env := Env{
		DataDir:       dir,
		GatewayURL:    "https://localhost:" + port(gw.Addr()),
		CAFile:        filepath.Join(gwDir, "ca.pem"),
		AdminKeyFile:  filepath.Join(gwDir, "admin.key"),
		Target:        target,
		TokenFile:     tokenFile,
		ConnectListen: listen,
		ConsoleURL:    "https://localhost:" + port(gw.Addr()) + server.ConsolePath,
	}
	id, name, err := enrollOnce(ctx, env, agentDir, o.Logger)
	if err != nil {
		cancel()
		return errors.Join(err, eg.Wait())
	}
	env.AgentID, env.AgentName = id, name
	runner, err := agent.NewRunner(agent.RunnerConfig{ConfigDir: agentDir, DrainTimeout: 5 * time.Second}, o.Logger.Named("agent"))
	if err != nil {
		cancel()
		return errors.Join(err, eg.Wait())
	}
	eg.Go(func() error { return runner.Run(ctx) })
	if err := waitConnected(ctx, runner); err != nil {
		cancel()
		return errors.Join(err, eg.Wait())
	}
	printHelp(out, env, o.Command)
	if o.Ready != nil {
		o.Ready(env)
	}
	return eg.Wait()
}

// enrollOnce enrolls the dev agent unless agentDir holds an identity already.
func enrollOnce(ctx context.Context, env Env, agentDir string, log hclog.Logger) (string, string, error) {
	if id, ok := agent.Enrolled(agentDir); ok {
		return id, "dev-agent", nil
	}
	key, err := apiclient.ReadKeyFile(env.AdminKeyFile)
	if err != nil {
		return "", "", err
	}
	ca, err := os.ReadFile(env.CAFile)
	if err != nil {
		return "", "", err
	}
	conn, err := apiclient.Dial(apiclient.Config{Gateway: env.GatewayURL, APIKey: key, CAPEM: ca})
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tok, err := outpostv1.NewEnrollmentServiceClient(conn).CreateEnrollmentToken(cctx, &outpostv1.CreateEnrollmentTokenRequest{
		AgentName: "dev-agent",
		// The sample target is on loopback, which an agent reaches only
		// when a subnet names it explicitly.
		Routes: &outpostv1.RouteSet{Subnets: []string{"127.0.0.0/8"}},
	})
	if err != nil {
		return "", "", fmt.Errorf("dev: enrollment token: %w", err)
	}
	res, err := agent.Enroll(cctx, agent.EnrollOptions{Token: tok.GetToken(), ConfigDir: agentDir}, log)
	if err != nil {
		return "", "", fmt.Errorf("dev: enroll: %w", err)
	}
	return res.AgentID, res.AgentName, nil
}

func waitConnected(ctx context.Context, r *agent.Runner) error {
	deadline := time.Now().Add(30 * time.Second)
	for !r.Connected() {
		if time.Now().After(deadline) {
			return errors.New("dev: the agent did not connect within 30 s (see the log)")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// sampleTarget serves a small web page on a loopback port, standing in for a
// machine in a private network.
func sampleTarget() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("dev: sample target: %w", err)
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintf(w, "Hello from the sample target at %s.\nYou reached it through the Outpost agent; you asked for %s.\n",
				ln.Addr(), html.EscapeString(r.URL.Path))
		}),
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		wg.Wait()
	}, nil
}

// freeLoopbackAddr returns a loopback address whose port is free now, for
// the printed connect command to listen on.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("dev: pick a local port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// printHelp prints what to try. The commands never hold a secret: the
// admin key and the session token are read from their files.
func printHelp(out io.Writer, e Env, cmd string) {
	auth := fmt.Sprintf(`-H "Authorization: Bearer $(cat %s)"`, e.AdminKeyFile)
	host := strings.TrimPrefix(e.GatewayURL, "https://")
	fmt.Fprintf(out, `
Outpost is running on loopback:
  gateway  %s   (state in %s)
  agent    %s (%s), online, advertising 127.0.0.0/8
  target   %s   (a sample web page, reached only through the agent below)

The console: open %s and sign in with the API key in
  %s
(the gateway's certificate is from its own CA, %s: trust it, or accept the browser's warning)

Try, in another terminal:

  # the agents, over REST and gRPC
  curl --cacert %s %s %s/v1/agents
  grpcurl -cacert %s -H "authorization: Bearer $(cat %s)" %s list

  # how the gateway would route to the target
  curl --cacert %s %s %s/v1/routes:resolve -d '{"target":"%s"}'

  # a session token (in %s, 0600, removed when this stops),
  # then a local port that leads to the target through the agent
  %s session create --gateway %s --api-key-file %s --ca-file %s --target %s --token-file %s --force
  %s connect --gateway %s --ca-file %s --token-file %s --listen %s &
  curl http://%s/

  # the agents, and the sessions so far (the one above with its bytes and key id)
  %s agents --gateway %s --api-key-file %s --ca-file %s
  %s sessions --gateway %s --api-key-file %s --ca-file %s

Ctrl-C stops everything.
`, e.GatewayURL, e.DataDir, e.AgentName, e.AgentID, e.Target,
		e.ConsoleURL, e.AdminKeyFile, e.CAFile,
		e.CAFile, auth, e.GatewayURL,
		e.CAFile, e.AdminKeyFile, host,
		e.CAFile, auth, e.GatewayURL, e.Target,
		e.TokenFile,
		cmd, e.GatewayURL, e.AdminKeyFile, e.CAFile, e.Target, e.TokenFile,
		cmd, e.GatewayURL, e.CAFile, e.TokenFile, e.ConnectListen,
		e.ConnectListen,
		cmd, e.GatewayURL, e.AdminKeyFile, e.CAFile,
		cmd, e.GatewayURL, e.AdminKeyFile, e.CAFile)
}

func port(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

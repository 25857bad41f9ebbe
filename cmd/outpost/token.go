package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/apiclient"
)

// adminFlags locate the gateway API and the key for admin commands.
type adminFlags struct {
	gateway, keyFile, caFile, caPin string
	cfg                             apiclient.Config // what dial used
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.gateway, "gateway", server.DefaultAPIURL, "gateway API URL")
	fs.StringVar(&a.keyFile, "api-key-file", "", "file holding an API key (required; e.g. <data-dir>/admin.key)")
	fs.StringVar(&a.caFile, "ca-file", "", "gateway CA certificate to trust (e.g. <data-dir>/ca.pem; default: system roots)")
	fs.StringVar(&a.caPin, "ca-pin", "", "trust the gateway CA whose key has this SHA-256 (ca_spki_sha256 in the gateway's log) instead of --ca-file")
}

func (a *adminFlags) dial() (*apiclientConn, error) {
	if a.keyFile == "" {
		return nil, fmt.Errorf("%w: --api-key-file is required", errUsage)
	}
	key, err := apiclient.ReadKeyFile(a.keyFile)
	if err != nil {
		return nil, err
	}
	var ca []byte
	if a.caFile != "" {
		if ca, err = os.ReadFile(a.caFile); err != nil {
			return nil, fmt.Errorf("ca file: %w", err)
		}
	}
	a.cfg = apiclient.Config{Gateway: a.gateway, APIKey: key, CAPEM: ca, CAPin: a.caPin}
	conn, err := apiclient.Dial(a.cfg)
	if err != nil {
		return nil, err
	}
	return &apiclientConn{conn}, nil
}

type apiclientConn struct{ *grpc.ClientConn }

// checkTLSTimeout bounds the handshake that explains an unreachable
// gateway.
const checkTLSTimeout = 10 * time.Second

// callErr turns a gRPC status into one readable line. When the gateway
// could not be reached, one more TLS handshake finds out why, so that the
// line says what to do rather than quote the TLS stack.
func (a *adminFlags) callErr(ctx context.Context, what string, err error) error {
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || a.cfg.Gateway == "" {
		return fmt.Errorf("%s: %s (%s)", what, st.Message(), st.Code())
	}
	ctx, cancel := context.WithTimeout(ctx, checkTLSTimeout)
	defer cancel()
	terr := apiclient.CheckTLS(ctx, a.cfg)
	var (
		unknownCA x509.UnknownAuthorityError
		badHost   x509.HostnameError
		opErr     *net.OpError
	)
	switch {
	case errors.As(terr, &unknownCA) && a.caFile == "":
		return fmt.Errorf("%s: the gateway %s has a certificate from a CA this machine does not trust "+
			"(x509: certificate signed by unknown authority): give its CA with --ca-file, the ca.pem in the gateway's data directory", what, a.gateway)
	case errors.As(terr, &unknownCA):
		return fmt.Errorf("%s: the gateway %s has a certificate that %s did not sign: is it the ca.pem of this gateway's data directory?", what, a.gateway, a.caFile)
	case errors.As(terr, &badHost):
		return fmt.Errorf("%s: the gateway's certificate does not cover %q (%v): use a --gateway URL with a name or address of its --hostname list", what, badHost.Host, terr)
	case errors.As(terr, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("%s: cannot reach the gateway at %s (%v): is it running, and is that its --listen address?", what, a.gateway, opErr.Err)
	}
	return fmt.Errorf("%s: %s (%s)", what, st.Message(), st.Code())
}

func runTokenCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gateway token create", stderr, "gateway token create --api-key-file F [--token-file F [--force]] [--ca-file F | --ca-pin HEX] [--gateway URL] [--name N] [--ttl D] [--subnets CSV] [--domains CSV]")
	var (
		af               adminFlags
		name             string
		out              tokenOutput
		ttl              time.Duration
		subnets, domains stringList
	)
	af.register(fs)
	fs.StringVar(&name, "name", "", "agent name the token is for (optional)")
	fs.DurationVar(&ttl, "ttl", server.DefaultEnrollmentTokenTTL, "how long the token stays valid, plus the gateway's leeway (see below)")
	flagsUsage := fs.Usage
	fs.Usage = func() {
		flagsUsage()
		fmt.Fprintf(stderr, "\nThe gateway accepts an enrollment token for its enrollment_token_leeway\n"+
			"(--enrollment-token-leeway; default %s, 0 to %s) after it expires, to allow\n"+
			"for clock skew: unless that is 0, a --ttl 1s token still enrolls for about %s.\n",
			shortDuration(server.DefaultEnrollmentTokenLeeway), shortDuration(server.MaxEnrollmentTokenLeeway), shortDuration(server.DefaultEnrollmentTokenLeeway))
	}
	fs.Var(&subnets, "subnets", "IPv4 subnets pre-approved for the agent, comma-separated")
	fs.Var(&domains, "domains", "domains pre-approved for the agent, comma-separated")
	out.register(fs)
	if err := parse(fs, args); err != nil {
		return err
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
	req := &outpostv1.CreateEnrollmentTokenRequest{AgentName: name, Ttl: durationpb.New(ttl)}
	if len(subnets)+len(domains) > 0 {
		req.Routes = &outpostv1.RouteSet{Subnets: subnets, Domains: domains}
	}
	resp, err := outpostv1.NewEnrollmentServiceClient(conn).CreateEnrollmentToken(ctx, req)
	if err != nil {
		return af.callErr(ctx, "create enrollment token", err)
	}
	if err := out.write(stdout, resp.GetToken()); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "token %s expires at %s\n", resp.GetTokenId(), resp.GetExpiresAt().AsTime().Format(time.RFC3339))
	return nil
}

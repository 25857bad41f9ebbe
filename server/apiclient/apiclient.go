// Package apiclient dials the gateway's management API over gRPC with TLS pinned
// to the gateway CA and an API key attached to every call, for the admin
// commands of the outpost binary and for tests.
package apiclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/outposthq/outpost/dataplane/transport"
)

// Config says where the gateway is and how to authenticate; Dial builds a
// connection from it.
type Config struct {
	// Gateway is the API address: https://host:port or host:port. Required.
	Gateway string
	// APIKey is sent as "authorization: Bearer <key>". Required.
	APIKey string
	// CAPEM is the gateway CA certificate (PEM). If empty, the system roots are used.
	CAPEM []byte
	// CAPin, if set, trusts exactly the CA whose key has this SHA-256
	// (64 hex digits, as the gateway logs ca_spki_sha256) instead of CAPEM
	// or the system roots: the gateway sends that CA after its certificate
	// (transport.VerifyCAPin). A PostgreSQL-backed gateway keeps no ca.pem
	// in its data directory; its pin is in its log.
	CAPin string
}

// Dial returns a client connection; it connects lazily on the first call.
func Dial(o Config) (*grpc.ClientConn, error) {
	addr, host, err := target(o.Gateway)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(o.APIKey) == "" {
		return nil, errors.New("apiclient: an API key is required")
	}
	tc, err := tlsConfig(o, host)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithPerRPCCredentials(bearer(strings.TrimSpace(o.APIKey))),
	)
}

// tlsConfig trusts o.CAPEM, or the system roots when it is empty.
func tlsConfig(o Config, host string) (*tls.Config, error) {
	if o.CAPin != "" {
		if len(o.CAPEM) > 0 {
			return nil, errors.New("apiclient: give a CA file or a CA pin, not both")
		}
		pin, err := transport.ParsePin(o.CAPin)
		if err != nil {
			return nil, fmt.Errorf("apiclient: CA pin: %w", err)
		}
		return transport.CAPinnedTLS(host, pin), nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if len(o.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CAPEM) {
			return nil, errors.New("apiclient: the CA file holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// CheckTLS connects to the gateway once with the TLS settings Dial uses and
// returns what failed, or nil when the handshake succeeds. It explains a
// call that failed as Unavailable, whose status carries only text: the
// error keeps its type, so errors.As finds an x509.UnknownAuthorityError
// (the CA is not trusted: no or the wrong CA file), an
// x509.HostnameError (the certificate does not cover the name dialed) or
// a net.OpError (nothing answers). It returns when the handshake ends or
// ctx does.
func CheckTLS(ctx context.Context, o Config) error {
	addr, host, err := target(o.Gateway)
	if err != nil {
		return err
	}
	tc, err := tlsConfig(o, host)
	if err != nil {
		return err
	}
	tc.NextProtos = []string{"h2"}
	conn, err := (&tls.Dialer{Config: tc}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// ReadKeyFile reads an API key from a file, trimming white space around it.
// A file that cannot hold one — empty, a PEM block (a certificate or key
// given by mistake), several lines, or characters a bearer cannot carry —
// is refused with an error that says what the file holds instead.
func ReadKeyFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("api key: %w", err)
	}
	k := strings.TrimSpace(string(b))
	switch {
	case k == "":
		return "", fmt.Errorf("api key: %s is empty", path)
	case strings.HasPrefix(k, "-----BEGIN"):
		return "", fmt.Errorf("api key: %s holds a PEM block (a certificate or key), not an API key: "+
			"give the file with the key, such as the admin.key the gateway wrote in its data directory", path)
	case strings.ContainsAny(k, "\r\n"):
		return "", fmt.Errorf("api key: %s holds several lines; an API key file holds the key alone, on one line", path)
	}
	for _, r := range k {
		if r <= ' ' || r > '~' {
			return "", fmt.Errorf("api key: %s holds a character an API key cannot have (%q); an API key file holds the key alone", path, r)
		}
	}
	return k, nil
}

// target turns "https://host:port" or "host:port" into a dial address and TLS name.
func target(gw string) (addr, host string, err error) {
	if strings.Contains(gw, "://") {
		u, err := url.Parse(gw)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return "", "", fmt.Errorf("apiclient: gateway %q: want https://host:port", gw)
		}
		gw = u.Host
		if u.Port() == "" {
			gw = net.JoinHostPort(u.Hostname(), "443")
		}
	}
	host, _, err = net.SplitHostPort(gw)
	if err != nil {
		return "", "", fmt.Errorf("apiclient: gateway %q: %v", gw, err)
	}
	return gw, host, nil
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

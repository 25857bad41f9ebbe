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
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if len(o.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CAPEM) {
			return nil, errors.New("apiclient: the CA file holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithPerRPCCredentials(bearer(strings.TrimSpace(o.APIKey))),
	)
}

// ReadKeyFile reads an API key from a file, trimming white space.
func ReadKeyFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("api key: %w", err)
	}
	k := strings.TrimSpace(string(b))
	if k == "" {
		return "", fmt.Errorf("api key: %s is empty", path)
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

package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/agent/internal/config"
	"github.com/outposthq/outpost/agent/internal/detect"
	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/reach"
)

// ErrNotEnrolled is returned by Run (wrapped in a *PermanentError) when the
// config directory holds no enrolled identity.
var ErrNotEnrolled = errors.New("agent is not enrolled")

// settings is what one connection attempt reads from the config directory.
type settings struct {
	endpoint string // host:port
	host     string // endpoint host without brackets (SNI and verification name)
	agentID  string
	tls      *tls.Config
	cert     *x509.Certificate // leaf of tls.Certificates[0]
	// certPath, keyPath and caPath are the resolved paths of the agent
	// certificate, its key and the gateway CA.
	certPath, keyPath, caPath string
	// resetKey, derived from the agent's key, makes the agent's stateless
	// reset tokens: a restarted agent can reset the gateway's stale
	// connection.
	resetKey *quic.StatelessResetKey
	routes   reach.Routes
	domains  []dataplane.DomainRoute
	// detected is the auto-detected domain ("" if none); detectNote says why
	// detection was off or found nothing.
	detected, detectNote string
}

// loadSettings reads agent.json and the files it names, and detects the
// host's domain with det when no route (subnet or domain) is configured and
// detection is on. Every error is a *PermanentError saying what to fix: the
// files do not change by themselves (Run retries while running, in case
// they are being edited).
func loadSettings(dir string, det detect.Options) (*settings, error) {
	path := filepath.Join(dir, config.FileName)
	badConfig := func(err error) error { return permanent(err, "fix "+path) }
	f, ok, err := config.Load(dir)
	if err != nil {
		return nil, permanent(err, "fix "+path+", or "+enrollAction(dir))
	}
	t := f.Tunnel
	if !ok || t.AgentId == "" || t.ClientCertPath == "" {
		return nil, permanent(fmt.Errorf("%w: no identity in %s", ErrNotEnrolled, dir),
			"enroll it first: outpost agent enroll --config-dir "+dir+" --token <jwt|->")
	}
	if !t.Enabled {
		return nil, permanent(fmt.Errorf("the tunnel is disabled in %s (Tunnel.Enabled is false)", path),
			"set Tunnel.Enabled to true to run the agent")
	}
	host, _, err := net.SplitHostPort(t.GatewayEndpoint)
	if err != nil {
		return nil, badConfig(fmt.Errorf("GatewayEndpoint %q: want host:port: %v", t.GatewayEndpoint, err))
	}
	badIdentity := func(err error) error {
		return permanent(err, "restore the file from a backup, or "+enrollAction(dir))
	}
	certPath, keyPath, caPath := config.Resolve(dir, t.ClientCertPath), config.Resolve(dir, t.ClientKeyPath), config.Resolve(dir, t.GatewayCaCertPath)
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, badIdentity(fmt.Errorf("agent certificate and key: %w", err))
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, badIdentity(fmt.Errorf("agent certificate %s: %w", certPath, err))
		}
	}
	resetKey, err := transport.StatelessResetKey(pair.PrivateKey, transport.AgentResetLabel)
	if err != nil {
		return nil, badIdentity(fmt.Errorf("agent key %s: %w", keyPath, err))
	}
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, badIdentity(fmt.Errorf("gateway CA: %w", err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, badIdentity(fmt.Errorf("gateway CA %s: no PEM certificate", caPath))
	}
	s := &settings{
		endpoint: t.GatewayEndpoint,
		host:     host,
		agentID:  t.AgentId,
		cert:     leaf,
		certPath: certPath,
		keyPath:  keyPath,
		caPath:   caPath,
		resetKey: resetKey,
		tls: &tls.Config{
			Certificates: []tls.Certificate{pair},
			RootCAs:      pool,
			ServerName:   host,
		},
	}
	if t.ServerSpkiSha256 != "" {
		pin, err := transport.ParsePin(t.ServerSpkiSha256)
		if err != nil {
			return nil, badConfig(fmt.Errorf("ServerSpkiSha256: %w", err))
		}
		// On top of the chain and name checks against the gateway CA.
		s.tls.VerifyConnection = transport.VerifyLeafPin(pin)
	}
	for _, c := range t.AdvertiseSubnets {
		p, err := reach.ParseSubnet(strings.TrimSpace(c))
		if err != nil {
			return nil, badConfig(fmt.Errorf("AdvertiseSubnets: %q is not an IPv4 CIDR", c))
		}
		s.routes.Subnets = append(s.routes.Subnets, p)
	}
	for _, d := range t.AdvertiseDomains {
		route, err := reach.ParseDomain(strings.TrimSpace(d))
		if err != nil {
			return nil, badConfig(fmt.Errorf("AdvertiseDomains: %q: %v", d, err))
		}
		name := route.String()
		s.routes.Domains = append(s.routes.Domains, name)
		s.domains = append(s.domains, dataplane.DomainRoute{Name: name})
	}
	// A detected domain widens what the agent serves beyond what its
	// operator configured, so it is advertised only for an agent configured
	// with no route at all.
	switch {
	case len(s.domains) > 0:
		s.detectNote = "domains are configured"
	case len(s.routes.Subnets) > 0:
		s.detectNote = "subnets are configured"
	case t.AutoDetectDomain != nil && !*t.AutoDetectDomain:
		s.detectNote = "AutoDetectDomain is false"
	default:
		res, err := detect.Domain(det)
		if err != nil {
			s.detectNote = err.Error()
			break
		}
		s.detected = res.Domain
		s.detectNote = "from " + res.Source
		s.routes.Domains = append(s.routes.Domains, res.Domain)
		s.domains = append(s.domains, dataplane.DomainRoute{Name: res.Domain, AutoDetected: true})
	}
	return s, nil
}

// sameRoutes reports whether two settings advertise the same routes.
func sameRoutes(a, b *settings) bool {
	return slices.Equal(a.routes.Subnets, b.routes.Subnets) && slices.Equal(a.domains, b.domains)
}

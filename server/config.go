package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/reach"
	"github.com/outposthq/outpost/server/internal/token"
)

// Config is the gateway's configuration. The zero value of every field except
// DataDir means "the default" given in its comment. It is read from a JSON file
// (LoadConfigFile) whose keys are the field names, and command-line flags override it.
type Config struct {
	// DataDir holds the CA, server and token keys, the SQLite store and admin.key.
	// Required.
	DataDir string `json:"data_dir"`
	// Listen is the TCP address serving gRPC, REST, health, metrics and OpenAPI
	// over TLS. If empty, ":7171".
	Listen string `json:"listen"`
	// QUICListen is the UDP address agents dial. If empty, ":4433".
	QUICListen string `json:"quic_listen"`
	// MetricsListen, if set, moves /metrics to a separate plain-HTTP listener.
	MetricsListen string `json:"metrics_listen"`
	// Hostnames are the DNS names and IP addresses the server certificate covers
	// (localhost, 127.0.0.1 and ::1 are always added). The first one also builds
	// the default public URL and QUIC endpoint. If empty, "localhost".
	Hostnames []string `json:"hostnames"`
	// PublicURL is the HTTPS base URL agents use to enroll. If empty,
	// https://<first hostname>:<listen port>.
	PublicURL string `json:"public_url"`
	// PublicQUICEndpoint is the host:port agents dial. If empty,
	// <first hostname>:<quic listen port>.
	PublicQUICEndpoint string `json:"public_quic_endpoint"`
	// ShutdownTimeout bounds a graceful stop. If zero, 10 s.
	ShutdownTimeout Duration `json:"shutdown_timeout"`
	// MaxRequestBytes bounds a REST request body and a gRPC message. If zero, 1 MiB.
	MaxRequestBytes int64 `json:"max_request_bytes"`
	// EnrollmentSecret, if set, is a static bearer that Enroll accepts in place
	// of an enrollment token. Keep it long and random; empty disables it.
	EnrollmentSecret string `json:"enrollment_secret"`
	// ProvisionerPublicKey is an ECDSA P-256 public key (PEM text, or the path
	// of a PEM file) whose ES256 enrollment JWTs Enroll accepts. Empty: none.
	ProvisionerPublicKey string `json:"provisioner_public_key"`
	// EnrollRateLimit is the number of Enroll calls allowed per source IP per
	// minute. If zero, 10.
	EnrollRateLimit int `json:"enroll_rate_limit"`
	// AgentCertValidity is the lifetime of agent certificates. If zero, 30 days.
	AgentCertValidity Duration `json:"agent_cert_validity"`
	// MaxSessionsPerAgent caps the concurrent sessions through one agent. If
	// zero, 4,096.
	MaxSessionsPerAgent int `json:"max_sessions_per_agent"`
	// AgentAnswerTimeout bounds the wait for an agent's ConnectResponse
	// before the next candidate is tried. If zero, 30 s.
	AgentAnswerTimeout Duration `json:"agent_answer_timeout"`
	// AllowDirect lets the gateway connect to a target itself when no agent
	// covers it — only inside DirectSubnets and DirectDomains, and never to
	// loopback, link-local, cloud metadata or this host's own addresses
	// unless a direct subnet names them explicitly (e.g. 127.0.0.1/32). If
	// false (the default), such targets are rejected. Turning it on
	// requires at least one direct subnet or domain.
	AllowDirect bool `json:"allow_direct"`
	// DirectSubnets are the IPv4 subnets ("10.1.0.0/16") the gateway may
	// dial directly when AllowDirect is on.
	DirectSubnets []string `json:"direct_subnets"`
	// DirectDomains are the domain routes ("intranet.example",
	// "*.svc.example") the gateway may dial directly when AllowDirect is on;
	// the addresses they resolve to are checked against the special ranges
	// at connect time.
	DirectDomains []string `json:"direct_domains"`
	// MaxDirectSessions caps the direct sessions open at once. If zero,
	// 1,000.
	MaxDirectSessions int `json:"max_direct_sessions"`
	// AcceptAnyRoutes accepts every route any agent advertises, approved or
	// not, and logs a warning at start. For labs only: any enrolled agent
	// can then capture sessions meant for another by advertising a more
	// specific route. If false (the default), an advertisement counts only
	// where it lies inside the agent's approved routes.
	AcceptAnyRoutes bool `json:"accept_any_routes"`
	// MaxRoutesPerAgent caps the subnets plus domains of one route
	// advertisement; a longer one is refused whole and the agent's previous
	// routes stay. If zero, 1,024.
	MaxRoutesPerAgent int `json:"max_routes_per_agent"`
	// MaxRouteChangesPerMinute caps the route advertisements per agent and
	// minute that change its routes; more are ignored until the minute has
	// passed. If zero, 30.
	MaxRouteChangesPerMinute int `json:"max_route_changes_per_minute"`
	// MaxSessionTTL caps the lifetime of session tokens. If zero, 24 h.
	MaxSessionTTL Duration `json:"max_session_ttl"`
	// QUICIdleTimeout closes an agent connection silent for this long; it is
	// also how long a vanished agent (power cut, kill -9) keeps its sessions
	// before they fail. If zero, 120 s.
	QUICIdleTimeout Duration `json:"quic_idle_timeout"`
	// QUICKeepAlive is the keep-alive period on agent connections; it must be
	// shorter than the idle timeout. If zero, 15 s (capped at half the idle
	// timeout).
	QUICKeepAlive Duration `json:"quic_keep_alive"`

	// Now is the gateway's clock: certificates, tokens, enrollment rate
	// limits and agent liveness all read it. If nil, time.Now. It exists
	// for tests, which advance a fake clock instead of sleeping; JSON
	// ignores it.
	Now func() time.Time `json:"-"`

	// Test hook, set only by this package's tests (JSON ignores it).
	serverCertCheck time.Duration // how often the server certificate is checked; if zero, hourly
}

// Duration is a time.Duration that reads and writes JSON as a Go duration string ("30s").
type Duration time.Duration

// UnmarshalJSON accepts "1m30s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	secs, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("duration %s: want a string like \"30s\" or a number of seconds", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

const (
	defaultListen          = ":7171"
	defaultQUICListen      = ":4433"
	defaultShutdownTimeout = 10 * time.Second
	defaultMaxRequestBytes = 1 << 20
)

// LoadConfigFile reads a JSON config file. Unknown keys are an error so that a
// typo does not silently fall back to a default.
func LoadConfigFile(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// withDefaults returns a copy of c with every zero field filled in.
func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = defaultListen
	}
	if c.QUICListen == "" {
		c.QUICListen = defaultQUICListen
	}
	if len(c.Hostnames) == 0 {
		c.Hostnames = []string{"localhost"}
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = Duration(defaultShutdownTimeout)
	}
	if c.MaxSessionTTL == 0 {
		c.MaxSessionTTL = Duration(token.MaxSessionTTL)
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = defaultMaxRequestBytes
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c.withPublicDefaults(portOf(c.Listen), portOf(c.QUICListen))
}

// withPublicDefaults fills an empty public_url or public_quic_endpoint from
// the first host name and the given ports. A port "0" (bind any) is left
// for later: the gateway calls this again with the bound ports.
func (c Config) withPublicDefaults(apiPort, quicPort string) Config {
	if c.PublicURL == "" && apiPort != "0" {
		c.PublicURL = "https://" + net.JoinHostPort(c.Hostnames[0], apiPort)
	}
	if c.PublicQUICEndpoint == "" && quicPort != "0" {
		c.PublicQUICEndpoint = net.JoinHostPort(c.Hostnames[0], quicPort)
	}
	return c
}

// directTable compiles the direct allow-list, or returns nil when direct
// connections are off. The gateway's own interface addresses are special:
// dialed only when a direct subnet names them as a /32.
func (c Config) directTable() (*reach.Table, error) {
	if !c.AllowDirect {
		return nil, nil
	}
	routes, err := c.directRoutes()
	if err != nil {
		return nil, err
	}
	own, err := reach.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("direct allow-list: list this host's addresses: %w", err)
	}
	return reach.Compile(routes).WithOwnAddrs(own), nil
}

// directRoutes parses DirectSubnets and DirectDomains.
func (c Config) directRoutes() (reach.Routes, error) {
	var r reach.Routes
	var errs []error
	for _, s := range c.DirectSubnets {
		p, err := reach.ParseSubnet(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("direct_subnets %q: %v", s, err))
			continue
		}
		r.Subnets = append(r.Subnets, p)
	}
	for _, s := range c.DirectDomains {
		if _, err := reach.ParseDomain(s); err != nil {
			errs = append(errs, fmt.Errorf("direct_domains %q: %v", s, err))
			continue
		}
		r.Domains = append(r.Domains, s)
	}
	return r, errors.Join(errs...)
}

// quicConfig is the tunnel transport configuration from the QUIC settings; a
// keep-alive left at its default is kept under half the idle timeout.
func (c Config) quicConfig() transport.Config {
	q := transport.Config{IdleTimeout: time.Duration(c.QUICIdleTimeout), KeepAlivePeriod: time.Duration(c.QUICKeepAlive)}
	if q.KeepAlivePeriod == 0 && q.IdleTimeout > 0 {
		q.KeepAlivePeriod = min(transport.DefaultKeepAlivePeriod, q.IdleTimeout/2)
	}
	return q
}

func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return port
}

// validate reports the first problem with a defaulted config.
func (c Config) validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir is required"))
	}
	for name, addr := range map[string]string{"listen": c.Listen, "quic_listen": c.QUICListen, "metrics_listen": c.MetricsListen} {
		if addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %v", name, addr, err))
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: bad port", name, addr))
		}
	}
	for _, h := range c.Hostnames {
		if err := validHostname(h); err != nil {
			errs = append(errs, fmt.Errorf("hostname %q: %v", h, err))
		}
	}
	if u, err := url.Parse(c.PublicURL); c.PublicURL != "" && (err != nil || u.Scheme != "https" || u.Host == "") {
		errs = append(errs, fmt.Errorf("public_url %q: want an https:// URL", c.PublicURL))
	}
	if _, _, err := net.SplitHostPort(c.PublicQUICEndpoint); c.PublicQUICEndpoint != "" && err != nil {
		errs = append(errs, fmt.Errorf("public_quic_endpoint %q: want host:port", c.PublicQUICEndpoint))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("shutdown_timeout must not be negative"))
	}
	if c.EnrollRateLimit < 0 {
		errs = append(errs, errors.New("enroll_rate_limit must not be negative"))
	}
	if err := c.quicConfig().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("quic_idle_timeout/quic_keep_alive: %v", err))
	}
	if _, err := c.directRoutes(); err != nil {
		errs = append(errs, err)
	}
	if c.AllowDirect && len(c.DirectSubnets) == 0 && len(c.DirectDomains) == 0 {
		errs = append(errs, errors.New("allow_direct needs the allow-list: set direct_subnets and/or direct_domains"))
	}
	if c.MaxDirectSessions < 0 {
		errs = append(errs, errors.New("max_direct_sessions must not be negative"))
	}
	if c.AgentAnswerTimeout < 0 {
		errs = append(errs, errors.New("agent_answer_timeout must not be negative"))
	}
	if c.MaxRoutesPerAgent < 0 {
		errs = append(errs, errors.New("max_routes_per_agent must not be negative"))
	}
	if c.MaxRouteChangesPerMinute < 0 {
		errs = append(errs, errors.New("max_route_changes_per_minute must not be negative"))
	}
	if c.MaxSessionsPerAgent < 0 {
		errs = append(errs, errors.New("max_sessions_per_agent must not be negative"))
	}
	if c.AgentCertValidity < 0 {
		errs = append(errs, errors.New("agent_cert_validity must not be negative"))
	}
	if c.MaxRequestBytes < 0 {
		errs = append(errs, errors.New("max_request_bytes must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// validHostname accepts an IP literal or a DNS name of letters, digits, '-' and '.'.
func validHostname(h string) error {
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if h == "" || len(h) > 253 {
		return errors.New("must be 1 to 253 characters")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("empty or over-long label")
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return fmt.Errorf("invalid character %q", r)
			}
		}
	}
	return nil
}

// provisionerKey parses Config.ProvisionerPublicKey: PEM text or a file path.
func (c Config) provisionerKey() (*ecdsa.PublicKey, error) {
	v := strings.TrimSpace(c.ProvisionerPublicKey)
	if v == "" {
		return nil, nil
	}
	data := []byte(v)
	if !strings.HasPrefix(v, "-----BEGIN") {
		b, err := os.ReadFile(v)
		if err != nil {
			return nil, fmt.Errorf("provisioner_public_key: %w", err)
		}
		data = b
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("provisioner_public_key: no PEM block found")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("provisioner_public_key: %w", err)
	}
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, errors.New("provisioner_public_key: must be an ECDSA P-256 public key")
	}
	return k, nil
}

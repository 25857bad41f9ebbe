package server

import (
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/reach"
	"github.com/outposthq/outpost/server/internal/broker"
	"github.com/outposthq/outpost/server/internal/clientip"
	"github.com/outposthq/outpost/server/internal/origin"
	"github.com/outposthq/outpost/server/internal/pki"
	"github.com/outposthq/outpost/server/internal/service/enrollment"
	"github.com/outposthq/outpost/server/internal/token"
	"github.com/outposthq/outpost/server/internal/tunnel"
)

// Config is the gateway's configuration. The zero value of every field except
// DataDir means "the default" given in its comment. It is read from a JSON file
// (LoadConfigFile) whose keys are the field names, and command-line flags override it.
type Config struct {
	// DataDir holds admin.key and, unless Store names a PostgreSQL
	// database, the SQLite store and the CA, server and token keys.
	// Required.
	DataDir string `json:"data_dir"`
	// Store selects the database. Empty: the SQLite file outpost.db in
	// DataDir. A postgres:// or postgresql:// URL: that PostgreSQL database
	// (as libpq reads it, e.g.
	// "postgres://outpost@db.example:5432/outpost?sslmode=verify-full"),
	// migrated at start, and shareable by several gateways. Keep the
	// password out of the URL: the driver reads PGPASSWORD and the password
	// file (~/.pgpass, or PGPASSFILE).
	Store string `json:"store"`
	// SealKeyFile is the file holding the key-encryption key (32 random
	// bytes, raw or base64; `outpost gateway seal-key create`) under which
	// the CA key and certificate, the server key and the token key are
	// kept sealed in a PostgreSQL store, so that every gateway on the
	// database shares them. Give every gateway the same key. Required with
	// a PostgreSQL store, refused with SQLite (whose gateway keeps them as
	// files in DataDir).
	SealKeyFile string `json:"seal_key_file"`
	// Listen is the TCP address serving gRPC, REST, health, metrics and OpenAPI
	// over TLS. If empty, DefaultListen (":7171").
	Listen string `json:"listen"`
	// QUICListen is the UDP address agents dial. If empty, DefaultQUICListen
	// (":4433").
	QUICListen string `json:"quic_listen"`
	// MetricsListen, if set, moves /metrics to a separate plain-HTTP listener.
	MetricsListen string `json:"metrics_listen"`
	// Hostnames are the DNS names and IP addresses the server certificate covers
	// (localhost, 127.0.0.1 and ::1 are always added). The first one also builds
	// the default public URL and QUIC endpoint. If empty, DefaultHostname
	// ("localhost").
	Hostnames []string `json:"hostnames"`
	// PublicURL is the HTTPS base URL agents use to enroll. If empty,
	// https://<first hostname>:<listen port>.
	PublicURL string `json:"public_url"`
	// PublicQUICEndpoint is the host:port agents dial. If empty,
	// <first hostname>:<quic listen port>.
	PublicQUICEndpoint string `json:"public_quic_endpoint"`
	// ShutdownTimeout bounds a graceful stop. If zero,
	// DefaultShutdownTimeout (10 s).
	ShutdownTimeout Duration `json:"shutdown_timeout"`
	// MaxRequestBytes bounds a REST request body and a gRPC message. If zero,
	// DefaultMaxRequestBytes (1 MiB).
	MaxRequestBytes int64 `json:"max_request_bytes"`
	// EnrollmentSecret, if set, is a static bearer that Enroll accepts in place
	// of an enrollment token, any number of times. It must be at least
	// MinEnrollmentSecretLen (16) bytes; keep it long and random. Empty
	// disables it.
	EnrollmentSecret string `json:"enrollment_secret"`
	// ProvisionerPublicKey is an ECDSA P-256 public key (PEM text, or the path
	// of a PEM file) whose ES256 enrollment JWTs Enroll accepts. Empty: none.
	ProvisionerPublicKey string `json:"provisioner_public_key"`
	// ProvisionerAudience is the audience ("aud") every enrollment JWT
	// signed by ProvisionerPublicKey must carry, so that a provisioner's
	// token minted for another gateway is refused here; a token without it
	// is refused as Unauthenticated. Required with ProvisionerPublicKey, and
	// meaningless without it. Tokens the gateway mints itself carry its
	// PublicURL instead.
	ProvisionerAudience string `json:"provisioner_audience"`
	// EnrollmentTokenLeeway is the clock skew tolerated on enrollment
	// tokens' exp and nbf: a token still enrolls until this long after it
	// expired. From 0 (none) to MaxEnrollmentTokenLeeway (5 min). If nil,
	// DefaultEnrollmentTokenLeeway (60 s).
	EnrollmentTokenLeeway *Duration `json:"enrollment_token_leeway"`
	// EnrollRateLimit is the number of Enroll calls allowed per source IP per
	// minute. If zero, DefaultEnrollRateLimit (10).
	EnrollRateLimit int `json:"enroll_rate_limit"`
	// AgentCertValidity is the lifetime of agent certificates. If zero,
	// DefaultAgentCertValidity (30 days).
	AgentCertValidity Duration `json:"agent_cert_validity"`
	// MaxSessionsPerAgent caps the concurrent sessions through one agent. If
	// zero, DefaultMaxSessionsPerAgent (4,096).
	MaxSessionsPerAgent int `json:"max_sessions_per_agent"`
	// AgentAnswerTimeout bounds the wait for an agent's ConnectResponse
	// before the next candidate is tried. If zero, DefaultAgentAnswerTimeout
	// (30 s). An agent that shows no sign of life is not waited out:
	// see HedgeDelay.
	AgentAnswerTimeout Duration `json:"agent_answer_timeout"`
	// HedgeDelay is how long an agent asked for a session may show no sign
	// of life (no packet from it since the request was sent: a live agent's
	// QUIC stack acknowledges the request within a round trip, even while it
	// dials the target) before the next candidate is started in parallel;
	// the first to succeed serves the session, and the silent agent is
	// tried after the others until it is heard from again. An agent that
	// is alive is waited for up to AgentAnswerTimeout. If zero,
	// DefaultHedgeDelay (1 s); negative: never hedge.
	HedgeDelay Duration `json:"hedge_delay"`
	// AgentSilenceTimeout marks an agent unresponsive — skipped by
	// routing, shown so by ListAgents — when no packet arrived on its
	// connection for this long (the gateway's keep-alive PINGs make a
	// healthy idle agent answer every QUICKeepAlive); its next packet makes
	// it online again. The connection itself stays until QUICIdleTimeout.
	// At least twice QUICKeepAlive. If zero, DefaultAgentSilenceTimeout
	// (3 s), or twice the keep-alive period if that is longer.
	AgentSilenceTimeout Duration `json:"agent_silence_timeout"`
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
	// AuditRetention is how long session audit records are kept; older ones
	// are pruned hourly, with expired token rows. If zero, 90 days.
	AuditRetention Duration `json:"audit_retention"`
	// RenewalWindow is the part of an agent certificate's lifetime that
	// may be left at most when the gateway accepts its renewal: 0.5 (the
	// default) accepts renewals in the second half of the lifetime, 1 at any
	// time. One agent renews at most once a minute either way.
	RenewalWindow float64 `json:"renewal_window"`
	// MaxSessions caps the client sessions open at once through the entry;
	// one more is refused with 503 before its token is used. If zero,
	// 100,000.
	MaxSessions int `json:"max_sessions"`
	// ClientKeepAlive is how long a client session may stay quiet before
	// the gateway pings the client; a client that does not answer within
	// another period is gone and its session ends. If zero, 30 s.
	ClientKeepAlive Duration `json:"client_keep_alive"`
	// ClientIdleTimeout ends a client session that carried no byte either
	// way for this long. If zero, 1 h; negative: never.
	ClientIdleTimeout Duration `json:"client_idle_timeout"`
	// MaxAgents caps the agents connected at once; one more is refused with
	// the close reason "gateway-full" and retries with backoff. If zero,
	// 10,000.
	MaxAgents int `json:"max_agents"`
	// MaxDirectSessions caps the direct sessions open at once. If zero,
	// DefaultMaxDirectSessions (1,000).
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
	// MaxSessionTTL caps the lifetime of session tokens. If zero,
	// DefaultMaxSessionTTL (24 h); at most 7 days.
	MaxSessionTTL Duration `json:"max_session_ttl"`
	// MaxTokenConnections caps the connections one reusable session token
	// opens; a token may ask for fewer. If zero, 1,000.
	MaxTokenConnections int `json:"max_token_connections"`
	// MaxStreamsPerConnection caps the sessions one standing client
	// connection (`outpost connect`) carries at once. If zero, 256.
	MaxStreamsPerConnection int `json:"max_streams_per_connection"`
	// MaxSessionDuration caps how long one client session lasts; the
	// gateway then closes it with the reason "maximum session duration
	// reached". A session token may ask for less. If zero, 8 h; at least
	// 1 ms, at most 7 days.
	MaxSessionDuration Duration `json:"max_session_duration"`
	// AllowedOrigins are the web origins ("https://app.example.com":
	// scheme, host and a non-default port, nothing else) whose pages may
	// open the WebSocket entry, besides the gateway's own. Clients that
	// send no Origin header (not browsers) are always allowed. "*" allows
	// every origin, and only together with AllowAnyOrigin. If empty, the
	// gateway's own origin only.
	AllowedOrigins []string `json:"allowed_origins"`
	// AllowAnyOrigin confirms a "*" in AllowedOrigins: any web page that
	// holds a session token may then use it from a visitor's browser.
	AllowAnyOrigin bool `json:"allow_any_origin"`
	// QUICIdleTimeout closes an agent connection silent for this long; it is
	// also how long a vanished agent (power cut, kill -9) keeps its sessions
	// before they fail. If zero, DefaultQUICIdleTimeout (120 s).
	QUICIdleTimeout Duration `json:"quic_idle_timeout"`
	// QUICKeepAlive is the keep-alive period on agent connections: the
	// gateway sends a PING on a connection it has received nothing on for
	// this long, which the agent acknowledges (two small packets per idle
	// agent and period). It must be shorter than the idle timeout. An
	// Outpost agent sends no idle heartbeat while these PINGs come more
	// often than its --idle-heartbeat (2 s by default); with a longer
	// keep-alive, each idle agent also sends a Heartbeat (answered by a
	// HeartbeatAck) every --idle-heartbeat unless that is raised too. If
	// zero, DefaultQUICKeepAlive (1.5 s), capped at half the idle timeout.
	QUICKeepAlive Duration `json:"quic_keep_alive"`

	// TrustedProxies are the networks of reverse proxies or load balancers
	// in front of the API port ("10.0.0.0/8", or single addresses) whose
	// X-Forwarded-For header is believed for the client address (rate
	// limits, audit, logs). If empty (the default), the TCP peer is the
	// client and X-Forwarded-For is ignored.
	TrustedProxies []string `json:"trusted_proxies"`
	// ProxyProtocol accepts a PROXY protocol (v1 or v2) header on the API
	// port from TrustedProxies only (an L4 load balancer in front of the
	// gateway), and takes the client's address from it. A connection from
	// anywhere else that sends one is refused; without a header every
	// connection is served as usual. Requires TrustedProxies. Off by
	// default.
	ProxyProtocol bool `json:"proxy_protocol"`

	// ReplicaName names this gateway among the replicas of a cluster
	// (ListGateways). If empty, the host name.
	ReplicaName string `json:"replica_name"`
	// ReplicaQUICEndpoint and ReplicaAPIEndpoint are the host:port at which
	// this replica's own QUIC and API listeners are reached directly, not
	// through a load balancer, as ListGateways shows them. If empty, the
	// bound address, with the host name in place of an unspecified IP. On
	// PostgreSQL the QUIC endpoint is also the replica's peer endpoint: the
	// other replicas forward sessions to it (server/internal/peer).
	ReplicaQUICEndpoint string `json:"replica_quic_endpoint"`
	ReplicaAPIEndpoint  string `json:"replica_api_endpoint"`
	// ReplicaHeartbeat is how often the gateway records in the store that
	// it is alive. If zero, 10 s.
	ReplicaHeartbeat Duration `json:"replica_heartbeat"`
	// ReplicaGoneAfter is how long after its last heartbeat a replica is
	// gone; at least twice ReplicaHeartbeat. If zero, 30 s.
	ReplicaGoneAfter Duration `json:"replica_gone_after"`
	// ReplicaSweepGrace is how long a gone replica stays listed before the
	// survivors delete its rows and its agent connections. If zero, 5 min.
	ReplicaSweepGrace Duration `json:"replica_sweep_grace"`

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

// Defaults of Config: what a zero field means. They are exported for the
// outpost binary, whose flags show them.
const (
	// DefaultListen is the API port's address (Config.Listen).
	DefaultListen = ":7171"
	// DefaultQUICListen is the agents' QUIC address (Config.QUICListen).
	DefaultQUICListen = ":4433"
	// DefaultHostname is the name the server certificate covers
	// (Config.Hostnames).
	DefaultHostname = "localhost"
	// DefaultAPIURL is the API's URL on a gateway on this machine with the
	// default Listen and Hostnames: where the admin commands look first.
	DefaultAPIURL = "https://" + DefaultHostname + DefaultListen
	// DefaultShutdownTimeout bounds a graceful stop (Config.ShutdownTimeout).
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultMaxRequestBytes bounds a request (Config.MaxRequestBytes).
	DefaultMaxRequestBytes = 1 << 20
	// DefaultEnrollRateLimit is the number of Enroll calls allowed per
	// source IP per minute (Config.EnrollRateLimit).
	DefaultEnrollRateLimit = enrollment.DefaultRateBurst
	// DefaultAgentCertValidity is the lifetime of agent certificates
	// (Config.AgentCertValidity).
	DefaultAgentCertValidity = pki.DefaultAgentValidity
	// DefaultMaxSessionsPerAgent caps the concurrent sessions through one
	// agent (Config.MaxSessionsPerAgent).
	DefaultMaxSessionsPerAgent = tunnel.DefaultMaxSessionsPerAgent
	// DefaultAgentAnswerTimeout bounds the wait for an agent's
	// ConnectResponse (Config.AgentAnswerTimeout).
	DefaultAgentAnswerTimeout = tunnel.DefaultConnectTimeout
	// DefaultMaxDirectSessions caps the direct sessions open at once
	// (Config.MaxDirectSessions).
	DefaultMaxDirectSessions = broker.DefaultMaxDirectSessions
	// DefaultMaxSessionTTL caps session token lifetimes (Config.MaxSessionTTL).
	DefaultMaxSessionTTL = token.MaxSessionTTL
	// DefaultQUICIdleTimeout closes a silent agent connection
	// (Config.QUICIdleTimeout).
	DefaultQUICIdleTimeout = transport.DefaultIdleTimeout
	// DefaultQUICKeepAlive is the keep-alive period on agent connections
	// (Config.QUICKeepAlive), capped at half the idle timeout. It is
	// shorter than the agents' own (transport.DefaultKeepAlivePeriod): the
	// gateway's PINGs are what tells it within seconds that an agent is
	// gone.
	DefaultQUICKeepAlive = 1500 * time.Millisecond
	// DefaultAgentSilenceTimeout marks a quiet agent unresponsive
	// (Config.AgentSilenceTimeout).
	DefaultAgentSilenceTimeout = tunnel.DefaultSilenceTimeout
	// DefaultHedgeDelay is how long a silent agent candidate is waited for
	// alone (Config.HedgeDelay).
	DefaultHedgeDelay = broker.DefaultHedgeDelay
)

// Bounds of Config.EnrollmentTokenLeeway.
const (
	// DefaultEnrollmentTokenLeeway is the clock skew tolerated on
	// enrollment tokens when the config names none.
	DefaultEnrollmentTokenLeeway = token.DefaultEnrollmentLeeway
	// MaxEnrollmentTokenLeeway is the most that may be configured.
	MaxEnrollmentTokenLeeway = token.MaxEnrollmentLeeway
)

// MinEnrollmentSecretLen is the shortest Config.EnrollmentSecret accepted, in
// bytes.
const MinEnrollmentSecretLen = 16

// Defaults of the tokens the gateway mints when the request names no
// lifetime; exported for the admin commands, whose flags show them.
const (
	// DefaultEnrollmentTokenTTL is an enrollment token's lifetime.
	DefaultEnrollmentTokenTTL = token.DefaultEnrollmentTTL
	// DefaultSessionTokenTTL is a session token's lifetime.
	DefaultSessionTokenTTL = token.DefaultSessionTTL
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
		c.Listen = DefaultListen
	}
	if c.QUICListen == "" {
		c.QUICListen = DefaultQUICListen
	}
	if len(c.Hostnames) == 0 {
		c.Hostnames = []string{DefaultHostname}
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = Duration(DefaultShutdownTimeout)
	}
	if c.MaxSessionTTL == 0 {
		c.MaxSessionTTL = Duration(DefaultMaxSessionTTL)
	}
	if c.MaxTokenConnections == 0 {
		c.MaxTokenConnections = token.DefaultMaxConnections
	}
	if c.MaxSessionDuration == 0 {
		c.MaxSessionDuration = Duration(token.DefaultMaxSessionDuration)
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
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
	if q.KeepAlivePeriod == 0 {
		idle := cmp.Or(q.IdleTimeout, DefaultQUICIdleTimeout)
		q.KeepAlivePeriod = min(DefaultQUICKeepAlive, idle/2)
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
	if err := validStore(c.Store); err != nil {
		errs = append(errs, err)
	}
	if err := validSealKey(c.Store, c.SealKeyFile); err != nil {
		errs = append(errs, err)
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
	if n := len(c.EnrollmentSecret); n > 0 && n < MinEnrollmentSecretLen {
		errs = append(errs, fmt.Errorf("enrollment_secret (or --enrollment-secret-file) is %d bytes: want at least %d, long and random", n, MinEnrollmentSecretLen))
	}
	switch {
	case strings.TrimSpace(c.ProvisionerPublicKey) != "" && c.ProvisionerAudience == "":
		errs = append(errs, errors.New("provisioner_public_key needs provisioner_audience (--provisioner-audience): the aud its enrollment JWTs must carry for this gateway"))
	case strings.TrimSpace(c.ProvisionerPublicKey) == "" && c.ProvisionerAudience != "":
		errs = append(errs, errors.New("provisioner_audience is set but provisioner_public_key is not"))
	}
	if l := c.EnrollmentTokenLeeway; l != nil && (*l < 0 || time.Duration(*l) > MaxEnrollmentTokenLeeway) {
		errs = append(errs, fmt.Errorf("enrollment_token_leeway %v: want 0 (none) to %v", time.Duration(*l), MaxEnrollmentTokenLeeway))
	}
	if c.EnrollRateLimit < 0 {
		errs = append(errs, errors.New("enroll_rate_limit must not be negative"))
	}
	if err := c.quicConfig().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("quic_idle_timeout/quic_keep_alive: %v", err))
	}
	if _, err := clientip.ParseTrusted(c.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("trusted_proxies: %v", err))
	}
	if c.ProxyProtocol && len(c.TrustedProxies) == 0 {
		errs = append(errs, errors.New("proxy_protocol needs trusted_proxies: the load balancers allowed to send PROXY headers"))
	}
	if _, err := c.directRoutes(); err != nil {
		errs = append(errs, err)
	}
	if c.AllowDirect && len(c.DirectSubnets) == 0 && len(c.DirectDomains) == 0 {
		errs = append(errs, errors.New("allow_direct needs the allow-list: set direct_subnets and/or direct_domains"))
	}
	if c.AuditRetention < 0 {
		errs = append(errs, errors.New("audit_retention must not be negative"))
	}
	if c.RenewalWindow < 0 || c.RenewalWindow > 1 {
		errs = append(errs, fmt.Errorf("renewal_window %v: want a part of the certificate lifetime, 0 < w ≤ 1 (0 = 0.5)", c.RenewalWindow))
	}
	if c.MaxSessions < 0 {
		errs = append(errs, errors.New("max_sessions must not be negative"))
	}
	if c.ClientKeepAlive < 0 {
		errs = append(errs, errors.New("client_keep_alive must not be negative"))
	}
	if c.MaxAgents < 0 {
		errs = append(errs, errors.New("max_agents must not be negative"))
	}
	if c.MaxDirectSessions < 0 {
		errs = append(errs, errors.New("max_direct_sessions must not be negative"))
	}
	if c.AgentAnswerTimeout < 0 {
		errs = append(errs, errors.New("agent_answer_timeout must not be negative"))
	}
	if q := c.quicConfig(); c.AgentSilenceTimeout < 0 || c.AgentSilenceTimeout > 0 && time.Duration(c.AgentSilenceTimeout) < 2*q.KeepAlivePeriod {
		errs = append(errs, fmt.Errorf("agent_silence_timeout %v: want at least twice the keep-alive period (%v)", time.Duration(c.AgentSilenceTimeout), q.KeepAlivePeriod))
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
	if err := inRange(time.Duration(c.MaxSessionTTL), time.Second, token.SessionTTLLimit); err != nil {
		errs = append(errs, fmt.Errorf("max_session_ttl %v: %v", time.Duration(c.MaxSessionTTL), err))
	}
	if err := inRange(time.Duration(c.MaxSessionDuration), time.Millisecond, token.SessionDurationLimit); err != nil {
		errs = append(errs, fmt.Errorf("max_session_duration %v: %v", time.Duration(c.MaxSessionDuration), err))
	}
	if c.MaxStreamsPerConnection < 0 {
		errs = append(errs, fmt.Errorf("max_streams_per_connection %d: must not be negative", c.MaxStreamsPerConnection))
	}
	if c.MaxTokenConnections < 1 || int64(c.MaxTokenConnections) > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("max_token_connections %d: must be 1 to %d", c.MaxTokenConnections, uint32(math.MaxUint32)))
	}
	if _, err := c.originPolicy(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// inRange checks that a positive duration setting lies in [least, most].
func inRange(d, least, most time.Duration) error {
	if d < least || d > most {
		return fmt.Errorf("must be from %v to %v", least, most)
	}
	return nil
}

// originPolicy parses AllowedOrigins and AllowAnyOrigin.
func (c Config) originPolicy() (*origin.Policy, error) {
	p, err := origin.Parse(c.AllowedOrigins, c.AllowAnyOrigin)
	if err != nil {
		return nil, fmt.Errorf("allowed_origins: %w", err)
	}
	return p, nil
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

// enrollmentTokenLeeway is EnrollmentTokenLeeway, or its default when unset.
func (c Config) enrollmentTokenLeeway() time.Duration {
	if c.EnrollmentTokenLeeway == nil {
		return DefaultEnrollmentTokenLeeway
	}
	return time.Duration(*c.EnrollmentTokenLeeway)
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

// clientIP is the resolver of client addresses from TrustedProxies (valid
// after validate).
func (c Config) clientIP() clientip.Resolver {
	trusted, _ := clientip.ParseTrusted(c.TrustedProxies)
	return clientip.Resolver{Trusted: trusted}
}

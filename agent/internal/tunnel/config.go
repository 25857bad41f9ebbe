package tunnel

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/dataplane/transport"
)

// Defaults of Config (DESIGN.md §7, §12).
const (
	DefaultAdvertiseInterval = 30 * time.Second
	DefaultHeartbeatInterval = 60 * time.Second
	DefaultIdleHeartbeat     = 2 * time.Second
	DefaultGatewaySilence    = 10 * time.Second
	DefaultBackoffMin        = 1 * time.Second
	DefaultBackoffMax        = 60 * time.Second
	DefaultHealthyAfter      = 30 * time.Second
	DefaultDrainTimeout      = 30 * time.Second
	// DefaultRenewFraction renews the certificate when a third of its
	// lifetime or less is left.
	DefaultRenewFraction      = 1.0 / 3
	DefaultRenewTimeout       = 30 * time.Second
	DefaultRenewBackoffMin    = 1 * time.Minute
	DefaultRenewBackoffMax    = 1 * time.Hour
	DefaultRenewCheckInterval = 1 * time.Minute
	DefaultWatchInterval      = 2 * time.Second
	// DefaultHAConnections is how many distinct gateway replicas the agent
	// keeps a connection to.
	DefaultHAConnections = 2
	DefaultHARetryMin    = 100 * time.Millisecond
	DefaultHAWarnAfter   = 2 * time.Minute
	// DefaultHARetryMax caps the delay between attempts that keep reaching
	// replicas the agent already holds: far above BackoffMax, so that a
	// cluster smaller than HAConnections (one PostgreSQL gateway, say)
	// costs a fleet of agents few handshakes.
	DefaultHARetryMax = 10 * time.Minute
)

// MaxHAConnections bounds Config.HAConnections.
const MaxHAConnections = 16

// Config configures an Agent. The zero value of every field but ConfigDir
// means the default given in its comment.
type Config struct {
	// ConfigDir holds agent.json and the certificates. Run returns a
	// *PermanentError at once if they cannot be used (wrapping
	// ErrNotEnrolled if it holds no identity).
	ConfigDir string
	// Logger receives the agent's logs. If nil, nothing is logged.
	Logger hclog.Logger
	// QUIC is the transport configuration.
	QUIC transport.Config
	// AdvertiseInterval and HeartbeatInterval pace the control stream. If
	// zero, 30 s and 60 s.
	AdvertiseInterval, HeartbeatInterval time.Duration
	// IdleHeartbeat is how long the agent may hear nothing from the
	// gateway: after IdleHeartbeat without a packet from it (checked four
	// times per period) the agent sends a Heartbeat. It bounds how long an
	// idle agent takes to notice a gateway that crashed and restarted (the
	// Heartbeat draws a stateless reset, a bare keep-alive PING is too short
	// to). A gateway whose keep-alive PINGs are more frequent (1.5 s by
	// default) hears only their ACKs from an idle agent; one that PINGs
	// less often gets a Heartbeat, and answers with a HeartbeatAck, every
	// IdleHeartbeat. If zero, 2 s.
	IdleHeartbeat time.Duration
	// GatewaySilence is how long the agent hears nothing at all from the
	// gateway (a live one PINGs a quiet connection every 1.5 s and answers
	// every Heartbeat) before it closes the connection and dials again: the
	// gateway, or the replica of a cluster, died without closing it (kill
	// -9, a host powered off), and the QUIC idle timeout alone would keep
	// the dead connection for minutes. It must be at least twice
	// IdleHeartbeat. If zero, 10 s or three IdleHeartbeats, whichever is
	// longer; negative, never (the idle timeout alone).
	GatewaySilence time.Duration
	// BackoffMin and BackoffMax bound the reconnect delay (full jitter);
	// a connection that lasted HealthyAfter resets it. If zero, 1 s, 60 s
	// and 30 s. A reconnect after a certificate renewal has no delay.
	BackoffMin, BackoffMax, HealthyAfter time.Duration
	// HAConnections is how many connections the agent keeps, each to a
	// distinct gateway replica, all through GatewayEndpoint (an L4 load
	// balancer or a name with several addresses in front of the replicas).
	// Against a gateway whose certificate names no replica (a cluster of
	// one) it keeps one. 1 keeps one connection whatever the gateway. It
	// must be at most MaxHAConnections; if zero, 2.
	HAConnections int
	// HARetryMin is the first delay before dialing again after reaching a
	// replica another connection holds (the handshake is aborted before
	// the gateway registers it): it doubles with each such attempt in a
	// row up to HARetryMax, with full jitter. It is also the most the agent
	// waits before replacing a connection that a replica closed with
	// "shutdown". If zero, 100 ms; HARetryMax, if zero, 10 min.
	HARetryMin, HARetryMax time.Duration
	// HAWarnAfter is how long the agent may hold fewer than HAConnections
	// connections to a cluster before it logs a warning. If zero, 2 min.
	HAWarnAfter time.Duration
	// DialTimeout bounds resolving and dialing a session's target. If zero,
	// 20 s.
	DialTimeout time.Duration
	// Counters, if set, receive the bytes relayed by every session.
	Counters *relay.Counters
	// DrainTimeout is how long live sessions may take to finish when Run's
	// context ends; new sessions are refused meanwhile. If zero, 30 s.
	DrainTimeout time.Duration

	// RenewFraction is the part of the agent certificate's lifetime
	// (NotAfter − NotBefore) left when the agent renews it: the agent asks
	// for a new certificate once NotAfter − now ≤ RenewFraction × lifetime.
	// It must be in [0, 1); if zero, 1/3.
	RenewFraction float64
	// RenewTimeout bounds the wait for the gateway's CertRenewalResponse. If
	// zero, 30 s.
	RenewTimeout time.Duration
	// RenewBackoffMin and RenewBackoffMax bound the delay before retrying a
	// failed renewal: it doubles from RenewBackoffMin with each consecutive
	// failure, up to RenewBackoffMax, jittered down by at most half.
	// RenewBackoffMin is also the least time between two successful
	// renewals, so that a gateway issuing certificates shorter than the
	// threshold, or a clock far ahead, cannot make the agent renew and
	// reconnect in a loop. If zero, 1 min and 1 h.
	RenewBackoffMin, RenewBackoffMax time.Duration
	// RenewCheckInterval is the longest the agent sleeps before comparing
	// the clock with the renewal time again, so that a jump of the wall
	// clock (suspend, NTP step) is noticed. If zero, 1 min.
	RenewCheckInterval time.Duration
	// Now is the clock used to decide when to renew. If nil, time.Now.
	Now func() time.Time

	// WatchInterval is how often agent.json (and the resolver
	// configuration, for domain detection) is checked for changes; a change
	// triggers Reload. If zero, 2 s; if negative, the files are not watched
	// and only Reload (SIGHUP) re-reads them on a live connection.
	WatchInterval time.Duration
	// ResolvConfPath is the resolver configuration read to auto-detect the
	// host's domain. If empty, /etc/resolv.conf.
	ResolvConfPath string
	// Hostname returns the host name, the fallback source of the detected
	// domain. If nil, os.Hostname.
	Hostname func() (string, error)
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.AdvertiseInterval, DefaultAdvertiseInterval)
	def(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	def(&c.IdleHeartbeat, DefaultIdleHeartbeat)
	def(&c.GatewaySilence, max(DefaultGatewaySilence, 3*c.IdleHeartbeat))
	def(&c.BackoffMin, DefaultBackoffMin)
	def(&c.BackoffMax, DefaultBackoffMax)
	def(&c.HealthyAfter, DefaultHealthyAfter)
	def(&c.DrainTimeout, DefaultDrainTimeout)
	def(&c.RenewTimeout, DefaultRenewTimeout)
	def(&c.RenewBackoffMin, DefaultRenewBackoffMin)
	def(&c.RenewBackoffMax, DefaultRenewBackoffMax)
	def(&c.RenewCheckInterval, DefaultRenewCheckInterval)
	def(&c.HARetryMin, DefaultHARetryMin)
	def(&c.HARetryMax, DefaultHARetryMax)
	def(&c.HAWarnAfter, DefaultHAWarnAfter)
	if c.HAConnections == 0 {
		c.HAConnections = DefaultHAConnections
	}
	if c.WatchInterval == 0 {
		c.WatchInterval = DefaultWatchInterval
	}
	if c.RenewFraction == 0 {
		c.RenewFraction = DefaultRenewFraction
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Counters == nil {
		c.Counters = new(relay.Counters)
	}
	return c
}

// validate checks a Config already filled by withDefaults.
func (c Config) validate() error {
	if !(c.RenewFraction > 0 && c.RenewFraction < 1) { // also rejects NaN
		return fmt.Errorf("tunnel: RenewFraction %v is not in [0, 1)", c.RenewFraction)
	}
	if c.HAConnections < 1 || c.HAConnections > MaxHAConnections {
		return fmt.Errorf("tunnel: HAConnections %d is not in [1, %d]", c.HAConnections, MaxHAConnections)
	}
	if c.GatewaySilence > 0 && c.GatewaySilence < 2*c.IdleHeartbeat {
		return fmt.Errorf("tunnel: GatewaySilence %v is shorter than twice IdleHeartbeat %v", c.GatewaySilence, c.IdleHeartbeat)
	}
	if c.RenewBackoffMax < c.RenewBackoffMin {
		return fmt.Errorf("tunnel: RenewBackoffMax %v is shorter than RenewBackoffMin %v", c.RenewBackoffMax, c.RenewBackoffMin)
	}
	return c.QUIC.Validate()
}

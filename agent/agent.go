// Package agent is the Outpost agent: it enrolls once with a one-time token and
// then keeps an outbound QUIC tunnel to the gateway. Its parts live under
// agent/internal; this package is the face the outpost binary calls.
//
// Naming: a Config configures a long-lived value built by New; an Options
// struct tunes one call (EnrollOptions tunes one Enroll).
package agent

import (
	"context"
	"os"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/agent/internal/config"
	"github.com/outposthq/outpost/agent/internal/enroll"
	"github.com/outposthq/outpost/agent/internal/tunnel"
	"github.com/outposthq/outpost/dataplane/transport"
)

// DefaultConfigDir is where agent.json and certs/ live unless OUTPOST_AGENT_DIR
// or --config-dir says otherwise.
const DefaultConfigDir = "/etc/outpost-agent"

// ConfigDirEnv names the environment variable that overrides DefaultConfigDir.
const ConfigDirEnv = "OUTPOST_AGENT_DIR"

// ConfigDir returns flagValue if set, else $OUTPOST_AGENT_DIR, else DefaultConfigDir.
func ConfigDir(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if v := os.Getenv(ConfigDirEnv); v != "" {
		return v
	}
	return DefaultConfigDir
}

// Errors Enroll may return (wrapped), for callers that branch on them.
var (
	ErrTokenMalformed = enroll.ErrTokenMalformed
	ErrTokenExpired   = enroll.ErrTokenExpired
	ErrPinMismatch    = enroll.ErrPinMismatch
	ErrUnreachable    = enroll.ErrUnreachable
	ErrRefused        = enroll.ErrRefused
	ErrConfigDir      = enroll.ErrConfigDir
)

// TunnelConfig is the agent's section of agent.json ("Tunnel"), as
// enrollment writes it and the agent reads it before every connection and
// on SIGHUP; docs/configuration.md describes each key.
type TunnelConfig = config.Tunnel

// EnrollOptions configure Enroll; see the fields' comments in the enroll package.
type EnrollOptions = enroll.Options

// EnrollResult describes the identity Enroll wrote.
type EnrollResult = enroll.Result

// Enroll exchanges a one-time enrollment token for an agent identity written to
// o.ConfigDir: a locally generated key (0600), the signed certificate, the
// gateway CA and agent.json. On error the previous identity, if any, is intact.
func Enroll(ctx context.Context, o EnrollOptions, logger hclog.Logger) (EnrollResult, error) {
	if logger != nil {
		o.Logger = logger.Named("enroll")
	}
	return enroll.Enroll(ctx, o)
}

// Defaults of RunnerConfig: what a zero field means. They are exported for the
// outpost binary, whose flags show them.
const (
	// DefaultDrainTimeout is how long live sessions may take to finish when
	// the runner stops (RunnerConfig.DrainTimeout).
	DefaultDrainTimeout = tunnel.DefaultDrainTimeout
	// DefaultIdleHeartbeat is how long the agent may hear nothing from the
	// gateway before it sends a Heartbeat (RunnerConfig.IdleHeartbeat):
	// about the most an idle agent takes to notice a restarted gateway.
	DefaultIdleHeartbeat = tunnel.DefaultIdleHeartbeat
	// DefaultRenewFraction is the part of the certificate's lifetime left
	// when the agent renews it (RunnerConfig.RenewFraction).
	DefaultRenewFraction = tunnel.DefaultRenewFraction
	// DefaultHAConnections is how many distinct gateway replicas the agent
	// keeps a connection to (RunnerConfig.HAConnections).
	DefaultHAConnections = tunnel.DefaultHAConnections
	// MaxHAConnections bounds RunnerConfig.HAConnections.
	MaxHAConnections = tunnel.MaxHAConnections
	// DefaultMaxSessions is the number of concurrent sessions the gateway may
	// open through the agent (RunnerConfig.QUIC.MaxIncomingStreams).
	DefaultMaxSessions = transport.DefaultMaxIncomingStreams
)

// RunnerConfig configures the Runner NewRunner builds; see tunnel.Config for
// the fields and their defaults.
type RunnerConfig = tunnel.Config

// Runner keeps the tunnel up: Run until its context ends (then it drains),
// Reload to re-read the config (SIGHUP; Run also notices a change of
// agent.json on disk by itself). Against a cluster of gateway replicas it
// keeps RunnerConfig.HAConnections connections, each to a distinct replica
// (Connections counts them). It renews the agent certificate before it
// expires; RenewalFailures counts the failed attempts. Run returns before
// its context ends only with a PermanentError (ErrPermanent): what retrying
// cannot fix.
type Runner = tunnel.Agent

// ErrNotEnrolled is wrapped by the error Run returns when the config
// directory holds no identity.
var ErrNotEnrolled = tunnel.ErrNotEnrolled

// ErrPermanent is matched (errors.Is) by every error Run returns: a failure
// that retrying cannot fix until someone acts — an unusable config
// directory at start, or the gateway refusing the agent's identity (it was
// deleted) on two attempts in a row. The error's text says what to do.
var ErrPermanent = tunnel.ErrPermanent

// PermanentError is the type of the errors Run returns: Err is what failed,
// Action what to do about it.
type PermanentError = tunnel.PermanentError

// NewRunner returns the tunnel runner for cfg.ConfigDir.
func NewRunner(cfg RunnerConfig, logger hclog.Logger) (*Runner, error) {
	if logger != nil {
		cfg.Logger = logger.Named("tunnel")
	}
	return tunnel.New(cfg)
}

// Enrolled reports whether dir holds an enrolled identity, and its agent id.
func Enrolled(dir string) (string, bool) {
	f, ok, err := config.Load(dir)
	if err != nil || !ok || f.Tunnel.AgentId == "" {
		return "", false
	}
	return f.Tunnel.AgentId, true
}

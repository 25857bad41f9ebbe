// Package metrics defines the gateway's Prometheus metrics on a registry of its own
// (never the global one), so tests and embedders can run several gateways in one process.
package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Metrics holds the gateway's collectors. Build it with New; it is safe for
// concurrent use.
type Metrics struct {
	// Registry holds every collector below plus the Go and process collectors.
	Registry *prometheus.Registry

	// APIRequests counts management API calls by full gRPC method and status code.
	APIRequests *prometheus.CounterVec
	// Enrollments counts Enroll calls by outcome ("success" or a lowercase gRPC code).
	Enrollments *prometheus.CounterVec
	// AgentsConnected is the number of agents with a live tunnel.
	AgentsConnected prometheus.Gauge
	// AgentConnections counts tunnel connection attempts by outcome
	// ("accepted", "not_accepted", "unavailable", "superseded",
	// "gateway_full").
	AgentConnections *prometheus.CounterVec
	// ControlMessages counts control messages received by type.
	ControlMessages *prometheus.CounterVec
	// AgentRTT is the smoothed QUIC round-trip time per agent, in seconds.
	AgentRTT *prometheus.GaugeVec
	// SessionsActive is the number of client sessions open now.
	SessionsActive prometheus.Gauge
	// SessionsTotal counts finished client sessions by outcome.
	SessionsTotal *prometheus.CounterVec
	// Bytes counts session bytes by direction ("up": client → target).
	Bytes *prometheus.CounterVec
	// SessionSetup is the time from a client's connect to an open path.
	SessionSetup prometheus.Histogram
	// Failovers counts the times a session went on to its next agent
	// candidate, by reason: "refused" (the agent answered Error),
	// "timeout" (no answer within the answer timeout), "no_sign_of_life"
	// (nothing heard from the agent within the hedge delay: the next
	// candidate was started in parallel), "unavailable" (not connected, at
	// its session limit, or a transport error).
	Failovers *prometheus.CounterVec
	// HedgeLateSuccesses counts sessions an agent opened after another
	// candidate had already won; each was closed at once.
	HedgeLateSuccesses prometheus.Counter
	// CertRenewals counts agent certificate renewals by outcome ("renewed",
	// "refused": the CSR is unusable, has another key or the certificate is
	// not yet in its renewal window, "throttled": the agent renewed less
	// than a minute ago, "error": signing or the store failed).
	CertRenewals *prometheus.CounterVec
	// APIPanics counts management API calls whose handler panicked, by
	// method; the call answered Internal and the gateway kept serving.
	APIPanics *prometheus.CounterVec
	// RoutesRejected counts advertised routes refused because they lie
	// outside the agent's approved routes, once per advertisement that
	// changed the agent's routes (a new epoch).
	RoutesRejected prometheus.Counter
	// RouteAdvertisementsRefused counts route advertisements refused whole,
	// by reason ("too_many_routes": over the per-agent route limit;
	// "rate_limited": over the per-agent route changes per minute).
	RouteAdvertisementsRefused *prometheus.CounterVec
	// AuditRecordsWritten counts session audit records (a session's start
	// or end) committed to the store.
	AuditRecordsWritten prometheus.Counter
	// AuditRecordsDropped counts session audit records lost, by reason:
	// "queue_full" (the audit queue was full), "store_error" (the store
	// failed every attempt to write the record's batch), "closed" (recorded
	// after the audit writer closed), "invalid" (a record the store refuses).
	AuditRecordsDropped *prometheus.CounterVec
	// AuditQueued is the number of session audit records waiting to be
	// written.
	AuditQueued prometheus.Gauge
}

// New creates the collectors and registers them on a fresh registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		APIRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "api_requests_total",
			Help:      "Management API calls (gRPC and REST) by method and gRPC status code.",
		}, []string{"method", "code"}),
		Enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "enrollments_total",
			Help:      "Agent enrollment attempts by outcome.",
		}, []string{"outcome"}),
		AgentsConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "outpost",
			Name:      "agents_connected",
			Help:      "Agents with a live QUIC tunnel.",
		}),
		AgentConnections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "agent_connections_total",
			Help:      "Agent tunnel connections by admission outcome.",
		}, []string{"outcome"}),
		ControlMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "control_messages_total",
			Help:      "Control messages received from agents by type.",
		}, []string{"type"}),
		AgentRTT: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "outpost",
			Name:      "agent_quic_rtt_seconds",
			Help:      "Smoothed QUIC round-trip time of each connected agent.",
		}, []string{"agent_id"}),
		SessionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "outpost",
			Name:      "sessions_active",
			Help:      "Client sessions open now.",
		}),
		SessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "sessions_total",
			Help:      "Finished client sessions by outcome.",
		}, []string{"outcome"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "session_bytes_total",
			Help:      "Bytes carried by client sessions, by direction (up: client to target).",
		}, []string{"direction"}),
		SessionSetup: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "outpost",
			Name:      "session_setup_seconds",
			Help:      "Time from a client's connect to an open path to the target.",
			Buckets:   prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		Failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "session_failovers_total",
			Help:      "Times a session went on to its next agent candidate, by reason (refused, timeout, no_sign_of_life, unavailable).",
		}, []string{"reason"}),
		HedgeLateSuccesses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "session_hedge_late_successes_total",
			Help:      "Sessions an agent opened after another candidate had won; closed at once.",
		}),
		CertRenewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "agent_cert_renewals_total",
			Help:      "Agent certificate renewals over the control stream by outcome.",
		}, []string{"outcome"}),
		APIPanics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "api_panics_total",
			Help:      "Management API calls whose handler panicked (answered Internal), by method.",
		}, []string{"method"}),
		RoutesRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "routes_rejected_total",
			Help:      "Advertised routes refused as outside the agent's approved routes, counted once per route change.",
		}),
		RouteAdvertisementsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "route_advertisements_refused_total",
			Help:      "Route advertisements refused whole, by reason (too_many_routes, rate_limited).",
		}, []string{"reason"}),
		AuditRecordsWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "audit_records_written_total",
			Help:      "Session audit records (starts and ends) committed to the store.",
		}),
		AuditRecordsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outpost",
			Name:      "audit_records_dropped_total",
			Help:      "Session audit records lost, by reason (queue_full, store_error, closed, invalid).",
		}, []string{"reason"}),
		AuditQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "outpost",
			Name:      "audit_queue_records",
			Help:      "Session audit records waiting to be written to the store.",
		}),
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.APIRequests,
		m.Enrollments,
		m.CertRenewals,
		m.AgentsConnected,
		m.AgentConnections,
		m.ControlMessages,
		m.AgentRTT,
		m.SessionsActive,
		m.SessionsTotal,
		m.Bytes,
		m.SessionSetup,
		m.Failovers,
		m.HedgeLateSuccesses,
		m.APIPanics,
		m.RoutesRejected,
		m.RouteAdvertisementsRefused,
		m.AuditRecordsWritten,
		m.AuditRecordsDropped,
		m.AuditQueued,
	)
	return m
}

// UnaryInterceptor counts each unary call once it has finished.
func (m *Metrics) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	m.APIRequests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return resp, err
}

package agent

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outposthq/outpost/dataplane/relay"
)

// MetricsHandler serves the agent's Prometheus metrics, read from r and
// counters (the relay.Counters given to r in RunnerConfig.Counters), on a
// registry of its own: whether the tunnel is up and how many connections
// (to distinct gateway replicas) it has, the live sessions, the
// bytes relayed each way, the failed certificate renewals, and the Go and
// process collectors.
func MetricsHandler(r *Runner, counters *relay.Counters) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "outpost", Subsystem: "agent", Name: "connected",
			Help: "1 while the tunnel to the gateway is up, else 0.",
		}, func() float64 {
			if r.Connected() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "outpost", Subsystem: "agent", Name: "connections",
			Help: "Tunnel connections up now, each to a distinct gateway replica (at most --ha-connections).",
		}, func() float64 { return float64(r.Connections()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "outpost", Subsystem: "agent", Name: "sessions_active",
			Help: "Sessions being served now.",
		}, func() float64 { return float64(r.Active()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "agent", Name: "cert_renewal_failures_total",
			Help: "Failed certificate renewal attempts (refused, timed out, unusable); the agent keeps its current certificate and retries.",
		}, func() float64 { return float64(r.RenewalFailures()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "agent", Name: "bytes_to_target_total",
			Help: "Bytes relayed from the gateway to targets.",
		}, func() float64 { return float64(counters.AToB()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "outpost", Subsystem: "agent", Name: "bytes_from_target_total",
			Help: "Bytes relayed from targets to the gateway.",
		}, func() float64 { return float64(counters.BToA()) }),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

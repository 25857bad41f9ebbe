package agent

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/outposthq/outpost/dataplane/relay"
)

func TestMetricsHandler(t *testing.T) {
	var counters relay.Counters
	r, err := NewRunner(RunnerConfig{ConfigDir: t.TempDir(), Counters: &counters}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	MetricsHandler(r, &counters).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		"outpost_agent_connected 0\n",
		"outpost_agent_connections 0\n",
		"outpost_agent_sessions_active 0\n",
		"outpost_agent_cert_renewal_failures_total 0\n",
		"outpost_agent_bytes_to_target_total 0\n",
		"outpost_agent_bytes_from_target_total 0\n",
		"go_goroutines ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

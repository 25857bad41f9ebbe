package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/cluster"
)

// selfListed waits until the gateway lists itself in ListGateways as
// registered after since, and returns that entry and the whole list.
func selfListed(t *testing.T, r *running, key string, since time.Time) (*outpostv1.Gateway, []*outpostv1.Gateway) {
	t.Helper()
	admin := outpostv1.NewAgentAdminServiceClient(r.grpcConn(t))
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := admin.ListGateways(withKey(context.Background(), key), &outpostv1.ListGatewaysRequest{})
		if err != nil {
			t.Fatalf("ListGateways: %v", err)
		}
		for _, g := range resp.GetGateways() {
			if g.GetSelf() && g.GetStartedAt().AsTime().After(since) {
				return g, resp.GetGateways()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway does not list itself: %v", resp.GetGateways())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A SQLite gateway is a cluster of one: it lists itself alone, serving,
// with its own endpoints, under the replica id kept in its data directory,
// the same after a restart.
func TestClusterOfOne(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	key := adminKey(t, dir)
	self, all := selfListed(t, r, key, time.Time{})
	b, err := os.ReadFile(filepath.Join(dir, cluster.ReplicaIDFile))
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(string(b))
	if len(all) != 1 || self.GetReplicaId() != id || self.GetState() != outpostv1.GatewayState_GATEWAY_STATE_SERVING ||
		self.GetApiEndpoint() != r.addr || self.GetQuicEndpoint() != r.g.QUICAddr().String() || self.GetName() == "" {
		t.Fatalf("ListGateways = %v, want this gateway alone (replica %s, api %s)", all, id, r.addr)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	r2 := start(t, dir)
	again, all := selfListed(t, r2, key, self.GetStartedAt().AsTime())
	if len(all) != 1 || again.GetReplicaId() != id || again.GetState() != outpostv1.GatewayState_GATEWAY_STATE_SERVING {
		t.Errorf("after a restart: %v, want replica %s alone, serving", all, id)
	}
}

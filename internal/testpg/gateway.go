package testpg

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// StoreEnv is the environment variable that moves the gateway test suites
// onto PostgreSQL: with OUTPOST_TEST_STORE=postgres, GatewayStore gives
// every test a database of its own; unset (or anything else), the suites
// use their SQLite file as before. `make unit-postgres` sets it.
const StoreEnv = "OUTPOST_TEST_STORE"

// OnPostgres reports whether the gateway suites run on PostgreSQL.
func OnPostgres() bool { return os.Getenv(StoreEnv) == "postgres" }

// gatewayStores remembers the database and seal key of each test's data
// directory, so that a gateway the test restarts on it finds the state its
// first one left.
var (
	gatewayMu     sync.Mutex
	gatewayStores = map[gatewayKey]gatewayStore{}
)

type gatewayKey struct {
	tb      testing.TB
	dataDir string
}

type gatewayStore struct{ dsn, sealKeyFile string }

// GatewayStore returns the store URL and seal-key file a test's gateway on
// dataDir should use: both empty (the SQLite default) unless OnPostgres,
// and then one database and key per data directory of the test, as the
// SQLite file is one per data directory: a gateway restarted on the same
// directory finds its state, two gateways on two directories share
// nothing. The key is 32 random bytes in a file of the test's own
// temporary directory.
func GatewayStore(tb testing.TB, dataDir string) (store, sealKeyFile string) {
	tb.Helper()
	if !OnPostgres() {
		return "", ""
	}
	k := gatewayKey{tb, dataDir}
	gatewayMu.Lock()
	s, ok := gatewayStores[k]
	gatewayMu.Unlock()
	if ok {
		return s.dsn, s.sealKeyFile
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		tb.Fatalf("testpg: seal key: %v", err)
	}
	s.sealKeyFile = filepath.Join(tb.TempDir(), "seal.key")
	if err := os.WriteFile(s.sealKeyFile, key, 0o600); err != nil {
		tb.Fatalf("testpg: seal key: %v", err)
	}
	s.dsn = DSN(tb)
	gatewayMu.Lock()
	gatewayStores[k] = s
	gatewayMu.Unlock()
	tb.Cleanup(func() {
		gatewayMu.Lock()
		delete(gatewayStores, k)
		gatewayMu.Unlock()
	})
	return s.dsn, s.sealKeyFile
}

package transport

import (
	"crypto/tls"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	got := Config{}.withDefaults()
	want := Config{
		IdleTimeout:                120 * time.Second,
		KeepAlivePeriod:            15 * time.Second,
		HandshakeTimeout:           10 * time.Second,
		MaxIncomingStreams:         4096,
		MaxStreamReceiveWindow:     4 << 20,
		MaxConnectionReceiveWindow: 32 << 20,
		MemoryBudget:               1 << 30,
	}
	if got != want {
		t.Fatalf("defaults:\n got %+v\nwant %+v", got, want)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero Config invalid: %v", err)
	}
}

func TestConfigQUICDefaults(t *testing.T) {
	q := Config{}.QUIC()
	checks := []struct {
		name      string
		got, want any
	}{
		{"HandshakeIdleTimeout", q.HandshakeIdleTimeout, 5 * time.Second},
		{"MaxIdleTimeout", q.MaxIdleTimeout, 120 * time.Second},
		{"KeepAlivePeriod", q.KeepAlivePeriod, 15 * time.Second},
		{"InitialStreamReceiveWindow", q.InitialStreamReceiveWindow, uint64(512 << 10)},
		{"MaxStreamReceiveWindow", q.MaxStreamReceiveWindow, uint64(4 << 20)},
		{"InitialConnectionReceiveWindow", q.InitialConnectionReceiveWindow, uint64(512 << 10)},
		{"MaxConnectionReceiveWindow", q.MaxConnectionReceiveWindow, uint64(32 << 20)},
		{"MaxIncomingStreams", q.MaxIncomingStreams, int64(4096)},
		{"MaxIncomingUniStreams", q.MaxIncomingUniStreams, int64(-1)},
		{"EnableDatagrams", q.EnableDatagrams, false},
		{"Allow0RTT", q.Allow0RTT, false},
		{"AllowConnectionWindowIncrease set", q.AllowConnectionWindowIncrease != nil, true},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestConfigQUICOverrides(t *testing.T) {
	budget := NewMemoryBudget(1 << 20)
	c := Config{
		IdleTimeout:                30 * time.Second,
		KeepAlivePeriod:            5 * time.Second,
		HandshakeTimeout:           3 * time.Second,
		MaxIncomingStreams:         10,
		MaxStreamReceiveWindow:     256 << 10, // below the initial window
		MaxConnectionReceiveWindow: 8 << 20,
		Budget:                     budget,
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	q := c.QUIC()
	if q.MaxIdleTimeout != 30*time.Second || q.KeepAlivePeriod != 5*time.Second {
		t.Errorf("timeouts: idle %v keep-alive %v", q.MaxIdleTimeout, q.KeepAlivePeriod)
	}
	if q.HandshakeIdleTimeout != 1500*time.Millisecond {
		t.Errorf("HandshakeIdleTimeout = %v, want 1.5s", q.HandshakeIdleTimeout)
	}
	if q.MaxIncomingStreams != 10 {
		t.Errorf("MaxIncomingStreams = %d", q.MaxIncomingStreams)
	}
	if q.InitialStreamReceiveWindow != 256<<10 || q.MaxStreamReceiveWindow != 256<<10 {
		t.Errorf("stream window initial %d max %d, want both 256 KiB", q.InitialStreamReceiveWindow, q.MaxStreamReceiveWindow)
	}
	if q.MaxConnectionReceiveWindow != 8<<20 {
		t.Errorf("MaxConnectionReceiveWindow = %d", q.MaxConnectionReceiveWindow)
	}
	// The callback draws on the given budget.
	if !q.AllowConnectionWindowIncrease(nil, 1<<20) || q.AllowConnectionWindowIncrease(nil, 1) {
		t.Error("callback does not enforce the shared budget")
	}
	if budget.Used() != 1<<20 {
		t.Errorf("budget used %d, want %d", budget.Used(), 1<<20)
	}
	// Each QUIC call without Budget gets its own budget.
	q1, q2 := Config{MemoryBudget: 100}.QUIC(), Config{MemoryBudget: 100}.QUIC()
	if !q1.AllowConnectionWindowIncrease(nil, 100) || !q2.AllowConnectionWindowIncrease(nil, 100) {
		t.Error("separate QUIC calls share a budget")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		c     Config
		field string // "" means valid
	}{
		{"zero", Config{}, ""},
		{"negative idle", Config{IdleTimeout: -1}, "IdleTimeout"},
		{"negative keep-alive", Config{KeepAlivePeriod: -1}, "KeepAlivePeriod"},
		{"negative handshake", Config{HandshakeTimeout: -time.Second}, "HandshakeTimeout"},
		{"negative streams", Config{MaxIncomingStreams: -1}, "MaxIncomingStreams"},
		{"negative budget", Config{MemoryBudget: -1}, "MemoryBudget"},
		{"keep-alive not below idle", Config{IdleTimeout: 10 * time.Second, KeepAlivePeriod: 10 * time.Second}, "KeepAlivePeriod"},
		{"keep-alive default above idle", Config{IdleTimeout: 10 * time.Second}, "KeepAlivePeriod"},
		{"short idle with short keep-alive", Config{IdleTimeout: 10 * time.Second, KeepAlivePeriod: 3 * time.Second}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Validate()
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.field != "" && err == nil:
				t.Fatalf("no error, want one about %s", tt.field)
			case tt.field != "" && !strings.Contains(err.Error(), tt.field):
				t.Fatalf("error %q does not name %s", err, tt.field)
			}
		})
	}
}

func TestTLSClone(t *testing.T) {
	for name, fn := range map[string]func(*tls.Config) *tls.Config{"server": ServerTLS, "client": ClientTLS} {
		t.Run(name, func(t *testing.T) {
			base := &tls.Config{
				ServerName: "gw.example",
				MinVersion: tls.VersionTLS12,
				NextProtos: []string{"h2", "http/1.1"},
				ClientAuth: tls.RequireAndVerifyClientCert,
			}
			got := fn(base)
			if got == base {
				t.Fatal("returned the base config itself")
			}
			if got.MinVersion != tls.VersionTLS13 || got.MaxVersion != tls.VersionTLS13 {
				t.Errorf("versions %x..%x, want TLS 1.3 only", got.MinVersion, got.MaxVersion)
			}
			if !reflect.DeepEqual(got.NextProtos, []string{ALPN}) {
				t.Errorf("NextProtos = %v", got.NextProtos)
			}
			if got.ServerName != "gw.example" || got.ClientAuth != tls.RequireAndVerifyClientCert {
				t.Error("other settings not kept")
			}
			// The base is untouched, including its NextProtos backing array.
			if base.MinVersion != tls.VersionTLS12 || base.MaxVersion != 0 ||
				!reflect.DeepEqual(base.NextProtos, []string{"h2", "http/1.1"}) {
				t.Errorf("base mutated: %+v", base)
			}
			if n := fn(nil); n.MinVersion != tls.VersionTLS13 || !reflect.DeepEqual(n.NextProtos, []string{ALPN}) {
				t.Errorf("nil base: %+v", n)
			}
		})
	}
	if ALPN != "gw-agent-tunnel/1" {
		t.Errorf("ALPN = %q", ALPN)
	}
}

package transport

import (
	"context"
	"crypto/sha256"
	"io"
	"math"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// allow is allowLocked with the lock taken, for fake connection keys.
func (b *MemoryBudget) allowKey(key any, done <-chan struct{}, delta uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.allowLocked(key, done, delta)
}

func (b *MemoryBudget) tracked() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

func TestMemoryBudgetLimit(t *testing.T) {
	b := NewMemoryBudget(100)
	live := make(chan struct{})
	dead := make(chan struct{})
	if !b.allowKey("a", dead, 60) {
		t.Fatal("first grant refused")
	}
	if !b.allowKey("b", live, 40) {
		t.Fatal("grant up to the limit refused")
	}
	if b.allowKey("b", live, 1) {
		t.Fatal("grant over the limit allowed")
	}
	if got := b.Used(); got != 100 {
		t.Fatalf("used %d, want 100", got)
	}
	// "a" closes: its bytes come back at the next refusal.
	close(dead)
	if !b.allowKey("b", live, 50) {
		t.Fatal("grant refused although a closed connection held 60 bytes")
	}
	if got, n := b.Used(), b.tracked(); got != 90 || n != 1 {
		t.Fatalf("used %d tracked %d, want 90 and 1", got, n)
	}
	if b.allowKey("c", live, math.MaxUint64) {
		t.Fatal("huge delta allowed")
	}
	b.mu.Lock()
	b.releaseLocked("b")
	b.mu.Unlock()
	if got := b.Used(); got != 0 {
		t.Fatalf("used %d after release, want 0", got)
	}
}

func TestMemoryBudgetZeroValue(t *testing.T) {
	var b MemoryBudget
	if b.Limit() != DefaultMemoryBudget {
		t.Fatalf("limit %d", b.Limit())
	}
	if !b.allowKey("a", nil, DefaultMemoryBudget) || b.allowKey("b", nil, 1) {
		t.Fatal("zero value does not enforce DefaultMemoryBudget")
	}
	if NewMemoryBudget(0).Limit() != DefaultMemoryBudget || NewMemoryBudget(-5).Limit() != DefaultMemoryBudget {
		t.Fatal("NewMemoryBudget(<=0) is not the default")
	}
}

// Dead connections are swept as the map grows, even when the budget is never
// exhausted, so the map stays proportional to live connections.
func TestMemoryBudgetSweepOnGrowth(t *testing.T) {
	b := NewMemoryBudget(1 << 30)
	dead := make(chan struct{})
	close(dead)
	for i := range 1000 {
		if !b.allowKey(i, dead, 1) {
			t.Fatal("refused")
		}
	}
	if n := b.tracked(); n >= minSweepThreshold {
		t.Fatalf("%d dead connections still tracked", n)
	}
	live := make(chan struct{})
	for i := range 1000 {
		b.allowKey(1000+i, live, 1)
	}
	if n := b.tracked(); n < 1000 || n > 1000+minSweepThreshold {
		t.Fatalf("tracked %d, want the 1000 live ones plus a few dead", n)
	}
}

// A real connection grows its window only within the budget, keeps working
// when the budget is spent, and its share comes back once it is closed.
func TestMemoryBudgetQUIC(t *testing.T) {
	checkGoroutines(t)
	for _, tc := range []struct {
		name   string
		limit  int64
		growth bool
	}{
		{"room", 64 << 20, true},
		{"exhausted", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			budget := NewMemoryBudget(tc.limit)
			serverConn := transfer(t, Config{Budget: budget}, 16<<20)
			used := budget.Used()
			t.Logf("budget used after 16 MiB: %d bytes", used)
			if tc.growth && used == 0 {
				t.Error("connection window never grew")
			}
			if !tc.growth && used != 0 {
				t.Errorf("used %d of a 1-byte budget", used)
			}
			if used > tc.limit {
				t.Errorf("used %d > limit %d", used, tc.limit)
			}
			// The connection is closed: a sweep gives its share back.
			<-serverConn.Context().Done()
			budget.mu.Lock()
			budget.sweepLocked()
			budget.mu.Unlock()
			if got := budget.Used(); got != 0 {
				t.Errorf("used %d after the connection closed", got)
			}
			budget.Release(serverConn) // unknown now: no effect
		})
	}
}

// transfer sends n bytes from a client to a server over a fresh QUIC
// connection built from c, checks them, closes everything and returns the
// server's connection.
func transfer(t *testing.T, c Config, n int) *quic.Conn {
	t.Helper()
	serverTLS, clientTLS := testTLS(t)
	conn, err := ListenUDP("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tr := &quic.Transport{Conn: conn}
	defer tr.Close()
	ln, err := tr.Listen(serverTLS, c.QUIC())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		conn *quic.Conn
		sum  [32]byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() { done <- r }()
		if r.conn, r.err = ln.Accept(ctx); r.err != nil {
			return
		}
		s, err := r.conn.AcceptStream(ctx)
		if err != nil {
			r.err = err
			return
		}
		h := sha256.New()
		if _, r.err = io.Copy(h, s); r.err != nil {
			return
		}
		copy(r.sum[:], h.Sum(nil))
		s.Close()
	}()

	cc, err := quic.DialAddr(ctx, ln.Addr().String(), clientTLS, Config{}.QUIC())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.CloseWithError(0, "")
	if cc.ConnectionState().TLS.NegotiatedProtocol != ALPN {
		t.Errorf("ALPN %q", cc.ConnectionState().TLS.NegotiatedProtocol)
	}
	s, err := cc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for sent := 0; sent < n; sent += len(data) {
		h.Write(data)
		if _, err := s.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if [32]byte(h.Sum(nil)) != r.sum {
		t.Fatal("data corrupted")
	}
	if _, err := io.Copy(io.Discard, s); err != nil {
		t.Fatal(err)
	}
	cc.CloseWithError(0, "done")
	r.conn.CloseWithError(0, "done")
	return r.conn
}

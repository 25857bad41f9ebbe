package testlb

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// echoUDP answers every datagram with its name until the test ends.
func echoUDP(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDPAddrPort([]byte(name), from)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// ask sends one datagram from a new socket and returns the answer.
func ask(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("?")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// New clients go round robin over the backends, skipping those down.
func TestRoundRobin(t *testing.T) {
	b := Start(t, echoUDP(t, "a"), echoUDP(t, "b"), echoUDP(t, "c"))
	var got []string
	for range 4 {
		got = append(got, ask(t, b.Addr()))
	}
	b.SetDown(1)
	got = append(got, ask(t, b.Addr()), ask(t, b.Addr()))
	b.SetUp(1)
	got = append(got, ask(t, b.Addr()))
	want := []string{"a", "b", "c", "a", "c", "a", "b"}
	// After "a" (4th) the next is "b", down: "c"; then "a"; then "b" again.
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("answers %v, want %v", got, want)
		}
	}
}

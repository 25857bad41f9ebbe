package main

import (
	"net"
	"testing"
)

// TestReadHeader checks that the entry keeps the bytes a client sends right
// after its header line, in the same segment.
func TestReadHeader(t *testing.T) {
	tests := []struct {
		name      string
		send      string
		wantAgent string
		wantTgt   string
		wantEarly string
		wantErr   bool
	}{
		{"header only", "agent-1 127.0.0.1:80\n", "agent-1", "127.0.0.1:80", "", false},
		{"header and data", "agent-1 127.0.0.1:80\nxyz", "agent-1", "127.0.0.1:80", "xyz", false},
		{"one field", "agent-1\n", "", "", "", true},
		{"three fields", "a b c\n", "", "", "", true},
		{"no newline", "agent-1 127.0.0.1:80", "", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			client, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := ln.AcceptTCP()
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close()
			if _, err := client.Write([]byte(tt.send)); err != nil {
				t.Fatal(err)
			}
			client.(*net.TCPConn).CloseWrite()
			agent, target, early, err := readHeader(server)
			if (err != nil) != tt.wantErr {
				t.Fatalf("readHeader error = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if agent != tt.wantAgent || target != tt.wantTgt || string(early) != tt.wantEarly {
				t.Errorf("readHeader = %q, %q, %q; want %q, %q, %q", agent, target, early, tt.wantAgent, tt.wantTgt, tt.wantEarly)
			}
		})
	}
}

func TestParseListening(t *testing.T) {
	tests := []struct {
		line string
		want string
		ok   bool
	}{
		{"listening on 127.0.0.1:40123; Ctrl-C to stop\n", "127.0.0.1:40123", true},
		{"listening on 127.0.0.1:40123; the token is single-use: serving one connection\n", "127.0.0.1:40123", true},
		{"listening on [::1]:22\n", "[::1]:22", true},
		{"2026-01-01T00:00:00Z [WARN]  connect: something\n", "", false},
		{"listening on \n", "", false},
	}
	for _, tt := range tests {
		got, ok := parseListening(tt.line)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseListening(%q) = %q, %v; want %q, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}

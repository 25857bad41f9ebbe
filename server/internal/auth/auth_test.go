package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestNewKey(t *testing.T) {
	s1, h1, err := NewKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s2, _, _ := NewKey(rand.Reader)
	if s1 == s2 {
		t.Fatal("two keys are equal")
	}
	if !strings.HasPrefix(s1, KeyPrefix) || len(s1) < len(KeyPrefix)+43 {
		t.Fatalf("key %q: want prefix %q and >= 256 bits", s1, KeyPrefix)
	}
	if !bytes.Equal(h1, HashKey(s1)) || len(h1) != 32 {
		t.Fatal("hash mismatch")
	}
	if _, _, err := NewKey(bytes.NewReader(nil)); err == nil {
		t.Fatal("NewKey with an empty entropy source succeeded")
	}
}

func TestValidateScopes(t *testing.T) {
	if err := ValidateScopes([]string{ScopeAgentsRead, ScopeAll}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]string{nil, {"agents.delete"}, {ScopeAgentsRead, ""}} {
		if err := ValidateScopes(bad); err == nil {
			t.Errorf("ValidateScopes(%q) = nil", bad)
		}
	}
}

func TestAuthorize(t *testing.T) {
	keys := map[string]Key{
		"good":    {ID: "k1", Scopes: []string{ScopeAgentsRead}},
		"admin":   {ID: "k2", Scopes: []string{ScopeAll}},
		"revoked": {ID: "k3", Scopes: []string{ScopeAll}, Revoked: true},
	}
	hashes := map[string]Key{}
	for s, k := range keys {
		hashes[string(HashKey(s))] = k
	}
	broken := errors.New("disk on fire")
	lookup := func(_ context.Context, h []byte) (Key, error) {
		if string(h) == string(HashKey("broken")) {
			return Key{}, broken
		}
		k, ok := hashes[string(h)]
		if !ok {
			return Key{}, ErrUnknownKey
		}
		return k, nil
	}
	a, err := NewAuthorizer(lookup, map[string]string{
		"/x.S/Read":   ScopeAgentsRead,
		"/x.S/Write":  ScopeAgentsWrite,
		"/x.S/Enroll": Public,
	}, "/grpc.health.v1.Health/")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, header string
		want                 codes.Code
	}{
		{"no key", "/x.S/Read", "", codes.Unauthenticated},
		{"not bearer", "/x.S/Read", "Basic good", codes.Unauthenticated},
		{"unknown key", "/x.S/Read", "Bearer nope", codes.Unauthenticated},
		{"revoked key", "/x.S/Read", "Bearer revoked", codes.Unauthenticated},
		{"missing scope", "/x.S/Write", "Bearer good", codes.PermissionDenied},
		{"right scope", "/x.S/Read", "Bearer good", codes.OK},
		{"lowercase scheme", "/x.S/Read", "bearer good", codes.OK},
		{"admin any listed", "/x.S/Write", "Bearer admin", codes.OK},
		{"unlisted needs all", "/x.S/Other", "Bearer good", codes.PermissionDenied},
		{"unlisted admin", "/x.S/Other", "Bearer admin", codes.OK},
		{"public method", "/x.S/Enroll", "", codes.OK},
		{"public service", "/grpc.health.v1.Health/Check", "", codes.OK},
		{"lookup failure", "/x.S/Read", "Bearer broken", codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.header != "" {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", tt.header))
			}
			var got context.Context
			_, err := a.UnaryInterceptor(ctx, nil, &grpc.UnaryServerInfo{FullMethod: tt.method}, func(ctx context.Context, _ any) (any, error) {
				got = ctx
				return nil, nil
			})
			if c := status.Code(err); c != tt.want {
				t.Fatalf("code = %v (%v), want %v", c, err, tt.want)
			}
			if tt.want == codes.PermissionDenied && !strings.Contains(err.Error(), "scope") {
				t.Errorf("PermissionDenied message %q does not name the scope", err)
			}
			if tt.want == codes.OK && tt.header != "" {
				if _, ok := KeyFromContext(got); !ok {
					t.Error("handler context carries no key")
				}
			}
		})
	}
}

package transport

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
)

// Replica identity (issue 17). A gateway that is one replica of a cluster
// presents a server certificate carrying, besides its host names, the URI
// SAN urn:outpost:replica:<replica-id>, the replica id being a lowercase
// hyphenated UUID. An agent reads it during the handshake to tell the
// replicas behind one endpoint apart. A certificate without it is a
// gateway that is a cluster of one (SQLite, or older than clusters). A
// seed-protocol agent ignores the extra SAN: nothing changes on the wire.

// ReplicaURIPrefix starts the URI SAN that names a gateway replica.
const ReplicaURIPrefix = "urn:outpost:replica:"

// ReplicaURI returns the URI SAN naming replica id. Errors: id is not a
// lowercase hyphenated UUID.
func ReplicaURI(id string) (*url.URL, error) {
	if !isReplicaID(id) {
		return nil, fmt.Errorf("transport: replica id %q is not a lowercase hyphenated UUID", id)
	}
	return url.Parse(ReplicaURIPrefix + id)
}

// ReplicaIDFromCert returns the replica id of a gateway certificate: the
// id of its first URI SAN of the form ReplicaURIPrefix + UUID. ok is false
// when c is nil or carries none (a gateway that is a cluster of one).
func ReplicaIDFromCert(c *x509.Certificate) (id string, ok bool) {
	if c == nil {
		return "", false
	}
	for _, u := range c.URIs {
		if id, found := strings.CutPrefix(u.String(), ReplicaURIPrefix); found && isReplicaID(id) {
			return id, true
		}
	}
	return "", false
}

// isReplicaID reports whether s is a UUID in its lowercase hyphenated
// textual form (8-4-4-4-12 hex digits).
func isReplicaID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := range len(s) {
		switch c := s[i]; {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		default:
			return false
		}
	}
	return true
}

package pki

import (
	"crypto/x509"
	"net/url"

	"github.com/outposthq/outpost/dataplane/transport"
)

// The replica identity in the server certificate (issue 17): a gateway
// that is one replica of a cluster (Config.ReplicaID set) presents a server
// certificate that also carries the URI SAN urn:outpost:replica:<id>, so
// that an agent behind one endpoint can tell the replicas apart and hold
// connections to distinct ones. The URI's format is defined once, in
// dataplane/transport, which the agent also uses (the agent may not import
// the server's packages).

// ReplicaURI returns the URI SAN naming replica id. Errors: id is not a
// lowercase hyphenated UUID.
func ReplicaURI(id string) (*url.URL, error) { return transport.ReplicaURI(id) }

// ReplicaIDFromCert returns the replica id a certificate carries in its
// URI SAN; ok is false when it carries none (a gateway that is a cluster
// of one) or c is nil.
func ReplicaIDFromCert(c *x509.Certificate) (id string, ok bool) {
	return transport.ReplicaIDFromCert(c)
}

// replicaURIs returns the URI SANs of a server certificate for replica id:
// none for "", else the replica URI. Errors: a malformed id.
func replicaURIs(id string) ([]*url.URL, error) {
	if id == "" {
		return nil, nil
	}
	u, err := ReplicaURI(id)
	if err != nil {
		return nil, err
	}
	return []*url.URL{u}, nil
}

// replicaOf returns the replica id cert carries, or "".
func replicaOf(cert *x509.Certificate) string {
	id, _ := ReplicaIDFromCert(cert)
	return id
}

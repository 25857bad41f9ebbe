package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Connections to several gateway replicas (issue 17). The agent runs
// HAConnections connection loops, "slots"; slot 0 is the primary. Each
// connection's handshake reads the replica id from the gateway's server
// certificate (transport.ReplicaIDFromCert) and claims it for its slot: a
// replica another slot holds, or is handshaking with, is refused before the
// handshake completes, so that gateway never registers the connection (and
// never supersedes the other one), and the slot dials again from a new UDP
// socket. A gateway whose certificate names no replica is a cluster of one:
// the extra slots (1 and up) dial only while the primary's gateway names a
// replica, and refuse a gateway that names none.
//
// Certificate renewal happens on one connection only: the primary, the
// established connection of the lowest slot (slot 0 unless it is down). When
// it is up again with the renewed certificate, the other slots reconnect with
// it one at a time: a slot rolls over only while no other one is rolling.

// errDuplicateReplica is wrapped by the error of a handshake the agent
// aborted because another of its connections holds that replica, and by
// that of an extra slot that reached a gateway naming no replica.
var errDuplicateReplica = errors.New("replica already held")

// noRoll is fleet.rolling when no slot is reconnecting for a renewal.
const noRoll = -1

// fleet tracks the slots of an Agent. Safe for concurrent use.
type fleet struct {
	mu sync.Mutex
	// held maps a slot to the replica it holds or is handshaking with (""
	// for a gateway naming none).
	held map[int]string
	// up maps a slot whose connection is established to the DER of the
	// agent certificate it uses.
	up map[int][]byte
	// cluster is true while the primary's last connection reached a gateway
	// naming a replica: the extra slots dial.
	cluster bool
	// latest is the DER of the latest renewed certificate (nil before a
	// renewal); rolling is the slot reconnecting with it, or noRoll.
	latest  []byte
	rolling int
	// renewer is the slot whose renewal is in flight, or noRoll.
	renewer int
	// changed is closed and replaced at every change of up, cluster,
	// latest or rolling.
	changed chan struct{}
}

func newFleet() *fleet {
	return &fleet{held: map[int]string{}, up: map[int][]byte{}, rolling: noRoll, renewer: noRoll, changed: make(chan struct{})}
}

// notifyLocked wakes the waiters of changes.
func (f *fleet) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// changes returns a channel closed at the next change.
func (f *fleet) changes() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// claim records that slot is handshaking with replica id, or returns an
// error wrapping errDuplicateReplica if another slot holds it, or if slot
// is an extra one and the gateway names no replica.
func (f *fleet) claim(slot int, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == "" && slot > 0 {
		return fmt.Errorf("%w: the gateway names no replica (a cluster of one): only the primary connection is kept", errDuplicateReplica)
	}
	for s, h := range f.held {
		if s != slot && h == id {
			return fmt.Errorf("%w: replica %s is held by connection %d", errDuplicateReplica, id, s)
		}
	}
	f.held[slot] = id
	return nil
}

// connected records that slot's connection, using the certificate of DER
// cert, is established, and returns the number of established
// connections and the replicas they hold.
func (f *fleet) connected(slot int, cert []byte) (n int, replicas []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.up[slot] = cert
	if slot == 0 {
		f.cluster = f.held[0] != ""
	}
	if f.rolling == slot {
		f.rolling = noRoll
	}
	f.notifyLocked()
	for s := range f.up {
		replicas = append(replicas, f.held[s])
	}
	slices.Sort(replicas)
	return len(f.up), replicas
}

// release forgets slot's replica and connection: its handshake failed or
// its connection ended.
func (f *fleet) release(slot int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.held, slot)
	if _, ok := f.up[slot]; ok {
		delete(f.up, slot)
		f.notifyLocked()
	}
}

// settled ends slot's roll-over, if it was rolling: its reconnect failed
// (a success ends it in connected).
func (f *fleet) settled(slot int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releaseLocked(&f.rolling, slot)
}

// releaseLocked sets *role (rolling or renewer) to noRoll if slot has it,
// and tells the waiters.
func (f *fleet) releaseLocked(role *int, slot int) {
	if *role == slot {
		*role = noRoll
		f.notifyLocked()
	}
}

// live returns the number of established connections.
func (f *fleet) live() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.up)
}

// isCluster reports whether the extra slots may dial, and a channel closed
// at the next change.
func (f *fleet) isCluster() (bool, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cluster, f.changed
}

// claimRenewal reports whether slot may renew the certificate now: its
// connection is the primary (the lowest established slot) and no other
// renewal is in flight. If so, slot holds the renewal until endRenewal.
func (f *fleet) claimRenewal(slot int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.renewer != noRoll && f.renewer != slot {
		return false
	}
	if _, ok := f.up[slot]; !ok {
		return false
	}
	for s := range f.up {
		if s < slot {
			return false
		}
	}
	f.renewer = slot
	return true
}

// endRenewal releases slot's claim on the renewal.
func (f *fleet) endRenewal(slot int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releaseLocked(&f.renewer, slot)
}

// renewed records cert, the DER of the certificate slot renewed, and
// makes slot the rolling one until it is up with it.
func (f *fleet) renewed(slot int, cert []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latest = cert
	f.rolling = slot
	f.notifyLocked()
}

// roll reports whether slot, whose connection uses the certificate of DER
// cert, must now reconnect with the renewed certificate; if so, slot is
// the rolling one until its new connection is up or fails. It is the
// turn of a slot whose certificate is older than the latest renewed one,
// once a connection is up with that one and no other slot is rolling.
func (f *fleet) roll(slot int, cert []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.latest == nil || bytes.Equal(cert, f.latest) || f.rolling != noRoll {
		return false
	}
	for _, c := range f.up {
		if bytes.Equal(c, f.latest) {
			f.rolling = slot
			f.notifyLocked()
			return true
		}
	}
	return false
}

package tunnel

import (
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/server/internal/store"
)

// The cache serves an agent for ttl after the store vouched for it, holds
// at most max agents (expired ones go first, then the oldest), forgets on
// demand, and does not keep an answer from a lookup that a forget overtook.
func TestAdmissionCache(t *testing.T) {
	clk := fakeclock.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	c := newAdmissionCache(time.Minute, 2, clk.Now)
	put := func(id string) { c.put(store.Agent{ID: id}, c.begin()) }
	has := func(id string) bool { _, ok := c.get(id); return ok }

	put("a")
	clk.Advance(30 * time.Second)
	put("b")
	if !has("a") || !has("b") {
		t.Fatal("fresh entries missing")
	}
	clk.Advance(10 * time.Second)
	put("c") // full: a, the oldest, goes
	if has("a") || !has("b") || !has("c") {
		t.Fatalf("after an eviction: a %v b %v c %v; want b and c", has("a"), has("b"), has("c"))
	}
	clk.Advance(55 * time.Second) // b expired (65 s old), c not (55 s)
	if has("b") || !has("c") {
		t.Fatal("b outlived its ttl, or c did not")
	}
	c.forget("c")
	if has("c") {
		t.Fatal("a forgotten agent is still served")
	}

	mark := c.begin()
	c.forget("d") // a deletion while a lookup of d was under way
	c.put(store.Agent{ID: "d"}, mark)
	if has("d") {
		t.Fatal("an answer older than a forget was kept")
	}

	off := newAdmissionCache(-1, 10, clk.Now)
	off.put(store.Agent{ID: "a"}, off.begin())
	if _, ok := off.get("a"); ok {
		t.Fatal("a disabled cache served an agent")
	}
}

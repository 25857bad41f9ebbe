package approval

import "fmt"

// Dropped is a requested route left out of an enrolling agent's approved
// set, and why.
type Dropped struct {
	Route, Reason string
}

func (d Dropped) String() string { return d.Route + " (" + d.Reason + ")" }

// ForEnrollment returns the approved set of an enrolling agent from the
// routes its token names and the routes its request asks for (both
// canonical), with the requested routes it leaves out:
//
//   - when the token names routes, the request may narrow them, never widen
//     them: a requested subnet inside a token subnet and a requested domain
//     equal to or under a token domain are approved, any other requested
//     route is dropped; an empty request gets the token's set;
//   - when the token names none (or the agent enrolls with the static
//     secret), the request is approved, except the routes too broad to be
//     approved from a request alone (BroadSubnet, BroadDomain), which are
//     dropped: only a token or an operator approves those.
//
// Dropping rather than refusing the enrollment keeps an agent with one bad
// route enrollable; the response's approved set shows what was kept, and
// the agent and the gateway both log the rest.
func ForEnrollment(token, requested Set) (approved Set, dropped []Dropped) {
	if !token.Empty() {
		if requested.Empty() {
			return token, nil
		}
		m := Compile(token)
		for _, p := range requested.Subnets {
			if m.CoversSubnet(p) {
				approved.Subnets = append(approved.Subnets, p)
			} else {
				dropped = append(dropped, Dropped{p.String(), "outside the enrollment token's routes"})
			}
		}
		for _, d := range requested.Domains {
			if m.CoversDomain(d) {
				approved.Domains = append(approved.Domains, d)
			} else {
				dropped = append(dropped, Dropped{d.String(), "outside the enrollment token's routes"})
			}
		}
		return approved.canonical(), dropped
	}
	for _, p := range requested.Subnets {
		if BroadSubnet(p) {
			dropped = append(dropped, Dropped{p.String(), fmt.Sprintf("broader than /%d: only an enrollment token or an operator approves it", MinRequestedBits)})
			continue
		}
		approved.Subnets = append(approved.Subnets, p)
	}
	for _, d := range requested.Domains {
		if BroadDomain(d) {
			dropped = append(dropped, Dropped{d.String(), "a single-label domain: only an enrollment token or an operator approves it"})
			continue
		}
		approved.Domains = append(approved.Domains, d)
	}
	return approved.canonical(), dropped
}

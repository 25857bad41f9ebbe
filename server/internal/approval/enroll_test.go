package approval

import (
	"slices"
	"testing"
)

func TestForEnrollment(t *testing.T) {
	type routes struct{ subnets, domains []string }
	tests := []struct {
		name             string
		token, requested routes
		approved         routes
		dropped          []string
	}{
		{
			name:      "no token routes: the request",
			requested: routes{[]string{"10.1.0.0/16"}, []string{"contoso.local"}},
			approved:  routes{[]string{"10.1.0.0/16"}, []string{"contoso.local"}},
		},
		{
			name: "nothing anywhere",
		},
		{
			name:      "a request alone never gets everything or a single label",
			requested: routes{[]string{"0.0.0.0/0", "0.0.0.0/1", "10.0.0.0/8", "10.1.0.0/16"}, []string{"com", "*.com", "local", "contoso.local"}},
			approved:  routes{[]string{"10.0.0.0/8", "10.1.0.0/16"}, []string{"contoso.local"}},
			dropped:   []string{"0.0.0.0/0", "0.0.0.0/1", "com", "*.com", "local"},
		},
		{
			name:     "token routes, empty request: the token's",
			token:    routes{[]string{"10.0.0.0/8"}, []string{"corp.example"}},
			approved: routes{[]string{"10.0.0.0/8"}, []string{"corp.example"}},
		},
		{
			name:      "token routes narrowed by the request",
			token:     routes{[]string{"10.0.0.0/8"}, []string{"corp.example", "*.lab.test"}},
			requested: routes{[]string{"10.1.0.0/16", "11.0.0.0/8", "0.0.0.0/0"}, []string{"db.corp.example", "corp.example", "lab.test", "*.lab.test", "other.test"}},
			approved:  routes{[]string{"10.1.0.0/16"}, []string{"corp.example", "db.corp.example", "*.lab.test"}},
			dropped:   []string{"11.0.0.0/8", "0.0.0.0/0", "lab.test", "other.test"},
		},
		{
			name:      "a token may approve everything and a single label",
			token:     routes{[]string{"0.0.0.0/0"}, []string{"com"}},
			requested: routes{[]string{"0.0.0.0/0"}, []string{"com", "contoso.com"}},
			approved:  routes{[]string{"0.0.0.0/0"}, []string{"com", "contoso.com"}},
		},
		{
			name:      "a request outside the token approves nothing",
			token:     routes{[]string{"10.0.0.0/24"}, nil},
			requested: routes{[]string{"10.0.0.0/16"}, nil},
			dropped:   []string{"10.0.0.0/16"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, dropped := ForEnrollment(mustParse(t, tc.token.subnets, tc.token.domains), mustParse(t, tc.requested.subnets, tc.requested.domains))
			if want := mustParse(t, tc.approved.subnets, tc.approved.domains); !got.Equal(want) {
				t.Errorf("approved %+v, want %+v", got, want)
			}
			var names []string
			for _, d := range dropped {
				names = append(names, d.Route)
				if d.Reason == "" {
					t.Errorf("dropped %s without a reason", d.Route)
				}
			}
			slices.Sort(names)
			want := slices.Clone(tc.dropped)
			slices.Sort(want)
			if !slices.Equal(names, want) {
				t.Errorf("dropped %v, want %v", names, want)
			}
		})
	}
}

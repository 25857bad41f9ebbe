// Package config reads and writes the agent's configuration file, agent.json.
// The agent owns only its "Tunnel" section; every other top-level key is kept
// byte for byte when the file is rewritten, so the file can be shared with other
// software.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/outposthq/outpost/internal/atomicfile"
)

// FileName is the config file's name inside the config directory.
const FileName = "agent.json"

// section is the top-level key the agent owns.
const section = "Tunnel"

// Tunnel is the agent's section of agent.json (DESIGN.md §7). Paths may be
// relative to the config directory.
type Tunnel struct {
	// Enabled turns the tunnel on; enrollment sets it.
	Enabled bool `json:"Enabled"`
	// GatewayEndpoint is the gateway's QUIC host:port.
	GatewayEndpoint string `json:"GatewayEndpoint"`
	// ClientCertPath, ClientKeyPath and GatewayCaCertPath locate the agent's
	// certificate, its private key and the gateway CA.
	ClientCertPath    string `json:"ClientCertPath"`
	ClientKeyPath     string `json:"ClientKeyPath"`
	GatewayCaCertPath string `json:"GatewayCaCertPath"`
	// ServerSpkiSha256 pins the gateway server key (hex SHA-256 of its SPKI).
	ServerSpkiSha256 string `json:"ServerSpkiSha256"`
	// AdvertiseSubnets are IPv4 CIDRs the agent routes to.
	AdvertiseSubnets []string `json:"AdvertiseSubnets"`
	// AdvertiseDomains are DNS names or *.wildcards the agent routes to.
	AdvertiseDomains []string `json:"AdvertiseDomains"`
	// AutoDetectDomain advertises the host's DNS domain when no route is
	// set: neither AdvertiseSubnets nor AdvertiseDomains. Nil means the
	// default (on).
	AutoDetectDomain *bool `json:"AutoDetectDomain,omitempty"`
	// AgentId and AgentName are the identity the gateway assigned.
	AgentId   string `json:"AgentId"`
	AgentName string `json:"AgentName"`
}

// File is a parsed agent.json: the Tunnel section plus every other key, kept raw.
type File struct {
	Tunnel Tunnel
	// others holds every top-level key except Tunnel, untouched.
	others map[string]json.RawMessage
	// order keeps the original key order so a rewrite diffs cleanly.
	order []string
}

// Load reads dir/agent.json. A missing file is not an error: it returns an empty
// File (and ok=false) that Save will create.
func Load(dir string) (f *File, ok bool, err error) {
	path := filepath.Join(dir, FileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &File{others: map[string]json.RawMessage{}}, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("config: %w", err)
	}
	f, err = Parse(b)
	if err != nil {
		return nil, false, fmt.Errorf("config %s: %w", path, err)
	}
	return f, true, nil
}

// Parse parses the contents of an agent.json.
func Parse(b []byte) (*File, error) {
	f := &File{others: map[string]json.RawMessage{}}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("top level must be a JSON object")
	}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key := kt.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		if key == section {
			td := json.NewDecoder(bytes.NewReader(raw))
			td.DisallowUnknownFields()
			if err := td.Decode(&f.Tunnel); err != nil {
				return nil, fmt.Errorf("%s section: %w", section, err)
			}
		} else {
			if _, dup := f.others[key]; !dup {
				f.order = append(f.order, key)
			}
			f.others[key] = raw
		}
	}
	return f, nil
}

// Marshal renders the file: foreign keys in their original order, then Tunnel.
func (f *File) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("{\n")
	write := func(key string, v json.RawMessage, last bool) error {
		kb, _ := json.Marshal(key)
		var ind bytes.Buffer
		if err := json.Indent(&ind, v, "  ", "  "); err != nil {
			return err
		}
		buf.WriteString("  ")
		buf.Write(kb)
		buf.WriteString(": ")
		buf.Write(ind.Bytes())
		if !last {
			buf.WriteString(",")
		}
		buf.WriteString("\n")
		return nil
	}
	for _, k := range f.order {
		if err := write(k, f.others[k], false); err != nil {
			return nil, fmt.Errorf("config: key %q: %w", k, err)
		}
	}
	tb, err := json.Marshal(f.Tunnel)
	if err != nil {
		return nil, err
	}
	if err := write(section, tb, true); err != nil {
		return nil, err
	}
	buf.WriteString("}\n")
	return buf.Bytes(), nil
}

// Save writes dir/agent.json atomically (0600).
func (f *File) Save(dir string) error {
	b, err := f.Marshal()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, FileName), b, 0o600); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// Resolve returns p made absolute relative to the config directory dir.
func Resolve(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

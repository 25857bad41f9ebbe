package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"

	"github.com/outposthq/outpost/internal/atomicfile"
)

// ReplicaIDFile is the file in a gateway's data directory that holds its
// replica id.
const ReplicaIDFile = "replica.id"

// LoadOrCreateID returns the replica id kept in dataDir/replica.id,
// creating the file with a new random UUID on first use, so a replica
// keeps its id across restarts (and its rows in the store are its own
// again). Replicas must not share a data directory. Two processes creating
// the file at once get the same id: the file is created exclusively.
func LoadOrCreateID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, ReplicaIDFile)
	for range 2 {
		b, err := os.ReadFile(path)
		if err == nil {
			id, err := uuid.Parse(strings.TrimSpace(string(b)))
			if err != nil {
				return "", fmt.Errorf("cluster: %s: not a replica id: %w", path, err)
			}
			return id.String(), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("cluster: replica id: %w", err)
		}
		err = atomicfile.WriteNew(path, []byte(uuid.NewString()+"\n"), 0o600)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("cluster: create %s: %w", path, err)
		}
	}
	return "", fmt.Errorf("cluster: %s: created but unreadable", path)
}

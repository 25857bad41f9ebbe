// Package fuzzcorpus keeps the committed seed corpus of fuzz targets
// (testdata/fuzz/<Target>/<name>, the files "go test" runs as seeds) in
// step with the seeds a test declares, so that the seeds are written once,
// in Go, and the files cannot go stale. It is a test kit: import it from
// _test.go files only.
//
// Usage, in a package's tests:
//
//	func TestFuzzCorpus(t *testing.T) { fuzzcorpus.Check(t, "testdata/fuzz", seeds) }
//
// and "go test -run TestFuzzCorpus -update-corpus" rewrites the files.
package fuzzcorpus

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// update is the -update-corpus flag of every test binary that imports the
// package; a package using it must not define a flag of that name itself.
var update = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpus under testdata/fuzz")

// Seeds are the seeds of several fuzz targets: target name → file name →
// the values of the fuzz function's arguments after *testing.T, in order.
type Seeds map[string]map[string][]any

// File renders one seed in the "go test fuzz v1" format. Values are of the
// types fuzzing accepts: strings, []byte, bool, integers, floats.
func File(values ...any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		switch v := v.(type) {
		case []byte:
			b.WriteString("[]byte(" + strconv.Quote(string(v)) + ")\n")
		case string:
			b.WriteString("string(" + strconv.Quote(v) + ")\n")
		default:
			fmt.Fprintf(&b, "%T(%v)\n", v, v)
		}
	}
	return b.Bytes()
}

// Check fails t for every seed whose file under dir/<target>/ is missing or
// differs from File(values...). With -update-corpus it writes the files
// instead.
func Check(t testing.TB, dir string, seeds Seeds) {
	t.Helper()
	for target, files := range seeds {
		tdir := filepath.Join(dir, target)
		if *update {
			if err := os.MkdirAll(tdir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, values := range files {
			path := filepath.Join(tdir, name)
			want := File(values...)
			if *update {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s missing or stale (run go test -run TestFuzzCorpus -update-corpus): %v", path, err)
			}
		}
	}
}

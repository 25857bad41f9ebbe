package fuzzcorpus

import "testing"

func TestFile(t *testing.T) {
	got := string(File("a\n\"é", false, []byte{0, 'x'}, int64(-3), uint16(7)))
	want := "go test fuzz v1\nstring(\"a\\n\\\"é\")\nbool(false)\n[]byte(\"\\x00x\")\nint64(-3)\nuint16(7)\n"
	if got != want {
		t.Fatalf("File = %q, want %q", got, want)
	}
}

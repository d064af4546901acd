package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCopyRangeTravelsAsOp: a copy_file_range of 64 MiB inside the mount
// (what GNU cp does) reaches the slave as an op, not as bytes: the slave
// copies between its own files and ends byte-identical, while well under
// 1 MiB crosses the network (docs/design.md, Performance model).
func TestCopyRangeTravelsAsOp(t *testing.T) {
	const size = 64 << 20
	k := newPKI(t, "s1")
	s := startSlave(t, k, "s1")
	r, target := relayed(t, "s1", s.addr)
	m := startMasterTo(t, k, []string{target})
	// A new replica is compared once; copies during a pass travel as
	// bytes (mirrorfs/copy.go).
	m.waitLine(`resync pass done`+ofSlave(r.Addr()), 60*time.Second)

	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*131 + i>>12)
	}
	if err := os.WriteFile(filepath.Join(m.mnt, "src"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	converge(t, m, []*slave{s}, 120*time.Second)
	up0, down0 := r.Bytes()

	in, err := os.Open(filepath.Join(m.mnt, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(m.mnt, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// From offset 1, and asking for more than there is: the last call
	// copies short at the source's end, as cp's loop ends.
	offIn, offOut := int64(1), int64(0)
	copied := 0
	for {
		n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, 16<<20, 0)
		if err != nil {
			t.Fatalf("copy_file_range after %d bytes: %v", copied, err)
		}
		if n == 0 {
			break
		}
		copied += n
	}
	if copied != size-1 {
		t.Fatalf("copied %d bytes, want %d", copied, size-1)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	converge(t, m, []*slave{s}, 120*time.Second)

	got, err := os.ReadFile(filepath.Join(s.dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(data[1:]) {
		t.Fatalf("the slave's dst (%d bytes) is not the copy", len(got))
	}
	up, down := r.Bytes()
	sent := up - up0 + down - down0
	t.Logf("copy of %d MiB: %d bytes crossed the relay", size>>20, sent)
	if sent >= 1<<20 {
		t.Errorf("%d bytes crossed the network for a copy inside the mount, want under 1 MiB", sent)
	}
}

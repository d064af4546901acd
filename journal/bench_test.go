package journal

import (
	"errors"
	"io"
	"testing"
)

// BenchmarkAppend appends 4 KiB records (a typical small write op), with
// the default buffer and segment size, bounded to 256 MiB on disk.
func BenchmarkAppend(b *testing.B) {
	j := open(b, b.TempDir(), Options{MaxBytes: 256 << 20})
	body := make([]byte, 4<<10)
	for i := range body {
		body[i] = byte(i)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		seq++
		if err := j.Append(seq, body); err != nil {
			b.Fatal(err)
		}
	}
	if err := j.Flush(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkReader reads back 4 KiB records from the page cache, as a
// Reader serving a lagging slave does.
func BenchmarkReader(b *testing.B) {
	j := open(b, b.TempDir(), Options{})
	body := make([]byte, 4<<10)
	const n = 16 << 10 // 64 MiB
	for seq := uint64(1); seq <= n; seq++ {
		if err := j.Append(seq, body); err != nil {
			b.Fatal(err)
		}
	}
	if err := j.Flush(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	r, err := j.Reader(1)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for b.Loop() {
		if _, _, err := r.Next(); errors.Is(err, io.EOF) {
			r.Close()
			if r, err = j.Reader(1); err != nil {
				b.Fatal(err)
			}
		} else if err != nil {
			b.Fatal(err)
		}
	}
}

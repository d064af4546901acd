package quictransport

import (
	"bytes"
	"math"
	"testing"

	"github.com/tdfs/tdfs/wire"
)

func testEntry(seq uint64, size int) *entry {
	return &entry{seq: seq, size: int64(size), body: make([]byte, size)}
}

func TestBacklogPushGetDrop(t *testing.T) {
	b := backlog{limit: 1 << 20}
	if b.first() != 1 {
		t.Fatalf("empty backlog: first %d, want 1", b.first())
	}
	for seq := uint64(1); seq <= 10; seq++ {
		if b.push(testEntry(seq, 100)) {
			t.Fatalf("push %d reset the backlog", seq)
		}
	}
	if b.first() != 1 || b.head != 10 || b.bytes != 1000 {
		t.Fatalf("first %d head %d bytes %d", b.first(), b.head, b.bytes)
	}
	if e, ok := b.get(7); !ok || e.seq != 7 {
		t.Fatalf("get(7) = %v, %v", e, ok)
	}
	b.dropThrough(4)
	if b.first() != 5 || b.bytes != 600 {
		t.Fatalf("after dropThrough(4): first %d bytes %d", b.first(), b.bytes)
	}
	for _, seq := range []uint64{0, 4, 11} {
		if _, ok := b.get(seq); ok {
			t.Fatalf("get(%d) found an entry not held", seq)
		}
	}
	b.dropThrough(100)
	if b.first() != 11 || b.bytes != 0 || len(b.entries) != 0 {
		t.Fatalf("after dropping all: first %d bytes %d", b.first(), b.bytes)
	}
}

func TestBacklogTrimKeepsNewest(t *testing.T) {
	b := backlog{limit: 250}
	for seq := uint64(1); seq <= 5; seq++ {
		b.push(testEntry(seq, 100))
	}
	if !b.trim(math.MaxUint64) {
		t.Fatal("trim dropped nothing")
	}
	if b.first() != 4 || b.bytes != 200 {
		t.Fatalf("after trim: first %d bytes %d, want 4 and 200", b.first(), b.bytes)
	}
	if b.trim(math.MaxUint64) {
		t.Fatal("second trim dropped more")
	}
	// A single entry larger than the limit stays: it is the newest.
	b.push(testEntry(6, 1000))
	b.trim(math.MaxUint64)
	if b.first() != 6 || b.head != 6 {
		t.Fatalf("oversized newest entry dropped: first %d head %d", b.first(), b.head)
	}
}

// Entries the journal has not written yet stay, whatever the limit.
func TestBacklogTrimKeepsUnjournaled(t *testing.T) {
	b := backlog{limit: 150}
	for seq := uint64(1); seq <= 5; seq++ {
		b.push(testEntry(seq, 100))
	}
	if !b.trim(2) || b.first() != 3 || b.bytes != 300 {
		t.Fatalf("trim through 2: first %d bytes %d, want 3 and 300", b.first(), b.bytes)
	}
	if b.trim(2) {
		t.Fatal("trim through 2 dropped an unjournaled entry")
	}
	if !b.trim(5) || b.first() != 5 {
		t.Fatalf("trim through 5: first %d, want 5 (the newest stays)", b.first())
	}
}

func TestBacklogOutOfOrderPushResets(t *testing.T) {
	b := backlog{limit: 1 << 20}
	b.push(testEntry(1, 10))
	b.push(testEntry(2, 10))
	if !b.push(testEntry(5, 10)) {
		t.Fatal("a gap did not reset the backlog")
	}
	if b.first() != 5 || b.head != 5 || b.bytes != 10 {
		t.Fatalf("after reset: first %d head %d bytes %d", b.first(), b.head, b.bytes)
	}
}

func TestEntryFramedOnce(t *testing.T) {
	c, err := wire.NewCompressor(1)
	if err != nil {
		t.Fatal(err)
	}
	op := &wire.Write{Handle: 1, Data: bytes.Repeat([]byte("abc"), 10000)}
	body := wire.AppendOp(nil, 3, op)
	e := &entry{seq: 3, size: int64(len(body)), body: body}
	f1 := e.framed(c)
	f2 := e.framed(nil)
	if &f1[0] != &f2[0] {
		t.Fatal("framed twice")
	}
	if len(f1) >= len(body) {
		t.Fatalf("compressible body not compressed: %d >= %d", len(f1), len(body))
	}
	d, err := wire.NewDecompressor()
	if err != nil {
		t.Fatal(err)
	}
	kind, got, err := wire.NewFrameReader(bytes.NewReader(f1), d).Next()
	if err != nil || kind != wire.FrameOp || !bytes.Equal(got, body) {
		t.Fatalf("frame does not decode to the body: %v %v", kind, err)
	}
}

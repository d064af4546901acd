package journal

import "testing"

func TestSegmentIndex(t *testing.T) {
	s := &segment{first: 10}
	// Records of 300 KiB: an entry for the first, then every fourth.
	off := int64(headerSize)
	for seq := uint64(10); seq < 30; seq++ {
		s.index = appendIndex(s.index, seq, off)
		off += 300 << 10
	}
	if len(s.index) != 5 || s.index[0].seq != 10 || s.index[1].seq != 14 {
		t.Fatalf("index %v", s.index)
	}
	for seq := uint64(10); seq < 30; seq++ {
		e := s.lookup(seq)
		if e.seq > seq || seq-e.seq >= 4 || e.off != int64(headerSize)+int64(e.seq-10)*(300<<10) {
			t.Errorf("lookup(%d) = %+v", seq, e)
		}
	}
	// Without entries (never the case for a segment with records), the
	// segment's start.
	empty := &segment{first: 7}
	if e := empty.lookup(9); e.seq != 7 || e.off != int64(headerSize) {
		t.Errorf("lookup on an empty index = %+v", e)
	}
}

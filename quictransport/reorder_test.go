package quictransport

import (
	"errors"
	"testing"

	"github.com/tdfs/tdfs/quictransport/wire"
)

func TestReorderAppliesInSeqOrder(t *testing.T) {
	r := newReorder(5, 1000)
	for _, seq := range []uint64{7, 6, 9} {
		if err := r.insert(seq, &wire.Release{Handle: seq}, 10); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, _, ok := r.pop(); ok {
		t.Fatal("popped before op 5 arrived")
	}
	select {
	case <-r.ready:
		t.Fatal("ready poked although op 5 is missing")
	default:
	}
	if err := r.insert(5, &wire.Release{Handle: 5}, 10); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.ready:
	default:
		t.Fatal("op 5 arrived but ready was not poked")
	}
	for want := uint64(5); want <= 7; want++ {
		seq, op, size, ok := r.pop()
		if !ok || seq != want || op.(*wire.Release).Handle != want || size != 10 {
			t.Fatalf("pop = %d %v %d %v, want %d", seq, op, size, ok, want)
		}
	}
	if _, _, _, ok := r.pop(); ok {
		t.Fatal("popped 9 before 8")
	}
	if pending, peak := r.stats(); pending != 10 || peak != 40 {
		t.Fatalf("pending %d peak %d, want 10 and 40", pending, peak)
	}
}

func TestReorderRefusals(t *testing.T) {
	r := newReorder(5, 100)
	if err := r.insert(4, &wire.Sync{}, 1); !errors.Is(err, ErrSeqOutOfOrder) {
		t.Fatalf("op below next: %v", err)
	}
	if err := r.insert(6, &wire.Sync{}, 1); err != nil {
		t.Fatal(err)
	}
	if err := r.insert(6, &wire.Sync{}, 1); !errors.Is(err, ErrSeqOutOfOrder) {
		t.Fatalf("duplicate: %v", err)
	}
	if err := r.insert(7, &wire.Sync{}, 100); !errors.Is(err, ErrLimit) {
		t.Fatalf("beyond the limit: %v", err)
	}
	if codeOf(r.insert(7, &wire.Sync{}, 100)) != wire.CodeLimit {
		t.Fatal("limit error does not map to CodeLimit")
	}
	if codeOf(r.insert(1, &wire.Sync{}, 1)) != wire.CodeProtocol {
		t.Fatal("order error does not map to CodeProtocol")
	}
}

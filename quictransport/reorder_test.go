package quictransport

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tdfs/tdfs/wire"
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
	if err := r.insert(7, &wire.Sync{}, 100); !errors.Is(err, wire.ErrLimit) {
		t.Fatalf("beyond the limit: %v", err)
	}
	if codeOf(r.insert(7, &wire.Sync{}, 100)) != wire.CodeLimit {
		t.Fatal("limit error does not map to CodeLimit")
	}
	if codeOf(r.insert(1, &wire.Sync{}, 1)) != wire.CodeProtocol {
		t.Fatal("order error does not map to CodeProtocol")
	}
}

// Resync items are due once every op up to their position is applied, in
// arrival order, and ops wait for a due item.
func TestReorderItemsAtTheirPositions(t *testing.T) {
	r := newReorder(5, 1000)
	for _, it := range []struct {
		after uint64
		item  wire.ResyncItem
	}{{5, &wire.ResyncDir{Pass: 1, DirID: 1}}, {5, &wire.ResyncDir{Pass: 1, DirID: 2}}, {7, &wire.ResyncEnd{Pass: 1}}} {
		if err := r.insertItem(it.after, it.item, 10); err != nil {
			t.Fatal(err)
		}
	}
	for seq := uint64(5); seq <= 8; seq++ {
		if err := r.insert(seq, &wire.Release{Handle: seq}, 10); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for range 10 {
		if at, it, _, ok := r.popItem(); ok {
			got = append(got, fmt.Sprintf("%v@%d", it.ResyncKind(), at))
			continue
		}
		seq, _, _, ok := r.pop()
		if !ok {
			break
		}
		got = append(got, fmt.Sprint(seq))
	}
	want := "5 dir@5 dir@5 6 7 end@7 8"
	if s := strings.Join(got, " "); s != want {
		t.Fatalf("order %q, want %q", s, want)
	}
	if pending, _ := r.stats(); pending != 0 {
		t.Fatalf("%d bytes still accounted", pending)
	}
}

// A rebasing ResyncBegin moves the op stream: buffered ops up to its
// position are dropped (and their bytes freed), the next op is after+1,
// and the item is due at once.
func TestReorderRebaseMovesTheStream(t *testing.T) {
	r := newReorder(3, 1000)
	for _, seq := range []uint64{4, 6, 9} {
		if err := r.insert(seq, &wire.Release{Handle: seq}, 10); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.insertItem(7, &wire.ResyncBegin{Pass: 1, Rebase: true}, 5); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.ready:
	default:
		t.Fatal("a due rebase did not poke the applier")
	}
	if pending, _ := r.stats(); pending != 15 {
		t.Fatalf("pending %d, want 15 (op 9 and the item)", pending)
	}
	at, it, _, ok := r.popItem()
	if b, isBegin := it.(*wire.ResyncBegin); !ok || !isBegin || !b.Rebase || at != 7 {
		t.Fatalf("popItem = %d %v %v", at, it, ok)
	}
	// A large write sent on a data stream before the Begin arrives late:
	// dropped, not refused, and not buffered.
	if err := r.insert(7, &wire.Release{}, 1); err != nil {
		t.Fatalf("op 7 after a rebase at 7: %v", err)
	}
	if pending, _ := r.stats(); pending != 10 {
		t.Fatalf("pending %d after a late op, want 10 (op 9 only)", pending)
	}
	if _, _, _, ok := r.pop(); ok {
		t.Fatal("popped before op 8 arrived")
	}
	if err := r.insert(8, &wire.Release{Handle: 8}, 10); err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint64{8, 9} {
		if seq, _, _, ok := r.pop(); !ok || seq != want {
			t.Fatalf("pop = %d %v, want %d", seq, ok, want)
		}
	}
}

func TestReorderItemRefusals(t *testing.T) {
	r := newReorder(1, 100)
	if err := r.insertItem(10, &wire.ResyncBegin{Pass: 1}, 10); err != nil {
		t.Fatal(err)
	}
	err := r.insertItem(9, &wire.ResyncEnd{Pass: 1}, 10)
	if !errors.Is(err, ErrProtocol) || codeOf(err) != wire.CodeProtocol {
		t.Fatalf("an item positioned before the previous one: %v", err)
	}
	if err := r.insertItem(20, &wire.ResyncEnd{Pass: 1}, 100); !errors.Is(err, wire.ErrLimit) {
		t.Fatalf("items beyond the bound: %v", err)
	}
}

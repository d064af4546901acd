package quictransport

import (
	"errors"
	"strings"
	"testing"

	"github.com/tdfs/tdfs/wire"
)

// TestReorderControlOrder: the control stream carries ops in increasing
// seq order; the seqs it skips are writes on data streams, of which a
// master has few in flight: a seq that goes backwards on it, or that skips
// more than that, is refused.
func TestReorderControlOrder(t *testing.T) {
	w := &wire.Write{Handle: 1}
	t.Run("backwards", func(t *testing.T) {
		r := newReorder(5, 1000)
		if err := r.insertControl(7, &wire.Sync{}, 1); err != nil {
			t.Fatal(err)
		}
		err := r.insertControl(6, &wire.Sync{}, 1)
		if !errors.Is(err, ErrSeqOutOfOrder) || !strings.Contains(err.Error(), "op 6 (sync) on the control stream after op 7") {
			t.Fatalf("got %v", err)
		}
		if codeOf(err) != wire.CodeProtocol {
			t.Errorf("code %v", codeOf(err))
		}
	})
	t.Run("data fills the gaps", func(t *testing.T) {
		r := newReorder(1, 1000)
		r.maxGap = 2
		// 1 control, 2 and 3 on data streams (3 early), 4 control, 5 and
		// 6 on data streams, 7 control.
		steps := []struct {
			seq     uint64
			control bool
		}{{3, false}, {1, true}, {4, true}, {2, false}, {6, false}, {7, true}, {5, false}}
		for _, s := range steps {
			var err error
			if s.control {
				err = r.insertControl(s.seq, &wire.Sync{}, 1)
			} else {
				err = r.insert(s.seq, w, 1)
			}
			if err != nil {
				t.Fatalf("op %d: %v", s.seq, err)
			}
		}
		for want := uint64(1); want <= 7; want++ {
			if seq, _, _, ok := r.pop(); !ok || seq != want {
				t.Fatalf("pop: %d %v, want %d", seq, ok, want)
			}
		}
		if len(r.gaps) != 0 {
			t.Errorf("gaps left: %v", r.gaps)
		}
	})
	t.Run("skip", func(t *testing.T) {
		r := newReorder(1, 1000)
		r.maxGap = 2
		if err := r.insertControl(3, &wire.Sync{}, 1); err != nil { // 1 and 2 may be in flight
			t.Fatal(err)
		}
		err := r.insertControl(5, &wire.Sync{}, 1) // so may 4, but not 1, 2 and 4
		if !errors.Is(err, ErrSeqOutOfOrder) || !strings.Contains(err.Error(), "ops were skipped") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("huge skip", func(t *testing.T) {
		r := newReorder(1, 1000)
		err := r.insertControl(1<<62, &wire.Sync{}, 1)
		if !errors.Is(err, ErrSeqOutOfOrder) {
			t.Fatalf("got %v", err)
		}
		if len(r.gaps) > r.maxGap+1 {
			t.Errorf("%d gaps recorded", len(r.gaps))
		}
	})
	t.Run("rebase", func(t *testing.T) {
		r := newReorder(1, 1000)
		r.maxGap = 1
		if err := r.insertControl(2, &wire.Sync{}, 1); err != nil { // 1 in flight
			t.Fatal(err)
		}
		// A rebase to 100: op 1 is not wanted any more, and the control
		// stream goes on at 101.
		if err := r.insertItem(100, &wire.ResyncBegin{Pass: 1, Rebase: true}, 1); err != nil {
			t.Fatal(err)
		}
		if err := r.insertControl(101, &wire.Sync{}, 1); err != nil {
			t.Fatal(err)
		}
		if err := r.insertControl(103, &wire.Sync{}, 1); err != nil { // 102 in flight
			t.Fatal(err)
		}
		if err := r.insert(1, w, 1); err != nil { // late, before the rebase: dropped
			t.Fatal(err)
		}
	})
	t.Run("rebase backwards", func(t *testing.T) {
		// A promoted master numbers from its own head, below the old
		// master's: its rebase restarts the control stream there.
		r := newReorder(43, 1000)
		if err := r.insertItem(2, &wire.ResyncBegin{Pass: 1, Rebase: true}, 1); err != nil {
			t.Fatal(err)
		}
		if err := r.insertControl(3, &wire.Sync{}, 1); err != nil {
			t.Fatal(err)
		}
	})
}

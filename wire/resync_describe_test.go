package wire

import (
	"reflect"
	"testing"
)

// Every item and reply names its pass (the Pass field) and itself.
func TestResyncInPassAndString(t *testing.T) {
	check := func(name string, x interface {
		InPass() uint64
		String() string
	}) {
		t.Helper()
		want := reflect.ValueOf(x).Elem().FieldByName("Pass").Uint()
		if got := x.InPass(); got != want {
			t.Errorf("%s: InPass() = %d, want the Pass field %d", name, got, want)
		}
		if x.String() == "" {
			t.Errorf("%s: String() is empty", name)
		}
	}
	kinds := map[ResyncKind]bool{}
	for _, c := range resyncItemCases() {
		check(c.name, c.it)
		kinds[c.it.ResyncKind()] = true
	}
	for _, c := range resyncReplyCases() {
		check(c.name, c.r)
		kinds[c.r.ResyncKind()] = true
	}
	for _, k := range []ResyncKind{ResyncBeginKind, ResyncHandlesKind, ResyncDirKind, ResyncDataKind, ResyncCloseKind,
		ResyncEndKind, ResyncHashesKind, ResyncDirDoneKind} {
		if !kinds[k] {
			t.Errorf("no case of %v", k)
		}
	}
}

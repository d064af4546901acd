package journal

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math"
	"sort"
	"testing"
)

func TestSegName(t *testing.T) {
	for _, seq := range []uint64{0, 1, 9, 10, 12345678901234567890, math.MaxUint64} {
		name := segName(seq)
		got, ok := parseSegName(name)
		if !ok || got != seq {
			t.Errorf("parseSegName(%q) = %d, %v; want %d, true", name, got, ok, seq)
		}
	}
	// Names sort like seqs.
	seqs := []uint64{100, 9, 1 << 40, 10, 1}
	names := make([]string, len(seqs))
	for i, s := range seqs {
		names[i] = segName(s)
	}
	sort.Strings(names)
	sort.Slice(seqs, func(a, b int) bool { return seqs[a] < seqs[b] })
	for i := range seqs {
		if names[i] != segName(seqs[i]) {
			t.Fatalf("sorted names %v do not follow sorted seqs %v", names, seqs)
		}
	}
	for _, name := range []string{
		"", "1.tdj", "0000000000000000001.tdj", "000000000000000000001.tdj",
		"00000000000000000001.tdj.tmp", "0000000000000000000a.tdj", "00000000000000000001.TDJ",
		"-0000000000000000001.tdj", "99999999999999999999.tdj", // beyond MaxUint64
	} {
		if _, ok := parseSegName(name); ok {
			t.Errorf("parseSegName(%q) accepted a name the journal never writes", name)
		}
	}
}

func TestCheckHeader(t *testing.T) {
	other := append([]byte(magic), version+1)
	for _, tc := range []struct {
		b    []byte
		want headerKind
	}{
		{segHeader, headerOK},
		{nil, headerTorn},
		{segHeader[:3], headerTorn},
		{segHeader[:headerSize-1], headerTorn},
		{make([]byte, headerSize), headerTorn},
		{make([]byte, 3), headerTorn},
		{other, headerVersion},
		{[]byte("#!/bin/s"), headerForeign},
		{[]byte("TDFX"), headerForeign},
		{[]byte("TDFSJ1\r\x01"), headerForeign},
	} {
		if got := checkHeader(tc.b); got != tc.want {
			t.Errorf("checkHeader(%q) = %d, want %d", tc.b, got, tc.want)
		}
	}
}

func TestRecordEncoding(t *testing.T) {
	b := appendRecord([]byte("x"), 0x0102030405060708, []byte("body"))
	b = b[1:]
	if len(b) != recOverhead+4 {
		t.Fatalf("record is %d bytes, want %d", len(b), recOverhead+4)
	}
	n, seq := parseRecordHeader(b)
	if n != 4 || seq != 0x0102030405060708 {
		t.Fatalf("parseRecordHeader = %d, %#x", n, seq)
	}
	// Little-endian on every architecture.
	if b[0] != 4 || b[4] != 0x08 || b[11] != 0x01 {
		t.Fatalf("not little-endian: % x", b[:12])
	}
	want := crc32.Checksum(append(b[4:12:12], "body"...), crc32.MakeTable(crc32.Castagnoli))
	if got := binary.LittleEndian.Uint32(b[16:]); got != want {
		t.Fatalf("crc %#x, want CRC-32C over seq and body %#x", got, want)
	}
	r1, r2 := appendRecord(nil, 1, []byte("body")), appendRecord(nil, 2, []byte("body"))
	if bytes.Equal(r1[recHeaderSize:], r2[recHeaderSize:]) {
		t.Fatal("crc does not cover the seq")
	}
}

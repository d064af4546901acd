package quictransport

import (
	"testing"
	"time"
)

func TestSeqClockLag(t *testing.T) {
	var c seqClock
	t0 := time.Unix(1000, 0)
	// Ops 1..100 of 10 bytes, one every millisecond, then a quiet second,
	// then ops 101..110.
	for i := range uint64(100) {
		c.record(i+1, 10, t0.Add(time.Duration(i)*time.Millisecond))
	}
	t1 := t0.Add(time.Second + 99*time.Millisecond)
	for i := range uint64(10) {
		c.record(101+i, 10, t1)
	}
	now := t1.Add(500 * time.Millisecond)
	if b, age := c.lag(110, now); b != 0 || age != 0 {
		t.Errorf("a slave with everything lags %d bytes, %v", b, age)
	}
	if b, age := c.lag(100, now); b != 100 || age != 500*time.Millisecond {
		t.Errorf("lag after op 100: %d bytes, %v; want 100 bytes, 500ms", b, age)
	}
	// Op 51 was appended at t0+50ms; samples are 10ms apart, so the
	// estimate is at most clockEvery early.
	b, age := c.lag(50, now)
	want := now.Sub(t0.Add(50 * time.Millisecond))
	if age < want || age > want+clockEvery {
		t.Errorf("age of op 51: %v, want %v (+%v at most)", age, want, clockEvery)
	}
	if b < 600 || b > 600+10*10 {
		t.Errorf("bytes after op 50: %d, want 600 (+ at most one clockEvery's ops)", b)
	}
	if got := c.bytesThrough(110); got != 1100 {
		t.Errorf("bytesThrough(110) = %d, want 1100", got)
	}
}

// Past clockSamples the history thins out, and stays bounded.
func TestSeqClockBounded(t *testing.T) {
	var c seqClock
	t0 := time.Unix(1000, 0)
	const n = 5 * clockSamples
	for i := range uint64(n) {
		c.record(i+1, 1, t0.Add(time.Duration(i)*clockEvery))
	}
	if len(c.samples) > clockSamples {
		t.Fatalf("%d samples kept, bound %d", len(c.samples), clockSamples)
	}
	now := t0.Add(n * clockEvery)
	if b, age := c.lag(0, now); b != n || age != now.Sub(t0) {
		t.Errorf("lag of a slave with nothing: %d bytes, %v; want %d, %v", b, age, n, now.Sub(t0))
	}
	_, age := c.lag(n/2, now)
	if want := now.Sub(t0.Add(n / 2 * clockEvery)); age < want || age > want+8*clockEvery {
		t.Errorf("age of an old op after thinning: %v, want about %v", age, want)
	}
}

func TestRateWindow(t *testing.T) {
	var r rateWindow
	t0 := time.Unix(1000, 0)
	// 1 MB/s for 10 s, sampled every 100ms.
	for i := range 100 {
		r.add(uint64(i)*100_000, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	now := t0.Add(9900 * time.Millisecond)
	if got := r.rate(now); got < 0.9e6 || got > 1.1e6 {
		t.Errorf("rate %.0f B/s, want about 1e6", got)
	}
	if len(r.samples) > int(rateSpan/rateGap)+2 {
		t.Errorf("%d samples kept", len(r.samples))
	}
	if got := r.rate(now.Add(rateSpan + time.Second)); got != 0 {
		t.Errorf("rate of an idle slave %.0f, want 0", got)
	}
}

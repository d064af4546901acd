package daemon

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// openPty opens a pseudo-terminal pair: what is written to the slave side
// can be read from the master side.
func openPty(t *testing.T) (ptm, pts *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// Raw output: no \n -> \r\n translation in what the test reads.
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Oflag &^= unix.OPOST
	if err := unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	return m, s
}

func TestStatusLineOnTerminal(t *testing.T) {
	ptm, pts := openPty(t)
	s := NewStatusLine(pts)
	if !s.Terminal() {
		t.Fatal("a pty is not taken for a terminal")
	}
	s.Set("bar 1")
	s.Write([]byte("log line\n"))
	s.Set("bar 2")
	s.Set("bar 2") // unchanged: not drawn again
	s.Set("")
	s.Write([]byte("after\n"))
	// A line wider than the terminal is cut: a wrapped one could not be
	// erased.
	if err := unix.IoctlSetWinsize(int(pts.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 10}); err != nil {
		t.Fatal(err)
	}
	s.Set("0123456789abc")
	want := clearSeq + "bar 1" + clearSeq + "log line\n" + "bar 1" + clearSeq + "bar 2" + clearSeq + "after\n" + clearSeq + "012345678"
	buf := make([]byte, 4096)
	var got []byte
	for len(got) < len(want) {
		n, err := ptm.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != want {
		t.Errorf("terminal got\n%q\nwant\n%q", got, want)
	}
}

func TestStatusLineElsewhere(t *testing.T) {
	var b bytes.Buffer
	s := NewStatusLine(&b)
	if s.Terminal() {
		t.Fatal("a buffer is taken for a terminal")
	}
	s.Set("bar")
	s.Write([]byte("log line\n"))
	s.Set("")
	if b.String() != "log line\n" {
		t.Errorf("a log that is not a terminal got %q: bars must not fill it", b.String())
	}
	f, err := os.Create(t.TempDir() + "/log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Error("a file is taken for a terminal")
	}
}

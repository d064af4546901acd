package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tdfs/tdfs/certs"
)

// lines is a slog handler that hands each record's text to a channel.
type lines chan string

func (l lines) Enabled(context.Context, slog.Level) bool { return true }
func (l lines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l lines) WithGroup(string) slog.Handler            { return l }
func (l lines) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	l <- b.String()
	return nil
}

func (l lines) want(t *testing.T, sub string) {
	t.Helper()
	select {
	case s := <-l:
		if !strings.Contains(s, sub) {
			t.Fatalf("logged %q, want %q", s, sub)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("nothing logged, want %q", sub)
	}
}

func TestWatchIdentity(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("ca", certs.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.SavePair(dir, "ca", ca.Cert, ca.Key); err != nil {
		t.Fatal(err)
	}
	issue := func(name string) {
		cert, key, err := ca.Issue(certs.IssueOptions{Name: "s1", Role: certs.RoleSlave})
		if err != nil {
			t.Fatal(err)
		}
		if err := certs.SavePair(dir, name, cert, key); err != nil {
			t.Fatal(err)
		}
	}
	issue("s1")
	f := certs.Files{Cert: filepath.Join(dir, "s1.crt"), Key: filepath.Join(dir, "s1.key"), CA: filepath.Join(dir, "ca.crt")}
	log := make(lines, 16)
	s, err := certs.LoadStore(f, certs.RoleSlave, slog.New(log))
	if err != nil {
		t.Fatal(err)
	}
	hup, tick := make(chan os.Signal), make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watch(ctx, s, slog.New(log), hup, tick, nil)
	}()
	defer func() { cancel(); <-done }()

	hup <- os.Interrupt
	log.want(t, "INFO certificates reloaded: new connections use them; established ones stay up unless the list revokes their peer trigger=SIGHUP")

	// A failed reload names the file and keeps the certificate.
	old := s.Leaf()
	os.Chmod(f.Key, 0o644)
	hup <- os.Interrupt
	log.want(t, "ERROR certificate reload failed, keeping the previous certificates: key file "+f.Key+" is accessible by other users")
	if s.Leaf() != old {
		t.Fatal("a failed reload changed the certificate")
	}

	// A renewed certificate is picked up by the poll once it settled.
	os.Remove(f.Cert)
	os.Remove(f.Key)
	issue("s1")
	tick <- time.Now()
	tick <- time.Now()
	log.want(t, "trigger=file change")
	if s.Leaf().SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Fatal("the renewed certificate was not loaded")
	}
}

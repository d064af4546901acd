package udprelay

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// echo starts a UDP echo server and returns its address.
func echo(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			c.WriteToUDP(buf[:n], from)
		}
	}()
	return c.LocalAddr().String()
}

func client(t *testing.T, r *Relay) *net.UDPConn {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg and returns the echo, or "" if none came within wait.
func roundTrip(t *testing.T, c *net.UDPConn, msg string, wait time.Duration) string {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

func TestRelayForwardsInOrder(t *testing.T) {
	r, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetDelay(time.Millisecond)
	c := client(t, r)
	for i := range 100 {
		if _, err := c.Write([]byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 100)
	for i := range 100 {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if got := string(buf[:n]); got != fmt.Sprint(i) {
			t.Fatalf("datagram %d is %q: order not kept", i, got)
		}
	}
	if fwd, drop := r.Stats(); fwd != 200 || drop != 0 {
		t.Fatalf("stats %d forwarded %d dropped, want 200 and 0", fwd, drop)
	}
}

func TestRelayDelay(t *testing.T) {
	r, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetDelay(50 * time.Millisecond)
	c := client(t, r)
	start := time.Now()
	if got := roundTrip(t, c, "x", 30*time.Second); got != "x" {
		t.Fatalf("echo %q", got)
	}
	// A lower bound only: the delay is added, whatever the load.
	if rtt := time.Since(start); rtt < 100*time.Millisecond {
		t.Fatalf("round trip %v shorter than twice the one-way delay", rtt)
	}
}

func TestRelayPartitionAndLoss(t *testing.T) {
	r, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := client(t, r)
	if got := roundTrip(t, c, "before", 30*time.Second); got != "before" {
		t.Fatalf("echo %q", got)
	}
	r.SetPartition(true)
	if got := roundTrip(t, c, "during", 200*time.Millisecond); got != "" {
		t.Fatalf("a datagram crossed the partition: %q", got)
	}
	r.SetPartition(false)
	r.SetLoss(1)
	if got := roundTrip(t, c, "lost", 200*time.Millisecond); got != "" {
		t.Fatalf("a datagram survived 100%% loss: %q", got)
	}
	r.SetLoss(0)
	if got := roundTrip(t, c, "after", 30*time.Second); got != "after" {
		t.Fatalf("echo after healing %q", got)
	}
	if _, drop := r.Stats(); drop != 2 {
		t.Fatalf("%d dropped, want 2", drop)
	}
}

// Bytes counts the payload forwarded each way; dropped datagrams are not
// counted.
func TestRelayCountsBytes(t *testing.T) {
	r, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := client(t, r)
	if got := roundTrip(t, c, "hello", 10*time.Second); got != "hello" {
		t.Fatalf("echo %q", got)
	}
	if got := roundTrip(t, c, "0123456789", 10*time.Second); got != "0123456789" {
		t.Fatalf("echo %q", got)
	}
	r.SetPartition(true)
	if got := roundTrip(t, c, "lost", 50*time.Millisecond); got != "" {
		t.Fatalf("echo %q through a partition", got)
	}
	// The echo server's reply is counted before it is sent back, so
	// both counts are final once the client has it.
	if up, down := r.Bytes(); up != 15 || down != 15 {
		t.Errorf("bytes %d up, %d down; want 15 and 15", up, down)
	}
}

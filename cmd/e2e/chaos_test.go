package e2e

// Fault injection: a writer with a known history writes through the
// master's mount while the test kills, freezes, partitions, starves and
// wipes the master and its slaves at seeded random points, and checks
// that each slave always holds a state of that history, that what fsync
// returned for survives a kill of the master, that every slave converges
// once the faults stop, and that nothing is written outside the replicas.
//
// CHAOS_TIME (a Go duration, default 30s) is how long faults are
// injected; CHAOS_SEED (default: from the clock) makes every random
// decision, and is printed to reproduce a run (timing still varies);
// CHAOS_SYNC (async or fsync) overrides the durability mode the seed
// picks; CHAOS_SKIP (comma-separated fault kinds) leaves faults out. `make
// chaos` runs TestChaos for CHAOS_TIME (default 10m).

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/internal/treecmp"
	"github.com/tdfs/tdfs/internal/udprelay"
)

// chaosSeed is CHAOS_SEED, or one from the clock; it is logged, and logged
// again if the test fails.
func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("chaos seed=%d (CHAOS_SEED=%d reproduces the run's random decisions)", seed, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chaos: FAILED with seed=%d: rerun with CHAOS_SEED=%d", seed, seed)
		}
	})
	return seed
}

// cStatusRow is one slave of `tdfs-master status --json`.
type cStatusRow struct {
	Addr      string `json:"addr"`
	State     string `json:"state"`
	Applied   uint64 `json:"applied_seq"`
	LastError string `json:"last_error"`
}

// chaosStatus asks the master for its slaves' states, by address; nil if
// it does not answer (it may be frozen or down).
func chaosStatus(m *master) map[string]cStatusRow {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin("tdfs-master"), "status", "-m", m.dir, "--journal", m.journal, "--json").Output()
	if err != nil {
		return nil
	}
	var st struct {
		Slaves []cStatusRow `json:"slaves"`
	}
	if json.Unmarshal(out, &st) != nil {
		return nil
	}
	rows := map[string]cStatusRow{}
	for _, r := range st.Slaves {
		rows[r.Addr] = r
	}
	return rows
}

// chaosSlave is one slave of the chaos run, across its restarts.
type chaosSlave struct {
	name   string
	s      *slave
	target string // its -c value
	addr   string // its address as the master names it (status, logs)
	relay  *udprelay.Relay
	tmpfs  bool // its replica is a tmpfs (disk-full faults)
	// Marks in the current master's log after which the master must have
	// logged a connection to it, and a comparison pass of it, before its
	// tree is checked (-1: none owed).
	needConn, needPass int
	dropped            bool // not in the master's -c list now
	convergedIn        time.Duration
}

// stateChange matches the master's log lines that say a slave's
// connection or state changed.
const stateChange = `(slave state: |slave connected|slave connection failed|pass starting|pass failed|needs a resync|needs resync|slave degraded|reports its tree)`

type chaos struct {
	t     *testing.T
	seed  uint64
	rnd   *rand.Rand
	mode  string
	k     *pki
	base  string
	m     *master
	full  []string // the master's arguments with every slave
	sl    []*chaosSlave
	w     *cWriter
	hist  *cHistory
	start time.Time

	faults      []string
	counts      map[string]int
	checks      int // prefix checks done
	skipped     int // freezes whose check was skipped (slave not streaming or owed a pass)
	fsyncChecks int
	tmpfsSize   string
}

func (c *chaos) elapsed() float64 { return time.Since(c.start).Seconds() }

// logFault records a fault: its time, kind and what came of it.
func (c *chaos) logFault(kind, format string, args ...any) {
	c.counts[kind]++
	line := fmt.Sprintf("+%6.2fs %-13s %s", c.elapsed(), kind, fmt.Sprintf(format, args...))
	c.faults = append(c.faults, line)
	c.t.Logf("chaos fault: %s", line)
}

// fail reports a broken invariant with the seed and the faults so far.
func (c *chaos) fail(format string, args ...any) {
	c.t.Helper()
	list := c.faults
	if len(list) > 40 {
		list = append([]string{fmt.Sprintf("... (%d earlier faults in the log)", len(list)-40)}, list[len(list)-40:]...)
	}
	c.t.Errorf("chaos seed=%d mode=%s at +%.2fs: %s\nfault sequence (CHAOS_SEED=%d):\n  %s", c.seed, c.mode, c.elapsed(),
		fmt.Sprintf(format, args...), c.seed, strings.Join(list, "\n  "))
}

// dur is a seeded random duration in [lo, hi).
func (c *chaos) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(c.rnd.Int64N(int64(hi-lo)))
}

// settled says whether the slave's tree should be a state of the history
// now, as far as the master's log tells: no pass under way or owed, and
// connected since it last restarted.
func (c *chaos) settled(cs *chaosSlave) (bool, string) {
	if cs.dropped {
		return false, "not in the master's -c list"
	}
	slv := ofSlave(cs.addr)
	if cs.needConn >= 0 && len(c.m.linesFrom(cs.needConn, `slave connected`+slv)) == 0 {
		return false, "not reconnected since its restart"
	}
	if cs.needPass >= 0 && len(c.m.linesFrom(cs.needPass, `(check|resync) pass done`+slv)) == 0 {
		return false, "owed a comparison pass"
	}
	ls := c.m.linesFrom(0, `(pass starting|pass done|pass failed|needs a resync|needs resync|reports its tree)`+slv)
	if len(ls) > 0 && !regexp.MustCompile(`(check|resync) pass done`).MatchString(ls[len(ls)-1]) {
		return false, "a pass is due or under way"
	}
	return true, ""
}

// checkable says whether the slave's tree must be a state of the
// history now: settled, and streaming (or catching up, which applies
// the same ops in the same order) in rows.
func (c *chaos) checkable(cs *chaosSlave, rows map[string]cStatusRow) (bool, string) {
	if ok, why := c.settled(cs); !ok {
		return false, why
	}
	if rows == nil {
		return false, "no status from the master"
	}
	r, ok := rows[cs.addr]
	if !ok {
		return false, "not in the master's status"
	}
	if r.State != "streaming" && r.State != "catching-up" {
		return false, "state " + r.State
	}
	return true, ""
}

// matchFrozen reads the replica of a slave the caller froze and finds the
// state of the history it holds.
func (c *chaos) matchFrozen(cs *chaosSlave) (cMatch, bool, string) {
	snap, err := snapTree(cs.s.dir)
	if err != nil {
		return cMatch{}, false, fmt.Sprintf("reading the replica: %v", err)
	}
	m, ok := c.hist.match(snap)
	if !ok {
		return m, false, c.hist.explain(snap)
	}
	return m, true, ""
}

func signal(p *proc, sig syscall.Signal) {
	p.cmd.Process.Signal(sig)
}

// Faults. Each restores what it broke before it returns.

// freezeCheck stops slave cs with SIGSTOP for d; if the master says it
// streams before and after, and nothing happened to its connection
// meanwhile, its tree must be a state of the history (invariant 1). It
// says what it found.
func (c *chaos) freezeCheck(cs *chaosSlave, d time.Duration) string {
	mark := c.m.mark() // before the status: a change after it shows in the log
	rows := chaosStatus(c.m)
	ok, why := c.checkable(cs, rows)
	signal(cs.s.proc, syscall.SIGSTOP)
	t0 := time.Now()
	var m cMatch
	var matched bool
	var explain string
	if ok {
		m, matched, explain = c.matchFrozen(cs)
	}
	time.Sleep(time.Until(t0.Add(d))) // the freeze's seeded duration
	if ok {
		rows2 := chaosStatus(c.m)
		if r, in := rows2[cs.addr]; rows2 == nil || !in || (r.State != "streaming" && r.State != "catching-up") {
			ok, why = false, "not streaming after the freeze"
		} else if l := c.m.linesFrom(mark, stateChange+ofSlave(cs.addr)); len(l) > 0 {
			ok, why = false, "its connection changed during the freeze: "+l[0]
		}
	}
	signal(cs.s.proc, syscall.SIGCONT)
	desc := fmt.Sprintf("%s frozen for %v", cs.name, time.Since(t0).Round(time.Millisecond))
	switch {
	case !ok:
		c.skipped++
		return desc + "; not checked: " + why
	case matched:
		c.checks++
		return fmt.Sprintf("%s; holds the state after op %d of %d (partial=%v)", desc, m.k, c.hist.len()-1, m.partial)
	}
	c.checks++
	c.fail("slave %s (%s), frozen while streaming, holds no state of the writer's history (prefix consistency):\n%s",
		cs.name, cs.addr, explain)
	return desc + "; holds NO state of the history"
}

// slaveFreeze stops a slave with SIGSTOP for 0.5-3 s, and checks its tree.
func (c *chaos) slaveFreeze() {
	cs := c.sl[c.rnd.IntN(len(c.sl))]
	c.logFault("slave-freeze", "%s", c.freezeCheck(cs, c.dur(500*time.Millisecond, 3*time.Second)))
}

// hold lasts d, the duration of a fault, and uses it to freeze and
// check a slave in the middle (a fault elsewhere does not excuse a slave
// from holding a state of the history). It says what it found.
func (c *chaos) hold(d time.Duration) string {
	t0 := time.Now()
	time.Sleep(d / 3) // the fault's seeded duration
	res := c.freezeCheck(c.sl[c.rnd.IntN(len(c.sl))], c.dur(300*time.Millisecond, time.Second))
	time.Sleep(time.Until(t0.Add(d))) // the rest of it
	return res
}

// masterKill kills the master with SIGKILL, checks in fsync mode that
// every slave that streamed holds every op an fsync returned for
// (invariant 2), resolves the writer's op in flight against the backing
// dir, and restarts the master on the same dirs.
func (c *chaos) masterKill() {
	old := c.m
	mark := old.mark() // before the status: a change after it shows in the log
	var cands []*chaosSlave
	if c.mode == "fsync" {
		rows := chaosStatus(c.m)
		for _, cs := range c.sl {
			if ok, _ := c.settled(cs); ok && rows != nil && rows[cs.addr].State == "streaming" {
				cands = append(cands, cs)
			}
		}
	}
	f := int(c.w.lastFsync.Load())
	c.w.setDown()
	old.crash()
	if !c.w.waitIdle(60 * time.Second) {
		c.fail("the writer is still in an op 60s after the master was killed")
		c.t.FailNow()
	}
	var res []string
	for _, cs := range cands {
		if l := old.linesFrom(mark, stateChange+ofSlave(cs.addr)); len(l) > 0 {
			res = append(res, cs.name+": not checked (its connection changed just before the kill)")
			continue
		}
		signal(cs.s.proc, syscall.SIGSTOP)
		m, ok, explain := c.matchFrozen(cs)
		signal(cs.s.proc, syscall.SIGCONT)
		c.fsyncChecks++
		switch {
		case !ok:
			c.fail("after the kill of the master, slave %s holds no state of the history:\n%s", cs.name, explain)
			res = append(res, cs.name+": NO state of the history")
		case m.through() < f:
			c.fail("after the kill of the master, slave %s holds ops up to %d only (the state after %s), but an fsync returned after op %d (%s): what fsync returned for is lost",
				cs.name, m.through(), c.hist.desc(m.k), f, c.hist.desc(f))
			res = append(res, fmt.Sprintf("%s: through op %d < fsynced %d", cs.name, m.through(), f))
		default:
			res = append(res, fmt.Sprintf("%s: through op %d >= fsynced %d", cs.name, m.through(), f))
		}
	}
	msg, err := c.w.resolve("the kill of the master")
	if err != nil {
		c.fail("%v", err)
		msg = err.Error()
	}
	detail := fmt.Sprintf("writer: %s", msg)
	if c.mode == "fsync" {
		detail += fmt.Sprintf("; fsynced through op %d; %s", f, strings.Join(res, "; "))
	}
	c.logFault("master-kill", "%s", detail)
	c.startMaster(old.args, true)
}

// startMaster starts a master on the dirs of the last one, with args;
// crashed: the last one was killed (each slave is owed a comparison).
func (c *chaos) startMaster(args []string, crashed bool) {
	owed := map[*chaosSlave]bool{}
	for _, cs := range c.sl {
		// A pass owed and not done yet is owed by the next master too:
		// the slave's state says its tree is of unknown state.
		owed[cs] = crashed || (cs.needPass >= 0 &&
			len(c.m.linesFrom(cs.needPass, `(check|resync) pass done`+ofSlave(cs.addr))) == 0)
	}
	if c.w.pending != nil {
		// An op failed as the master went down cleanly: find out.
		msg, err := c.w.resolve("the master's stop")
		if err != nil {
			c.fail("%v", err)
		} else {
			c.t.Logf("chaos: %s", msg)
		}
	}
	old := c.m
	c.m = (&master{dir: old.dir, mnt: old.mnt, journal: old.journal, args: args}).restart(c.t)
	for _, cs := range c.sl {
		cs.needConn, cs.needPass = 0, -1
		if owed[cs] {
			cs.needPass = 0
		}
	}
	c.w.setUp(c.m.mnt)
}

// stopMaster stops the master cleanly, the writer paused first (its open
// directory would keep the mount busy).
func (c *chaos) stopMaster() {
	c.w.setDown()
	if !c.w.waitIdle(60 * time.Second) {
		c.fail("the writer is still in an op 60s after it was told to pause")
		c.t.FailNow()
	}
	c.m.stop(syscall.SIGTERM, 120*time.Second)
}

// slaveKill kills a slave with SIGKILL and restarts it on the same dirs.
func (c *chaos) slaveKill() {
	cs := c.sl[c.rnd.IntN(len(c.sl))]
	cs.s.kill()
	mark := c.m.mark()
	cs.s = restartSlave(c.t, c.k, cs.name, cs.s)
	cs.needConn = mark
	c.logFault("slave-kill", "%s", cs.name)
}

// masterFreeze stops the master with SIGSTOP for 0.5-3 s.
func (c *chaos) masterFreeze() {
	d := c.dur(500*time.Millisecond, 3*time.Second)
	signal(c.m.proc, syscall.SIGSTOP)
	time.Sleep(d) // the fault's seeded duration
	signal(c.m.proc, syscall.SIGCONT)
	c.logFault("master-freeze", "for %v", d.Round(time.Millisecond))
}

// relayedSlave is the slave behind the relay.
func (c *chaos) relayedSlave() *chaosSlave {
	for _, cs := range c.sl {
		if cs.relay != nil {
			return cs
		}
	}
	return nil
}

// partition cuts the relayed slave off for 1-8 s, or now and then for
// longer than QUIC's idle timeout (15 s), so that the connection dies.
func (c *chaos) partition() {
	cs := c.relayedSlave()
	d := c.dur(time.Second, 8*time.Second)
	if c.rnd.IntN(4) == 0 {
		d = c.dur(16*time.Second, 20*time.Second)
	}
	cs.relay.SetPartition(true)
	res := c.hold(d)
	cs.relay.SetPartition(false)
	c.logFault("partition", "%s for %v; meanwhile %s", cs.name, d.Round(time.Millisecond), res)
}

// loss drops 5-40% of the relayed slave's datagrams for 2-6 s.
func (c *chaos) loss() {
	cs := c.relayedSlave()
	d := c.dur(2*time.Second, 6*time.Second)
	p := 0.05 + 0.35*c.rnd.Float64()
	cs.relay.SetLoss(p)
	res := c.hold(d)
	cs.relay.SetLoss(0)
	c.logFault("loss", "%s %.0f%% for %v; meanwhile %s", cs.name, 100*p, d.Round(time.Millisecond), res)
}

// diskFull shrinks the tmpfs replica to what it holds plus 256 KiB for
// 2-6 s, then gives it its size back.
func (c *chaos) diskFull() {
	var cs *chaosSlave
	for _, s := range c.sl {
		if s.tmpfs {
			cs = s
		}
	}
	d := c.dur(2*time.Second, 6*time.Second)
	mark := c.m.mark()
	shrunk := ""
	for try := range 5 {
		var st unix.Statfs_t
		if err := unix.Statfs(cs.s.dir, &st); err != nil {
			c.fail("statfs %s: %v", cs.s.dir, err)
			return
		}
		used := (st.Blocks - st.Bfree) * uint64(st.Bsize)
		size := used + 64<<10 + uint64(try)<<20
		out, err := exec.Command("mount", "-o", "remount,size="+strconv.FormatUint(size, 10), cs.s.dir).CombinedOutput()
		if err == nil {
			shrunk = fmt.Sprintf("%d KiB used, limit %d KiB", used>>10, size>>10)
			break
		}
		c.t.Logf("chaos: shrinking the tmpfs: %v %s", err, out)
	}
	if shrunk == "" {
		c.logFault("disk-full", "%s: could not shrink its tmpfs", cs.name)
		return
	}
	// The fault's seeded duration, and up to 4 s more until the slave
	// runs out of room (it may lag, or the writer may be unlinking).
	full := `slave degraded: it cannot apply ops` + ofSlave(cs.addr)
	t0 := time.Now()
	res := c.hold(d)
	for time.Since(t0) < d || (time.Since(t0) < d+4*time.Second && len(c.m.linesFrom(mark, full)) == 0) {
		time.Sleep(100 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	if out, err := exec.Command("mount", "-o", "remount,size="+c.tmpfsSize, cs.s.dir).CombinedOutput(); err != nil {
		c.t.Fatalf("chaos seed=%d: growing the tmpfs back: %v %s", c.seed, err, out)
	}
	hit := len(c.m.linesFrom(mark, full)) > 0
	c.logFault("disk-full", "%s for %v (%s; the master saw it unable to apply: %v); meanwhile %s", cs.name,
		time.Since(t0).Round(time.Millisecond), shrunk, hit, res)
}

// stopSlave stops a slave, by SIGKILL or SIGTERM (seeded).
func (c *chaos) stopSlave(cs *chaosSlave) string {
	if c.rnd.IntN(2) == 0 {
		cs.s.kill()
		return "killed"
	}
	cs.s.stop(syscall.SIGTERM, 60*time.Second)
	return "stopped"
}

// replicaWipe stops a slave, empties its replica (its state dir kept)
// and restarts it: the master must notice and resynchronise it.
func (c *chaos) replicaWipe() {
	cs := c.sl[c.rnd.IntN(len(c.sl))]
	how := c.stopSlave(cs)
	ents, err := os.ReadDir(cs.s.dir)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(cs.s.dir, e.Name())); err != nil {
			c.t.Fatal(err)
		}
	}
	mark := c.m.mark()
	cs.s = restartSlave(c.t, c.k, cs.name, cs.s)
	cs.needConn, cs.needPass = mark, mark
	c.logFault("replica-wipe", "%s %s, %d entries removed, restarted", cs.name, how, len(ents))
}

// stateRemove stops a slave, removes its state dir and restarts it: it
// adopts the master as a new replica would, by comparison.
func (c *chaos) stateRemove() {
	cs := c.sl[c.rnd.IntN(len(c.sl))]
	how := c.stopSlave(cs)
	if err := os.RemoveAll(slaveState(cs.s)); err != nil {
		c.t.Fatal(err)
	}
	mark := c.m.mark()
	cs.s = restartSlave(c.t, c.k, cs.name, cs.s)
	cs.needConn, cs.needPass = mark, mark
	c.logFault("state-rm", "%s %s, state dir removed, restarted", cs.name, how)
}

// reconfig restarts the master without one slave in its -c list for 2-5
// s, then with it again.
func (c *chaos) reconfig() {
	cs := c.sl[c.rnd.IntN(len(c.sl))]
	d := c.dur(2*time.Second, 5*time.Second)
	var args []string
	for i := 0; i < len(c.full); i++ {
		if c.full[i] == "-c" && c.full[i+1] == cs.target {
			i++
			continue
		}
		args = append(args, c.full[i])
	}
	c.stopMaster()
	cs.dropped = true
	c.startMaster(args, false)
	time.Sleep(d) // the fault's seeded duration
	c.stopMaster()
	cs.dropped = false
	c.startMaster(c.full, false)
	c.logFault("reconfig", "master restarted without %s for %v, then with it", cs.name, d.Round(time.Millisecond))
}

// dirListing describes every entry under dir (type, mode, size, mtime,
// contents), to find any change.
func dirListing(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d %d", p, info.Mode(), info.Size(), info.ModTime().UnixNano())
		if d.Type().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %x", sha256.Sum256(data))
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// names lists the entries of dir.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// TestChaos injects faults for CHAOS_TIME while a writer with a known
// history writes through the mount, and checks the invariants above.
func TestChaos(t *testing.T) {
	t.Parallel() // its own daemons, dirs and ports; the suite is long
	seed := chaosSeed(t)
	run := 30 * time.Second
	if s := os.Getenv("CHAOS_TIME"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CHAOS_TIME=%q: %v", s, err)
		}
		run = d
	}
	rnd := rand.New(rand.NewPCG(seed, 0x63686173))
	mode := []string{"async", "fsync"}[rnd.IntN(2)]
	if s := os.Getenv("CHAOS_SYNC"); s != "" {
		mode = s
	}
	c := &chaos{t: t, seed: seed, rnd: rnd, mode: mode, counts: map[string]int{}, tmpfsSize: "512m"}
	t.Logf("chaos seed=%d mode=%s faults for %v", seed, mode, run)

	// One parent for everything the daemons may write, beside a sentinel
	// whose contents must not change.
	c.base = t.TempDir()
	sentinel := filepath.Join(c.base, "sentinel")
	for _, d := range []string{"sentinel/sub", "backing", "s1/replica", "s2/replica"} {
		if err := os.MkdirAll(filepath.Join(c.base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range []string{"sentinel/a", "sentinel/sub/b", "sentinel/sub/c"} {
		if err := os.WriteFile(filepath.Join(c.base, p), genData(seed, uint64(1000+i), 5000*(i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := dirListing(t, sentinel)

	c.k = newPKI(t, "s1", "s2")
	tmpfsIdx := rnd.IntN(2)
	for i, name := range []string{"s1", "s2"} {
		dir := filepath.Join(c.base, name, "replica")
		cs := &chaosSlave{name: name, needConn: -1, needPass: -1, tmpfs: i == tmpfsIdx}
		if cs.tmpfs {
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+c.tmpfsSize, "tdfs-chaos", dir).CombinedOutput(); err != nil {
				t.Fatalf("mount tmpfs: %v\n%s", err, out)
			}
			t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
		}
		cs.s = startSlaveDir(t, c.k, name, "127.0.0.1:0", dir)
		cs.target, cs.addr = cs.s.addr, cs.s.addr
		if name == "s2" {
			cs.relay, cs.target = relayed(t, name, cs.s.addr)
			cs.addr = cs.relay.Addr()
		}
		c.sl = append(c.sl, cs)
	}
	var targets []string
	for _, cs := range c.sl {
		targets = append(targets, cs.target)
	}
	// A sync timeout below the default makes fsyncs held by a partitioned
	// or starved slave give up sooner (more faults per run), and stays
	// above the longest freeze, so a frozen slave is still streaming.
	c.m = startMasterOn(t, c.k, filepath.Join(c.base, "backing"), filepath.Join(c.base, "mstate"), targets,
		"--sync", mode, "-z", "1", "--drain-timeout", "15s", "--sync-timeout", "5s")
	c.full = c.m.args
	for _, cs := range c.sl {
		c.m.waitLine(`resync pass done`+ofSlave(cs.addr), 120*time.Second) // new replicas are compared once
	}

	c.start = time.Now()
	c.hist = newHistory(seed, c.start)
	c.w = newWriter(seed, c.hist, c.m.dir, false, 20*time.Millisecond)
	go c.w.run()
	t.Cleanup(func() {
		// Whatever failed: thaw everything and end the writer; if it is
		// stuck in an op of a master that does not answer, kill the
		// master under it.
		for _, cs := range c.sl {
			signal(cs.s.proc, syscall.SIGCONT)
		}
		signal(c.m.proc, syscall.SIGCONT)
		if !c.w.stop(30 * time.Second) {
			c.m.crash()
			c.w.stop(30 * time.Second)
		}
	})
	c.w.setUp(c.m.mnt)

	type fault struct {
		name   string
		weight int
		f      func()
	}
	faults := []fault{
		{"slave-freeze", 30, c.slaveFreeze},
		{"master-kill", 10, c.masterKill},
		{"slave-kill", 8, c.slaveKill},
		{"master-freeze", 6, c.masterFreeze},
		{"partition", 7, c.partition},
		{"loss", 6, c.loss},
		{"disk-full", 6, c.diskFull},
		{"replica-wipe", 4, c.replicaWipe},
		{"state-rm", 4, c.stateRemove},
		{"reconfig", 4, c.reconfig},
	}
	// CHAOS_SKIP lists fault kinds to leave out (comma-separated), to
	// tell which fault a failure needs.
	if skip := os.Getenv("CHAOS_SKIP"); skip != "" {
		var kept []fault
		for _, f := range faults {
			if !strings.Contains(","+skip+",", ","+f.name+",") {
				kept = append(kept, f)
			}
		}
		faults = kept
		t.Logf("chaos: CHAOS_SKIP=%s: faults %v", skip, func() (n []string) {
			for _, f := range faults {
				n = append(n, f.name)
			}
			return n
		}())
	}
	if len(faults) == 0 {
		t.Fatal("CHAOS_SKIP leaves no fault to inject")
	}
	total := 0
	for _, f := range faults {
		total += f.weight
	}
	// Every kind once first, in a seeded order, so that even a short run
	// has each; then at random by weight.
	order := rnd.Perm(len(faults))
	deadline := c.start.Add(run)
	for n := 0; n < 100000 && time.Now().Before(deadline); n++ {
		time.Sleep(c.dur(300*time.Millisecond, 2*time.Second)) // seeded spacing between faults
		var f fault
		if n < len(order) {
			f = faults[order[n]]
		} else {
			x := rnd.IntN(total)
			for _, f = range faults {
				if x -= f.weight; x < 0 {
					break
				}
			}
		}
		f.f()
		select {
		case <-c.m.done:
			c.fail("the master exited by itself (%v)", c.m.err)
			t.FailNow()
		default:
		}
		for _, s := range c.sl {
			select {
			case <-s.s.done:
				c.fail("slave %s exited by itself (%v)", s.name, s.s.err)
				t.FailNow()
			default:
			}
		}
		for _, p := range c.w.takeProblems() {
			c.fail("writer: %s", p)
		}
	}
	faultsDone := time.Now()

	// The faults stop. Each restored what it broke already (every daemon
	// runs, the master with every slave); undo the network and disk
	// faults once more all the same. The writer stops, and its model
	// must be the backing dir.
	for _, cs := range c.sl {
		signal(cs.s.proc, syscall.SIGCONT)
		if cs.relay != nil {
			cs.relay.SetPartition(false)
			cs.relay.SetLoss(0)
		}
		if cs.tmpfs {
			if out, err := exec.Command("mount", "-o", "remount,size="+c.tmpfsSize, cs.s.dir).CombinedOutput(); err != nil {
				c.fail("growing the tmpfs back: %v %s", err, out)
			}
		}
	}
	signal(c.m.proc, syscall.SIGCONT)
	if !c.w.stop(60 * time.Second) {
		c.fail("the writer is still in an op 60s after it was told to stop")
		t.FailNow()
	}
	if msg, err := c.w.resolve("the end of the run"); err != nil {
		c.fail("%v", err)
	} else {
		t.Logf("chaos: %s", msg)
	}
	for _, p := range c.w.takeProblems() {
		c.fail("writer: %s", p)
	}

	// Invariant 3: every slave converges, with no operator step.
	convergeStart := time.Now()
	convDeadline := convergeStart.Add(120 * time.Second)
	diffs := map[*chaosSlave]string{}
	for {
		pending := 0
		for _, cs := range c.sl {
			if cs.convergedIn > 0 {
				continue
			}
			d, err := treecmp.Diff(c.m.dir, cs.s.dir, treecmp.Options{})
			if err == nil && d == "" {
				cs.convergedIn = time.Since(convergeStart)
				continue
			}
			diffs[cs] = fmt.Sprint(d, err)
			pending++
		}
		if pending == 0 || time.Now().After(convDeadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	converged := true
	for _, cs := range c.sl {
		if cs.convergedIn == 0 {
			converged = false
			c.fail("slave %s (%s) did not converge within 120s of the end of the faults, with no operator step:\n%s\nstatus: %+v\nmaster's last lines about it:\n%s",
				cs.name, cs.addr, firstLines(diffs[cs], 20), chaosStatus(c.m)[cs.addr],
				strings.Join(lastN(c.m.linesFrom(0, ofSlave(cs.addr)), 15), "\n"))
		}
	}
	if converged {
		if out, code := verify(t, c.m); code != 0 {
			c.fail("tdfs-master verify after convergence: exit %d, want 0:\n%s", code, out)
		}
	}

	c.m.stop(syscall.SIGTERM, 120*time.Second)
	for _, cs := range c.sl {
		cs.s.stop(syscall.SIGTERM, 60*time.Second)
	}

	// Invariant 4: nothing written outside the replicas and the dirs
	// each daemon was given.
	if after := dirListing(t, sentinel); after != before {
		c.fail("the sentinel dir changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if got := strings.Join(names(t, c.base), " "); got != "backing mstate s1 s2 sentinel" {
		c.fail("the parent dir holds %q, want backing mstate s1 s2 sentinel", got)
	}
	for _, cs := range c.sl {
		if got := strings.Join(names(t, filepath.Join(c.base, cs.name)), " "); got != "replica state" {
			c.fail("%s's dir holds %q, want replica state", cs.name, got)
		}
	}
	if got := names(t, c.m.mnt); len(got) > 0 {
		c.fail("the mount point, unmounted, holds %v: something wrote beneath the mount", got)
	}

	var kinds []string
	for _, f := range faults {
		kinds = append(kinds, fmt.Sprintf("%s=%d", f.name, c.counts[f.name]))
	}
	var conv []string
	for _, cs := range c.sl {
		if cs.convergedIn > 0 {
			conv = append(conv, fmt.Sprintf("%s=%.1fs", cs.name, cs.convergedIn.Seconds()))
		} else {
			conv = append(conv, cs.name+"=NO")
		}
	}
	t.Logf("chaos summary: seed=%d mode=%s faults_for=%v total=%v writer_ops=%d cut_short=%d history=%d faults={%s} prefix_checks=%d skipped=%d fsync_checks=%d converge={%s} ops={%s} failed=%v",
		seed, mode, faultsDone.Sub(c.start).Round(time.Second), time.Since(c.start).Round(time.Second), c.w.ops.Load(),
		c.w.failed.Load(), c.hist.len()-1, strings.Join(kinds, " "), c.checks, c.skipped, c.fsyncChecks,
		strings.Join(conv, " "), c.w.kindsString(), t.Failed())
}

func firstLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = append(l[:n], fmt.Sprintf("... (%d more)", len(l)-n))
	}
	return strings.Join(l, "\n")
}

func lastN(l []string, n int) []string {
	if len(l) > n {
		return l[len(l)-n:]
	}
	return l
}

// TestChaosMasterKillDuringCreates is the reported workload: one writer
// creates file i with 0-300 KiB then unlinks file i-40 through the mount
// (async, -z 1, a journal) while the master is killed with SIGKILL every
// 2-4 s and restarted on the same dirs; the slave must then converge
// without an operator's help.
func TestChaosMasterKillDuringCreates(t *testing.T) {
	t.Parallel() // its own daemons, dirs and ports; the suite is long
	seed := chaosSeed(t)
	rnd := rand.New(rand.NewPCG(seed, 0x6b696c6c))
	k := newPKI(t, "s1")
	base := t.TempDir()
	for _, d := range []string{"backing", "s1/replica"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := startSlaveDir(t, k, "s1", "127.0.0.1:0", filepath.Join(base, "s1", "replica"))
	m := startMasterOn(t, k, filepath.Join(base, "backing"), filepath.Join(base, "mstate"), []string{s.addr},
		"--sync", "async", "-z", "1")
	m.waitLine(`resync pass done`+ofSlave(s.addr), 120*time.Second)
	start := time.Now()
	hist := newHistory(seed, start)
	w := newWriter(seed, hist, m.dir, true, 0)
	go w.run()
	t.Cleanup(func() {
		if !w.stop(30 * time.Second) {
			m.crash()
			w.stop(30 * time.Second)
		}
	})
	w.setUp(m.mnt)
	var seq []string
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("chaos seed=%d: %s\nkills (CHAOS_SEED=%d):\n  %s", seed, fmt.Sprintf(format, args...), seed, strings.Join(seq, "\n  "))
	}
	kills := 4 + rnd.IntN(3)
	for i := range kills {
		time.Sleep(time.Duration(2000+rnd.IntN(2000)) * time.Millisecond) // seeded spacing between kills
		w.setDown()
		m.crash()
		if !w.waitIdle(60 * time.Second) {
			fail("the writer is still in an op 60s after the master was killed")
			t.FailNow()
		}
		msg, err := w.resolve("the kill of the master")
		if err != nil {
			fail("%v", err)
		}
		seq = append(seq, fmt.Sprintf("+%.2fs kill %d after %d ops: %s", time.Since(start).Seconds(), i+1, w.ops.Load(), msg))
		t.Logf("chaos fault: %s", seq[len(seq)-1])
		m = m.restart(t)
		w.setUp(m.mnt)
	}
	time.Sleep(time.Duration(2000+rnd.IntN(2000)) * time.Millisecond) // the last run writes too
	if !w.stop(60 * time.Second) {
		fail("the writer is still in an op 60s after it was told to stop")
		t.FailNow()
	}
	if _, err := w.resolve("the end of the run"); err != nil {
		fail("%v", err)
	}
	for _, p := range w.takeProblems() {
		fail("writer: %s", p)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		d, err := treecmp.Diff(m.dir, s.dir, treecmp.Options{})
		if err == nil && d == "" {
			t.Logf("chaos summary: seed=%d kills=%d writer_ops=%d cut_short=%d converged in %.1fs",
				seed, kills, w.ops.Load(), w.failed.Load(), time.Since(deadline.Add(-90*time.Second)).Seconds())
			break
		}
		if time.Now().After(deadline) {
			fail("the slave did not converge within 90s of the last kill, with no operator step:\n%s%v\nthe master's errors about it:\n%s",
				firstLines(d, 20), err, strings.Join(lastN(m.linesFrom(0, `level=(WARN|ERROR).*`+ofSlave(s.addr)), 10), "\n"))
			t.FailNow()
		}
		time.Sleep(200 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	if out, code := verify(t, m); code != 0 {
		fail("tdfs-master verify after convergence: exit %d, want 0:\n%s", code, out)
	}
	m.stop(syscall.SIGTERM, 120*time.Second)
	s.stop(syscall.SIGTERM, 60*time.Second)
}

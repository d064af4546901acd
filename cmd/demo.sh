#!/usr/bin/env bash
# make demo: certificates in a temp dir, two slaves and a master on loopback,
# a sample tree written through the mount, proof that the slaves match, and
# a clean-up that leaves nothing behind. Needs root (FUSE mount).
set -euo pipefail
BIN=${1:-bin}
BIN=$(cd "$BIN" && pwd)

if [ "$(id -u)" != 0 ]; then
	echo "demo: needs root to mount FUSE (run: sudo make demo)" >&2
	exit 1
fi

WORK=$(mktemp -d /tmp/tdfs-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if grep -q " $WORK/mnt " /proc/mounts; then umount -l "$WORK/mnt" || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT
# Headings in bold on a terminal only: a log file gets no escape codes.
if [ -t 1 ]; then
	step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
	step() { printf '\n== %s\n' "$*"; }
fi

# wait_log FILE REGEX: wait (up to 30 s) for a line matching REGEX in FILE.
wait_log() {
	for _ in $(seq 300); do
		if grep -qE "$2" "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "demo: timed out waiting for /$2/ in $1:" >&2
	cat "$1" >&2
	exit 1
}

# identical S: wait (up to 10 s) until slave S's replica equals the backing dir.
identical() {
	for _ in $(seq 100); do
		if diff <(listing "$WORK/backing") <(listing "$WORK/$1") >/dev/null &&
			diff -r --no-dereference "$WORK/backing" "$WORK/$1" >/dev/null; then
			echo "$1: identical ($(listing "$WORK/$1" | wc -l) entries)"
			return 0
		fi
		sleep 0.1
	done
	echo "$1 differs from the backing dir:" >&2
	diff <(listing "$WORK/backing") <(listing "$WORK/$1") >&2 || true
	exit 1
}

# start_slave S ADDR: run slave S listening on ADDR (127.0.0.1:0 picks a port).
declare -A spid
start_slave() {
	"$BIN/tdfs-slave" -m "$WORK/$1" --listen "$2" --state "$WORK/$1.state" \
		--cert "$WORK/pki/$1.crt" --key "$WORK/pki/$1.key" --ca "$WORK/pki/ca.crt" \
		2>>"$WORK/$1.log" &
	pids+=($!)
	spid[$1]=$!
}

# listing DIR: one line per entry with everything tdfs replicates but contents.
listing() {
	(cd "$1" && find . -printf '%p %y mode=%m owner=%U:%G size=%s mtime=%T@ link=%l\n' | sort)
}

step "1. certificates: a CA, one master, two slaves"
"$BIN/tdfs-certs" ca --dir "$WORK/pki"
"$BIN/tdfs-certs" master --dir "$WORK/pki" master
"$BIN/tdfs-certs" slave --dir "$WORK/pki" slave1 127.0.0.1 localhost
"$BIN/tdfs-certs" slave --dir "$WORK/pki" slave2 127.0.0.1 localhost

step "2. two slaves on loopback"
mkdir -p "$WORK/backing" "$WORK/mnt" "$WORK/slave1" "$WORK/slave2"
addrs=()
for s in slave1 slave2; do
	start_slave "$s" 127.0.0.1:0
	wait_log "$WORK/$s.log" 'msg=listening'
	addr=$(grep -m1 -oE 'addr=[^ ]+' "$WORK/$s.log" | cut -d= -f2)
	addrs+=("$addr")
	echo "$s listening on $addr, replica $WORK/$s"
done

step "3. the master mounts $WORK/mnt over $WORK/backing"
"$BIN/tdfs-master" -m "$WORK/backing" --mount "$WORK/mnt" --journal "$WORK/master.journal" \
	-c "${addrs[0]}" -c "${addrs[1]}" \
	--cert "$WORK/pki/master.crt" --key "$WORK/pki/master.key" --ca "$WORK/pki/ca.crt" -z 1 \
	2>"$WORK/master.log" &
master=$!
pids+=($master)
wait_log "$WORK/master.log" 'msg=mounted'
grep -m1 'msg=mounted' "$WORK/master.log"

step "4. an application writes a sample tree through the mount"
M=$WORK/mnt
mkdir -p "$M/www/img" "$M/logs"
echo '<h1>hello from tdfs</h1>' > "$M/www/index.html"
head -c 3000000 /dev/urandom > "$M/www/img/photo.bin"
seq 1 200000 > "$M/logs/app.log"
ln "$M/www/index.html" "$M/www/index-hardlink.html"
ln -s index.html "$M/www/home.html"
mv "$M/logs/app.log" "$M/logs/app.log.1"
chmod 0750 "$M/logs"
touch -d '2001-02-03 04:05:06.123456789' "$M/www/index.html"
rm "$M/www/index-hardlink.html"
find "$M" | sed "s|$M|mnt|"

step "5. the slaves match the backing dir (names, types, modes, owners, sizes, mtimes, links, contents)"
identical slave1
identical slave2
echo
echo "backing dir and slave1, side by side (mtimes to the nanosecond):"
paste -d'\n' <(listing "$WORK/backing" | sed 's/^/  master /') <(listing "$WORK/slave1" | sed 's/^/  slave1 /') | head -12

step "6. tdfs-master status: where each slave stands"
status() { "$BIN/tdfs-master" status -m "$WORK/backing" --journal "$WORK/master.journal"; }
status

step "7. slave2 goes away; writes go on; it comes back and catches up with what it missed"
kill "${spid[slave2]}"
wait "${spid[slave2]}" || true
wait_log "$WORK/master.log" "slave state: connecting.*slave=${addrs[1]}"
for i in $(seq 1 20); do echo "written while slave2 was away: $i" > "$M/logs/away-$i.txt"; done
status
start_slave slave2 "${addrs[1]}"
wait_log "$WORK/master.log" "slave connected: resuming.*slave=${addrs[1]}"
grep "slave connected: resuming.*slave=${addrs[1]}" "$WORK/master.log" | tail -n 1
identical slave2
status

step "8. tdfs-master verify: the master compares its tree with each slave (hashes cross the network, not data)"
echo "an intruder edits slave2's copy behind tdfs's back"
echo 'defaced' >> "$WORK/slave2/www/index.html"
"$BIN/tdfs-master" verify -m "$WORK/backing" --journal "$WORK/master.journal" || echo "verify exit status $? (3: a slave differs)"
"$BIN/tdfs-master" verify -m "$WORK/backing" --journal "$WORK/master.journal" --repair
"$BIN/tdfs-master" verify -m "$WORK/backing" --journal "$WORK/master.journal"

step "9. unmount: the master drains what it owes and exits 0"
umount "$WORK/mnt"
wait "$master"
echo "master exited with status $?"
tail -n 3 "$WORK/master.log"
echo
echo "demo: done; everything under $WORK is removed now."

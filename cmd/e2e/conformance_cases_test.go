package e2e

import (
	"fmt"
	"strings"
)

// The conformance cases (conformance_test.go runs them). Each step is one
// line of confExec.run's language: an op and its arguments, separated by
// spaces. Users: root, nobody (65534), u1001 (1001:1001) and u1001g (the
// same, also in group 2000). Every case runs in its own directory, owned by
// its user with mode 0755; its setup runs there as root first.

// confKinds are the kinds of entries: regular file, directory, fifo, unix
// socket, character and block device, symlink.
var confKinds = []string{"reg", "dir", "fifo", "sock", "chr", "blk", "lnk"}

// confMake returns the setup steps that make an entry of kind at p: mode
// 0644 (directories 0755), devices 1,3 and 7,0, symlinks dangling; "full"
// is a directory with a file in it.
func confMake(kind, p string) []string {
	switch kind {
	case "reg":
		return []string{"mknod " + p + " reg 0644"}
	case "dir":
		return []string{"mkdir " + p + " 0755"}
	case "full":
		return []string{"mkdir " + p + " 0755", "mknod " + p + "/inside reg 0644"}
	case "fifo":
		return []string{"mkfifo " + p + " 0644"}
	case "sock":
		return []string{"mknod " + p + " sock 0644"}
	case "chr":
		return []string{"mknod " + p + " chr 0644 1 3"}
	case "blk":
		return []string{"mknod " + p + " blk 0644 7 0"}
	case "lnk":
		return []string{"symlink target-of-" + strings.ReplaceAll(p, "/", "-") + " " + p}
	}
	panic("unknown kind " + kind)
}

// confJoin joins lists of steps.
func confJoin(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// confCases returns the cases; rootLen is the length of the longest of
// the two tree roots (the long path cases fit their absolute paths within
// PATH_MAX under it).
func confCases(rootLen int) []confCase {
	var cs []confCase
	add := func(name, user string, setup []string, st ...string) {
		cs = append(cs, confCase{name: name, user: user, setup: setup, steps: st})
	}
	nonLinks := confKinds[:6]

	// chmod: every kind, as root, as the owner (set-id bits kept for a
	// member of the group), setgid by a non-member (the kernel drops the
	// bit silently), and by a non-owner (EPERM).
	for _, k := range nonLinks {
		add("chmod/"+k+"/root", "root", confMake(k, "x"),
			"chmod x 0", "lstat x", "chmod x 07777", "lstat x", "chmod x 04755", "lstat x",
			"chmod x 02755", "lstat x", "chmod x 01644", "lstat x", "chmod x 0644", "lstat x")
		add("chmod/"+k+"/owner", "nobody", confJoin(confMake(k, "x"), []string{"lchown x 65534 65534"}),
			"chmod x 04755", "lstat x", "chmod x 02750", "lstat x", "chmod x 01711", "lstat x", "chmod x 0600", "lstat x")
		add("chmod/"+k+"/setgid-nonmember", "u1001", confJoin(confMake(k, "x"), []string{"lchown x 1001 0"}),
			"chmod x 02755", "lstat x", "chmod x 06711", "lstat x")
		add("chmod/"+k+"/non-owner", "nobody", confMake(k, "x"), "chmod x 0777", "lstat x")
	}
	add("chmod/setgid-member", "u1001g", []string{"mknod f reg 0644", "chown f 1001 2000", "mkdir d 0755", "chown d 1001 2000"},
		"chmod f 02755", "lstat f", "chmod d 02755", "lstat d")
	add("chmod/symlink", "root", []string{"mknod f reg 0644", "symlink f l", "symlink nowhere dangling"},
		"chmod l 0600", "lstat f", "lstat l", "chmod dangling 0600", "chmod nope 0644", "chmod f/x 0644", "chmod f/ 0644")
	add("chmod/fchmod", "nobody", []string{"mknod f reg 0644", "chown f 65534 65534", "mknod g reg 0666"},
		"open f rdonly >a", "fchmod a 0600", "fstat a", "fchmod a 04711", "fstat a", "close a",
		"open g rdwr >b", "fchmod b 0600", "close b", "lstat g")
	add("chmod/search", "nobody", []string{"mkdir d 0700", "mknod d/f reg 0644", "chown d/f 65534 65534"},
		"chmod d/f 0600", "lstat d/f")

	// chown and lchown: every kind as root (-1 keeps), set-id bits
	// cleared by a chown of a non-directory, and the non-root rules.
	for _, k := range confKinds {
		add("chown/"+k+"/root", "root", confMake(k, "x"),
			"lchown x 1001 2000", "lstat x", "lchown x -1 65534", "lstat x", "lchown x 65534 -1", "lstat x",
			"lchown x -1 -1", "lstat x")
	}
	add("chown/follow", "root", []string{"mknod f reg 0644", "symlink f l"},
		"chown l 1001 1001", "lstat f", "lstat l", "lchown l 65534 65534", "lstat l", "lstat f", "chown nope 1 1")
	for _, k := range []string{"reg", "dir", "fifo"} {
		add("chown/"+k+"/clears-setid", "root", confJoin(confMake(k, "x"), confMake(k, "y"), confMake(k, "z"),
			[]string{"chmod x 06755", "chmod y 02745", "chmod z 06755"}),
			"chown x 1001 -1", "lstat x", "chown y 1001 1001", "lstat y", "chown z -1 -1", "lstat z")
	}
	add("chown/reg/clears-capability", "root", []string{"mkfile f 0755 data", "setxattr f security.capability cap"},
		"getxattr f security.capability", "chown f 1001 -1", "getxattr f security.capability", "lstat f")
	add("chown/owner", "nobody", []string{"mknod f reg 0644", "chown f 65534 65534", "mkdir d 0755", "chown d 65534 65534"},
		"chown f 65534 65534", "chown f -1 65534", "chown f 1001 -1", "chown f -1 0", "chown f -1 -1", "lstat f",
		"chown d -1 0", "chown d 65534 -1", "lstat d")
	add("chown/owner-group", "u1001g", []string{"mkfile f 0644 x", "chown f 1001 1001", "chmod f 06755",
		"mkfile g 0644 x", "chown g 1001 1001", "chmod g 02745", "mkdir d 0755", "chown d 1001 1001", "chmod d 06755"},
		"chown f -1 2000", "lstat f", "chown g -1 2000", "lstat g", "chown d -1 2000", "lstat d", "chown f -1 65534", "lstat f")
	add("chown/non-owner", "nobody", []string{"mknod f reg 0644", "chmod f 04755", "mkdir d 0755"},
		"chown f 65534 -1", "chown f -1 65534", "chown f -1 -1", "lstat f", "lchown d -1 -1", "lstat d")
	add("chown/fchown", "root", []string{"mkfile f 0644 x", "chmod f 04755"},
		"open f rdonly >a", "fchown a 1001 2000", "fstat a", "close a")

	// link: to every kind but directories (EPERM), symlinks linked as
	// they are unless followed, and the errors.
	for _, k := range []string{"reg", "fifo", "sock", "chr", "blk", "lnk"} {
		add("link/"+k, "root", confMake(k, "x"),
			"link x y", "lstat x", "lstat y", "link x y", "link y z", "unlink x", "lstat z")
	}
	add("link/dir", "root", confMake("dir", "x"), "link x y", "lstat x")
	add("link/follow", "root", []string{"mkfile f 0644 hello", "symlink f l", "symlink nowhere dangling"},
		"link l y follow", "lstat y", "link l z", "lstat z", "link dangling w follow", "link dangling v", "lstat v")
	add("link/errors", "root", []string{"mknod f reg 0644", "mkdir d 0755"},
		"link nope y", "link f nope/y", "link f f", "link f d", "link f f/y", "link f d/", "link d/. y")
	add("link/protected", "nobody", []string{"mknod f reg 0600", "mknod g reg 0644", "mknod h reg 0666"},
		"link f y", "link g y", "link h y", "lstat y", "lstat h")
	add("link/no-write", "nobody", []string{"mknod f reg 0644", "chown f 65534 65534", "mkdir d 0755"},
		"link f d/y", "link f y", "lstat y")

	// mkdir, mkfifo, mknod: modes under umasks, set-id bits, existing
	// names, missing and non-directory parents, permissions, setgid
	// parents.
	add("mkdir/basic", "root", []string{"mknod f reg 0644"},
		"mkdir d 0755", "lstat d", "mkdir d 0755", "mkdir e 0777", "lstat e", "mkdir n/x 0755", "mkdir f/x 0755",
		"mkdir f 0755", "umask 0", "mkdir g 07777", "lstat g", "mkdir h 0", "lstat h", "umask 077", "mkdir i 0777", "lstat i",
		"mkdir j/ 0755", "lstat j", "lstat .")
	add("mkdir/setid", "nobody", nil, "umask 0", "mkdir s 06777", "lstat s", "mkdir t 01777", "lstat t")
	add("mkdir/eacces", "nobody", []string{"mkdir d 0755", "mkdir e 0777", "mkdir e/sub 0700"},
		"mkdir d/x 0755", "mkdir e/sub/x 0755", "mkdir e/x 0755", "lstat e/x", "mkdir x 0755", "lstat x")
	add("mkdir/setgid-parent", "u1001", []string{"mkdir d 0777", "chown d 0 2000", "chmod d 02777"},
		"mkdir d/x 0755", "lstat d/x", "mknod d/f reg 0644", "lstat d/f", "open d/g wronly|creat 02755", "lstat d/g",
		"mkfifo d/p 0644", "lstat d/p", "symlink d d/l", "lstat d/l")
	add("mknod/root", "root", nil,
		"mknod r reg 0640", "mkfifo f 0640", "mknod s sock 0640", "mknod c chr 0640 1 3", "mknod b blk 0640 7 0",
		"mknod n none 0640", "lstat r", "lstat f", "lstat s", "lstat c", "lstat b", "lstat n",
		"mknod r fifo 0644", "mknod d dir 0755", "mkfifo f 0644", "mknod x/y fifo 0644", "mknod r/y fifo 0644",
		"umask 027", "mkfifo g 0777", "mknod h sock 0777", "lstat g", "lstat h")
	add("mknod/nobody", "nobody", []string{"mkdir d 0755"},
		"mknod c chr 0644 1 3", "mknod b blk 0644 7 0", "mkfifo f 0644", "mknod s sock 0644", "mknod r reg 0644",
		"mkfifo d/f 0644", "lstat f", "lstat s", "lstat r")
	add("mknod/setid", "root", nil,
		"mknod r reg 04755", "mkfifo f 02755", "mknod s sock 06755", "mknod c chr 04644 1 3", "mknod t reg 01755",
		"lstat r", "lstat f", "lstat s", "lstat c", "lstat t")
	add("mknod/setid-nobody", "nobody", nil, "mknod r reg 04755", "mkfifo f 02755", "mkfifo g 04755",
		"mknod s sock 06755", "mknod t reg 02755", "lstat r", "lstat f", "lstat g", "lstat s", "lstat t")

	// open: O_CREAT modes, O_EXCL, O_DIRECTORY, O_NOFOLLOW, O_TRUNC, the
	// special files, permissions, and set-id bits on create and truncate.
	add("open/create", "root", []string{"mknod f reg 0644", "mkdir d 0755"},
		"open n wronly|creat 0640", "lstat n", "open n wronly|creat|excl 0644", "symlink dangling l",
		"open l wronly|creat|excl 0644", "open l rdonly", "open l wronly|creat 0600", "lstat dangling",
		"open f rdonly|directory", "open l rdonly|nofollow", "open d wronly", "open d rdonly|directory",
		"open d rdwr", "open x/y wronly|creat 0644", "open f/x rdonly", "open f/ rdonly", "open e/ wronly|creat 0644",
		"umask 0", "open g wronly|creat 0777", "lstat g", "open h rdonly|creat|directory 0644", "lstat h")
	add("open/types", "root", confJoin(confMake("fifo", "p"), confMake("sock", "s"), confMake("lnk", "l"),
		confMake("chr", "c"), []string{"mkdir d 0755", "symlink d ld", "mknod f reg 0644", "symlink f lf"}),
		"open p rdonly|nonblock", "open p wronly|nonblock", "open p rdwr|nonblock", "open s rdonly", "open s wronly",
		"open p rdonly|directory", "open s rdonly|directory", "open c rdonly|directory", "open l rdonly|nofollow",
		"open ld rdonly|directory", "open ld rdonly|directory|nofollow", "open lf rdonly|nofollow", "open lf rdonly|path|nofollow",
		"open ld/ rdonly", "open lf/ rdonly")
	add("open/eacces", "nobody", []string{"mknod f reg 0600", "mkfile g 0644 g", "mkdir d 0755", "mknod h reg 0604", "chown h 65534 0"},
		"open f rdonly", "open g wronly", "open g rdonly", "open d/x wronly|creat 0644", "open h rdonly", "cat g")
	add("open/trunc-setid-nonroot", "nobody", []string{"mkfile f 0666 hello", "chmod f 06777", "mkfile g 0666 hello", "chmod g 02767"},
		"open f wronly|trunc", "lstat f", "open g wronly|trunc", "lstat g")
	add("open/trunc-setid-root", "root", []string{"mkfile f 0666 hello", "chmod f 06777"},
		"open f wronly|trunc", "lstat f")
	add("open/trunc-cap", "nobody", []string{"mkfile f 0777 hello", "setxattr f security.capability cap"},
		"getxattr f security.capability", "open f wronly|trunc", "getxattr f security.capability", "lstat f")
	add("open/creat-setid", "nobody", nil,
		"open f wronly|creat 04755", "lstat f", "open g wronly|creat 02755", "lstat g", "open h wronly|creat 06644", "lstat h")
	add("open/creat-setid-root", "root", nil, "open f wronly|creat 06755", "lstat f", "open g wronly|creat 01755", "lstat g")
	add("open/data", "root", nil,
		"open f rdwr|creat 0644 >a", "pwrite a 0 hello", "pwrite a 10 world", "read a 0 20", "fstat a", "fsync a",
		"close a", "open f wronly|append >b", "write b !", "close b", "cat f", "open f rdonly >c", "pwrite c 0 x",
		"close c", "open f wronly|trunc >d", "fstat d", "close d")

	// rename: every kind onto every kind (and onto nothing), then the
	// special cases.
	dsts := []string{"none", "reg", "dir", "full", "fifo", "sock", "chr", "blk", "lnk"}
	for _, src := range confKinds {
		var setup, st []string
		for _, d := range dsts {
			s, t := "s-"+d, "t-"+d
			setup = append(setup, confMake(src, s)...)
			if d != "none" {
				setup = append(setup, confMake(d, t)...)
			}
			st = append(st, "rename "+s+" "+t)
		}
		add("rename/"+src, "root", setup, st...)
	}
	add("rename/special", "root", []string{"mkdir d 0755", "mkdir d/sub 0755", "mknod f reg 0644", "link f h",
		"mknod g reg 0644", "mkdir e 0755", "mkdir full 0755", "mknod full/x reg 0644", "symlink d ld"},
		"rename d d/sub/x", "rename d d/sub", "rename d/sub d", "rename f h", "lstat f", "lstat h", "rename f g noreplace",
		"rename f n noreplace", "rename n d exchange", "lstat n", "lstat d", "rename g zz exchange", "rename zz g exchange",
		"rename g full exchange", "lstat g", "lstat full", "rename . x", "rename e/. x", "rename e/.. x", "rename x .",
		"rename nope x", "rename e nope/x", "rename e e/", "rename g/ y", "rename g g/x", "rename e full",
		"rename ld d2", "lstat d2", "rename g x", "rename x x", "lstat x")
	add("rename/sticky", "nobody", []string{"mkdir t 01777", "mknod t/theirs reg 0644", "chown t/theirs 1001 1001",
		"mknod t/mine reg 0644", "chown t/mine 65534 65534", "mknod t/mine2 reg 0644", "chown t/mine2 65534 65534"},
		"rename t/theirs t/x", "rename t/mine t/theirs", "rename t/mine t/y", "rename t/mine2 t/mine3", "unlink t/theirs",
		"ls t")
	add("rename/dir-perm", "nobody", []string{"mkdir a 0777", "mkdir b 0777", "mkdir a/d 0755", "mkdir a/e 0755",
		"mkfile a/f 0644 x", "mkdir c 0755"},
		"rename a/d b/d", "rename a/e a/e2", "rename a/f b/f", "rename b/f c/f", "rename a/e2 c/e", "ls a", "ls b")

	// rmdir and unlink.
	add("rmdir", "root", []string{"mkdir d 0755", "mkdir e 0755", "mknod e/f reg 0644", "mknod f reg 0644", "symlink d l"},
		"rmdir f", "rmdir e", "rmdir d/.", "rmdir .", "rmdir e/..", "rmdir l", "rmdir nope", "rmdir f/x", "rmdir d/", "lstat d",
		"rmdir l/", "lstat d")
	add("rmdir/eacces", "nobody", []string{"mkdir p 0755", "mkdir p/d 0777", "mkdir t 01777", "mkdir t/d 0777", "chown t/d 1001 1001"},
		"rmdir p/d", "rmdir t/d", "lstat p/d", "lstat t/d")
	add("unlink/kinds", "root", confJoin(confMake("reg", "r"), confMake("dir", "d"), confMake("fifo", "p"), confMake("sock", "s"),
		confMake("chr", "c"), confMake("blk", "b"), confMake("lnk", "l"), []string{"link r r2"}),
		"unlink r", "lstat r2", "unlink d", "unlink p", "unlink s", "unlink c", "unlink b", "unlink l", "unlink nope",
		"unlink r2/x", "unlink r2/", "unlink .", "ls .")
	add("unlink/eacces", "nobody", []string{"mkdir d 0755", "mknod d/f reg 0644", "chown d/f 65534 65534"},
		"unlink d/f", "lstat d/f")
	add("unlink/sticky", "nobody", []string{"mkdir t 01777", "mknod t/theirs reg 0666", "chown t/theirs 1001 1001",
		"mknod t/mine reg 0644", "chown t/mine 65534 65534", "mkdir n 0777", "mknod n/theirs reg 0644", "chown n/theirs 1001 1001"},
		"unlink t/theirs", "unlink t/mine", "unlink n/theirs", "ls t", "ls n")
	add("unlink/sticky-dir-owner", "u1001", []string{"mkdir t 01777", "chown t 1001 1001", "mknod t/other reg 0644",
		"chown t/other 65534 65534"},
		"unlink t/other", "ls t")

	// symlink and readlink, up to the longest target.
	add("symlink", "root", []string{"mknod f reg 0644"},
		"symlink f l", "readlink l", "lstat l", "stat l", "symlink f l", "symlink x f", "symlink nowhere/x m", "readlink m",
		"stat m", "symlink "+strings.Repeat("t", 4095)+" big", "readlink big", "lstat big",
		"symlink "+strings.Repeat("t", 4096)+" big2", "readlink f", "symlink f n/x", "symlink a b", "symlink b a",
		"stat a", "open a rdonly", "symlink f l2/")
	add("symlink/eacces", "nobody", []string{"mkdir d 0755"}, "symlink x d/l", "symlink x l", "lstat l")

	// truncate and ftruncate, and the set-id bits and capability they
	// clear.
	add("truncate", "root", []string{"mkfile f 0644 hello", "mkdir d 0755", "mkfifo p 0644", "symlink f l"},
		"truncate f 100", "lstat f", "cat f", "truncate f 2", "cat f", "truncate f 0", "truncate f -1", "truncate d 0",
		"truncate p 0", "truncate nope 0", "truncate l 3", "lstat f", "open f rdonly >r", "ftruncate r 1", "close r",
		"open f wronly >w", "ftruncate w 7", "fstat w", "ftruncate w -1", "close w", "cat f")
	add("truncate/eacces", "nobody", []string{"mkfile f 0644 x", "mkfile g 0666 xyz"},
		"truncate f 0", "truncate g 1", "lstat f", "lstat g")
	add("truncate/setid-nonroot", "nobody", []string{"mkfile f 0666 hello", "chmod f 06777", "mkfile g 0666 hello", "chmod g 02767"},
		"truncate f 3", "lstat f", "truncate g 3", "lstat g")
	add("truncate/setid-owner", "nobody", []string{"mkfile f 0644 hello", "chown f 65534 65534", "chmod f 06755"},
		"truncate f 3", "lstat f")
	add("ftruncate/setid-nonroot", "nobody", []string{"mkfile f 0666 hello", "chmod f 06777"},
		"open f wronly >w", "ftruncate w 3", "fstat w", "close w", "lstat f")
	add("truncate/setid-root", "root", []string{"mkfile f 0666 hello", "chmod f 06777"}, "truncate f 3", "lstat f")
	add("truncate/cap", "root", []string{"mkfile f 0755 hello", "setxattr f security.capability cap"},
		"getxattr f security.capability", "truncate f 1", "getxattr f security.capability", "lstat f")

	// utimensat: explicit times, UTIME_NOW, UTIME_OMIT and NULL as the
	// owner, and what a non-owner may do with and without write access.
	add("utimens/owner", "nobody", []string{"mkfile f 0644 x", "chown f 65534 65534"},
		"utimens f 1000000000.5 1000000001.25", "times f", "utimens f omit 1000000002", "times f",
		"utimens f 1000000003.75 omit", "times f", "utimens f now now", "times f", "utimens f 1000000000 1000000000",
		"utimens f null", "times f", "utimens f omit omit", "times f", "utimens f now omit", "times f")
	add("utimens/non-owner-writable", "nobody", []string{"mkfile f 0666 x", "utimens f 1000000000 1000000000"},
		"utimens f 1000000005 1000000005", "times f", "utimens f now omit", "times f", "utimens f now now", "times f",
		"utimens f 1000000000 1000000000", "utimens f null", "times f")
	add("utimens/non-owner-readonly", "nobody", []string{"mkfile f 0644 x", "utimens f 1000000000 1000000000"},
		"utimens f 1000000005 1000000005", "utimens f now now", "utimens f null", "utimens f omit omit", "times f")
	add("utimens/symlink-dir", "root", []string{"mkfile f 0644 x", "symlink f l", "mkdir d 0755"},
		"utimens l 1000000000.1 1000000000.2 nofollow", "times l nofollow", "utimens l 1000000001 1000000002", "times f",
		"times l nofollow", "utimens d 1000000003 1000000004", "times d", "utimens nope now now")

	for _, k := range confKinds {
		add("kinds/"+k, "root", confJoin(confMake(k, "x"), []string{"mkfile f 0644 x", "symlink f lf"}),
			"utimens x 1000000000.5 1000000001.5 nofollow", "times x nofollow", "truncate x 0", "open x rdonly|directory",
			"open x rdonly|nofollow|nonblock", "open x/ rdonly", "readlink x", "lstat x/", "rename x lf", "lstat lf")
	}

	// write by non-root clears set-id bits (setgid only with group
	// execute), by anyone the file capability; root keeps set-id bits.
	add("write/setid-nonroot", "nobody", []string{"mkfile f 0666 hello", "chmod f 04777", "mkfile g 0666 hello",
		"chmod g 06777", "mkfile h 0666 hello", "chmod h 02767"},
		"writeat f 0 x", "lstat f", "writeat g 0 x", "lstat g", "writeat h 0 x", "lstat h")
	add("write/setid-owner", "nobody", []string{"mkfile f 0644 hello", "chown f 65534 65534", "chmod f 06755"},
		"writeat f 1 x", "lstat f", "cat f")
	add("write/setid-root", "root", []string{"mkfile f 0666 hello", "chmod f 06777"}, "writeat f 0 x", "lstat f")
	add("write/cap-nonroot", "nobody", []string{"mkfile f 0777 hello", "setxattr f security.capability cap"},
		"getxattr f security.capability", "writeat f 0 x", "getxattr f security.capability", "lstat f", "cat f",
		"setxattr f security.capability cap")
	add("write/cap-root", "root", []string{"mkfile f 0755 hello", "setxattr f security.capability cap"},
		"writeat f 0 x", "getxattr f security.capability", "lstat f", "setxattr f security.capability cap",
		"getxattr f security.capability")

	// user.* extended attributes.
	add("xattr/user", "root", confJoin(confMake("reg", "f"), confMake("dir", "d"), confMake("fifo", "p"), []string{"symlink f l"}),
		"setxattr f user.k v", "getxattr f user.k", "setxattr d user.k v", "getxattr d user.k", "setxattr p user.k v",
		"setxattr l user.k v nofollow", "setxattr l user.j w", "getxattr f user.j", "getxattr f user.nope",
		"listxattr f", "removexattr f user.k", "removexattr f user.k", "listxattr f", "setxattr f user.e x")
	add("xattr/non-owner", "nobody", []string{"mkfile f 0644 x", "setxattr f user.k v", "mkfile g 0666 x"},
		"getxattr f user.k", "setxattr f user.k w", "removexattr f user.k", "setxattr g user.k w", "getxattr g user.k",
		"setxattr g security.capability cap", "setxattr g trusted.k v")

	// Permission checks: search permission on every component, write
	// permission on the directory, owner and group bits before others'.
	add("perm/search", "nobody", []string{"mkdir d 0700", "mkfile d/f 0644 x", "mkdir e 0711", "mkfile e/f 0644 y",
		"mkdir g 0744", "mkfile g/f 0644 z"},
		"lstat d/f", "cat d/f", "ls d", "lstat e/f", "cat e/f", "ls e", "ls g", "lstat g/f", "mkdir d/x 0755")
	add("perm/write-dir", "nobody", []string{"mkdir d 0755", "mkfile d/f 0666 x"},
		"mknod d/n reg 0644", "unlink d/f", "rename d/f d/g", "symlink x d/s", "writeat d/f 0 y", "cat d/f")
	add("perm/owner-bits", "nobody", []string{"mkfile f 0066 x", "chown f 65534 0", "mkfile g 0606 y", "chown g 0 65534"},
		"cat f", "writeat f 0 z", "cat g")
	add("perm/group-bits", "u1001g", []string{"mkfile f 0640 x", "chown f 0 2000", "mkfile g 0604 y", "chown g 0 2000"},
		"cat f", "cat g", "writeat f 0 z")

	// Names of 255 bytes work; 256 are too long.
	n255, n256 := strings.Repeat("n", 255), strings.Repeat("n", 256)
	d255 := strings.Repeat("d", 255)
	add("names/255", "root", nil,
		"mknod "+n255+" reg 0644", "lstat "+n255, "mkdir sub 0755", "rename "+n255+" sub/"+n255, "link sub/"+n255+" "+n255,
		"symlink "+n255+" sub/"+strings.Repeat("s", 255), "unlink "+n255, "mkdir "+d255+" 0755", "mkfifo "+d255+"/"+n255+" 0644",
		"ls "+d255, "unlink "+d255+"/"+n255, "rmdir "+d255)
	add("names/256", "root", []string{"mknod f reg 0644"},
		"mknod "+n256+" reg 0644", "open "+n256+" wronly|creat 0644", "mkdir "+n256+" 0755", "symlink f "+n256,
		"link f "+n256, "rename f "+n256, "lstat "+n256, "unlink "+n256, "mkfifo "+n256+" 0644", "chmod "+n256+" 0644",
		"rmdir "+n256, "truncate "+n256+" 0", "lstat f")

	// Paths of about 4000 bytes: nested directories of 200-byte names
	// (the last one shorter, so that the path from the root of the tree
	// comes within a byte of PATH_MAX), made step by step relative to
	// directory descriptors, through absolute paths, or through paths
	// relative to the working directory; a file at the bottom is made,
	// stat'ed, renamed and removed, and so is everything else, so that the
	// trees stay walkable. The backing dir's own path comes on top of
	// these on the master. Through descriptors Linux has no bound at all,
	// but tdfs bounds a path below the mount root to 4096 bytes (the
	// wire's bound, documented; mirrorfs's tests check ENAMETOOLONG past
	// it), so no case goes further.
	fromRoot := 4095 - len("c000/") // within PATH_MAX from the root of the tree
	add("longpath/dirfd", "root", nil, confLongPath(confLongNames(fromRoot-len("/file.renamed")), false)...)
	add("longpath/absolute", "root", nil,
		confLongPath(confLongNames(4095-rootLen-len("/c000/")-len("/file.renamed")), true)...)
	add("longpath/relative", "nobody", nil, confLongRelative(confLongNames(fromRoot-len("/fifo2")))...)
	return cs
}

// confLongNames returns directory names of at most 200 bytes that joined
// with slashes make a path of exactly n bytes.
func confLongNames(n int) []string {
	var names []string
	for n > 0 {
		if len(names) > 0 {
			n-- // the slash
		}
		l := min(200, n)
		if n-l == 1 { // would leave a slash and no name
			l--
		}
		names = append(names, fmt.Sprintf("%03d", len(names))+strings.Repeat("p", l-3))
		n -= l
	}
	return names
}

// confLongPath returns the steps of a long path case: nested directories
// names, a file at the bottom, made either through descriptors of each
// directory or through absolute paths. If the whole path fits in
// PATH_MAX, it is also used relative to the working directory.
func confLongPath(names []string, absolute bool) []string {
	var st []string
	depth := len(names)
	full := strings.Join(names, "/")
	if len(full+"/file.renamed") > 4095 {
		full = "" // no step uses it
	}
	if absolute {
		p := "$"
		for _, n := range names {
			p += "/" + n
			st = append(st, "mkdir "+p+" 0755")
		}
		st = append(st, "mkfile "+p+"/file 0644 deep", "stat "+p+"/file", "cat "+p+"/file",
			"rename "+p+"/file "+p+"/file.renamed", "lstat "+p+"/file.renamed", "ls "+p,
			"stat "+full+"/file.renamed", "unlink "+p+"/file.renamed")
		for i := depth; i > 0; i-- {
			st = append(st, "rmdir $/"+strings.Join(names[:i], "/"))
		}
		return st
	}
	dir := func(i int) string { // the directory names[i] is made in
		if i == 0 {
			return ""
		}
		return fmt.Sprintf("@d%d/", i-1)
	}
	for i, n := range names {
		st = append(st, "mkdir "+dir(i)+n+" 0755", fmt.Sprintf("open %s%s rdonly|directory >d%d", dir(i), n, i))
	}
	b := dir(depth)
	st = append(st, "mkfile "+b+"file 0644 deep", "stat "+b+"file", "cat "+b+"file",
		"rename "+b+"file "+b+"file.renamed", "lstat "+b+"file.renamed", "ls @d"+fmt.Sprint(depth-1))
	if full != "" {
		st = append(st, "stat "+full+"/file.renamed", "chmod "+full+"/file.renamed 0600", "ls "+full)
	}
	st = append(st, "lstat "+b+"file.renamed", "unlink "+b+"file.renamed")
	for i := depth - 1; i >= 0; i-- {
		st = append(st, fmt.Sprintf("close d%d", i), "rmdir "+dir(i)+names[i])
	}
	return st
}

// confLongRelative is a long path case as nobody with paths relative to
// the working directory only: each directory made through the whole path
// from the case's directory.
func confLongRelative(names []string) []string {
	var st []string
	p := ""
	for _, n := range names {
		if p != "" {
			p += "/"
		}
		p += n
		st = append(st, "mkdir "+p+" 0700")
	}
	st = append(st, "mkfifo "+p+"/fifo 0600", "lstat "+p+"/fifo", "rename "+p+"/fifo "+p+"/fifo2", "symlink x "+p+"/l",
		"readlink "+p+"/l", "unlink "+p+"/l", "unlink "+p+"/fifo2")
	for range names {
		st = append(st, "rmdir "+p)
		if i := strings.LastIndexByte(p, '/'); i >= 0 {
			p = p[:i]
		}
	}
	return st
}

package mirrorfs

import (
	"fmt"

	"github.com/tdfs/tdfs/wire"
)

// FileIDs and LinkIDs of file entries (the slave compares the content of
// a file under its FileID; the later names of a hard-linked file are
// links to its first, which alone carries a FileID).

// linkKey identifies a file with several links for LinkID: its inode
// and, where the filesystem gives one, its file handle, which also holds
// the inode's generation (an inode number freed and reused during the pass
// is another file).
type linkKey struct {
	fileKey
	fh string
}

// forceCompare makes the slave compare the contents of a file (an entry
// with a FileID) that an op numbered during the pass changed, whatever
// its quick check says (wire.Entry.Compare says why).
func (p *pass) forceCompare(r *entryRead) {
	if !p.o.Verify && r.e.Kind == wire.KindFile && p.w.touchedFile(r.key) {
		r.e.Compare = true
	}
}

// fileEntry gives a file entry its FileID and LinkID, and returns the new
// file's state, or nil for a later name of a file listed already.
func (p *pass) fileEntry(dirfd int, path string, r *entryRead, at uint64) (*fileState, error) {
	id, fh, err := p.identify(dirfd, r)
	if err != nil {
		return nil, fmt.Errorf("mirrorfs: resync: keep hold of %q: %w", path, err)
	}
	if r.st.Nlink > 1 {
		if later := p.linkEntry(path, r, fh); later {
			id.release()
			return nil, nil
		}
	}
	p.mu.Lock()
	p.nextFile++
	fid := p.nextFile
	p.mu.Unlock()
	r.e.FileID = fid
	return &fileState{
		id: fid, at: at, path: path, key: r.key, ident: id,
		size: r.st.Size, ctime: r.st.Ctim,
		fd: -1,
	}, nil
}

// linkEntry gives an entry of a file with several links its LinkID, and
// reports whether it is a later name of a file listed already (the slave
// links it to the first; no FileID).
//
// The slave links later names to the first name it made for the LinkID,
// whose content the pass compared. Two things can make that wrong, and
// then the file starts a new LinkID here, as a first name (a FileID, its
// content compared again):
//   - no name of the LinkID's file is left on the slave (unlinked on both
//     sides: the file may be gone with them);
//   - an op may have missed the slave's copy of the file since its first
//     name was listed (a lost touch: a truncate through a name still to
//     be listed, a write through a handle the slave bound to another
//     file).
//
// The watch follows which names the slave has of such files, in groups
// that are one file there. When a name joins a LinkID, the slave makes it
// that LinkID's file; the other names of the same master file that are
// another file on the slave (made before, or by link ops between names
// listed with one link) are listed again to join too.
func (p *pass) linkEntry(path string, r *entryRead, fh string) (later bool) {
	k := linkKey{fileKey: r.key, fh: fh}
	p.mu.Lock()
	lid, seen := p.links[k]
	first := p.linkFirst[lid]
	p.mu.Unlock()
	if seen {
		names, known := p.w.namesIn(lid)
		if (known && len(names) == 0) || p.w.lostSince(r.key, first) {
			seen = false
		}
	}
	g, tracked := p.w.groupOf(path)
	if !seen {
		now := p.w.now()
		p.mu.Lock()
		if len(p.links) < maxLinks {
			p.nextLink++
			lid = p.nextLink
			p.links[k] = lid
			p.linkFirst[lid] = now
		} else {
			lid = 0
		}
		p.mu.Unlock()
		if lid == 0 {
			p.warnOnce("links", "mirrorfs: resync: too many hard-linked files to track; further links are sent as separate files", "max", maxLinks)
			return false
		}
		// The slave keeps its file at path as the LinkID's: the names
		// of path's group are that file already.
		if tracked {
			p.w.regroup(g, lid, r.key)
		}
	}
	p.w.trackName(path, lid, r.key)
	p.w.splitOff(r.key, lid)
	r.e.LinkID = lid
	return seen
}

#!/bin/sh
# Prints "VERSION COMMIT DATE" for the Makefile, which stamps them into the
# binaries (-ldflags -X, see cmd/internal/version) and the package:
#
#   VERSION  X.Y.Z when HEAD is tagged vX.Y.Z; otherwise the newest release
#            of CHANGELOG.md (or the newest vX.Y.Z tag, if newer) followed
#            by +git<commit date>.<commit>, e.g. 0.6.0+git20261206.68aa327:
#            after 0.6.0 and before the next release, in the order of both
#            Debian and semantic versions.
#   COMMIT   the abbreviated commit, with -dirty when tracked files changed
#   DATE     YYYY-MM-DD of SOURCE_DATE_EPOCH if set, else of the commit, so
#            that a build can be repeated exactly
#
# Outside a git work tree: VERSION is the release followed by +nogit,
# COMMIT is "unknown" and DATE today's (or SOURCE_DATE_EPOCH's).
cd "$(dirname "$0")/.." || exit 1

release=$(sed -n 's/^## \[\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*\)\].*/\1/p' CHANGELOG.md 2>/dev/null | head -n 1)
release=${release:-0.0.0}

if commit=$(git rev-parse --short=7 HEAD 2>/dev/null); then
	if ! git diff --quiet HEAD -- 2>/dev/null; then
		commit=$commit-dirty
	fi
	epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}
	if tag=$(git describe --tags --exact-match --match 'v[0-9]*' HEAD 2>/dev/null); then
		version=${tag#v}
	else
		if tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' HEAD 2>/dev/null); then
			# The newer of the last tag and the changelog's release.
			release=$(printf '%s\n%s\n' "${tag#v}" "$release" | sort -t. -k1,1n -k2,2n -k3,3n | tail -n 1)
		fi
		version=$release+git$(date -u -d "@$(git log -1 --format=%ct HEAD)" +%Y%m%d).${commit%-dirty}
	fi
else
	commit=unknown
	epoch=${SOURCE_DATE_EPOCH:-$(date +%s)}
	version=$release+nogit
fi
echo "$version $commit $(date -u -d "@$epoch" +%Y-%m-%d)"

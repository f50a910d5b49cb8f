#!/bin/bash
# Seeds subprojects/packagecache/ with the upstream tarballs that the wrap
# files of subprojects/ name, taken from Debian's source packages of the
# next release instead of the upstream hosts, which this machine may not
# reach. Each tarball must match its wrap's source_hash; then
#   meson setup DIR --wrap-mode=nodownload --force-fallback-for=mbedtls
# builds the fallback without any download.
#
#   tests/seed-subprojects.sh [WRAP...]    (default: every wrap in subprojects/)
#
# The deb-src list is made at run time from the machine's own apt sources
# (their URIs, with the next release's suite), in a temporary directory
# with its own package lists: the machine's apt configuration is left as it
# was, and no host name is written anywhere in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=subprojects/packagecache
mkdir -p "$cache"

# The Debian source package that carries each wrap's tarball.
source_package() {
	case "$1" in
	mbedtls) echo mbedtls ;;
	wslay) echo wslay ;;
	inih) echo libinih ;;
	cmocka) echo cmocka ;;
	*) return 1 ;;
	esac
}

# Reads KEY = VALUE from a wrap file.
wrap_value() {
	sed -n "s/^$2[[:space:]]*=[[:space:]]*//p" "$1" | head -n 1
}

# The release after the machine's own, by codename.
next_release() {
	local codename
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	case "$codename" in
	bullseye) echo bookworm ;;
	bookworm) echo trixie ;;
	trixie) echo forky ;;
	*) echo "cannot tell the Debian release after '${codename:-?}'" >&2; return 1 ;;
	esac
}

# The archive URIs of the machine's own apt sources (deb822 and one-line
# forms), the security archive left out.
archive_uris() {
	{
		cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n' || true
		{ cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
			sed -n 's/^deb\(-src\)\?[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\3/p'
	} | grep -E '^(https?|file):' | grep -v -- '-security' | grep -E '/debian/?$' | sort -u
}

wraps=("$@")
if [ ${#wraps[@]} -eq 0 ]; then
	for w in subprojects/*.wrap; do
		wraps+=("$(basename "$w" .wrap)")
	done
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
uris=$(archive_uris | tr '\n' ' ')
if [ -z "$uris" ]; then
	echo "no Debian archive among the machine's apt sources" >&2
	exit 1
fi
suite=$(next_release)
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/src"
cat >"$work/next.sources" <<EOF
Types: deb-src
URIs: $uris
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_opts=(-o Dir::Etc::SourceList="$work/next.sources" -o Dir::Etc::SourceParts=/dev/null
	-o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" -o APT::Sandbox::User=root)
echo "seeding from Debian $suite's source packages ($uris)" >&2
apt-get "${apt_opts[@]}" update -q >&2

failed=()
for name in "${wraps[@]}"; do
	wrap=subprojects/$name.wrap
	file=$(wrap_value "$wrap" source_filename)
	want=$(wrap_value "$wrap" source_hash)
	if [ -f "$cache/$file" ] && [ "$(sha256sum "$cache/$file" | cut -d' ' -f1)" = "$want" ]; then
		echo "$file: already there" >&2
		continue
	fi
	pkg=$(source_package "$name") || { echo "$name: no Debian source package known for it" >&2; exit 1; }
	# Only the upstream tarball matters: a mirror missing the package's
	# other files (its .dsc, Debian's changes) fails apt-get, not this.
	(cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only "$pkg" >&2) || true
	orig=$(ls "$work/src/${pkg}"_*.orig.tar.* 2>/dev/null | grep -v '\.asc$' | head -n 1 || true)
	if [ -z "$orig" ]; then
		echo "$name: the archive did not give Debian $suite's upstream tarball of $pkg" >&2
		failed+=("$name")
		continue
	fi
	got=$(sha256sum "$orig" | cut -d' ' -f1)
	if [ "$got" != "$want" ]; then
		echo "$name: $(basename "$orig") has sha256 $got, not the wrap's $want" >&2
		exit 1
	fi
	cp "$orig" "$cache/$file"
	echo "$file: from $(basename "$orig"), sha256 matches the wrap" >&2
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "not seeded: ${failed[*]}" >&2
	exit 1
fi

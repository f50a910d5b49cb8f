#!/bin/bash
# The ways to install otoroshictl, checked from the tracked files:
#   1. the Debian package: dpkg-buildpackage -us -uc -b, lintian with no
#      error, apt install ./otoroshictl_VERSION_ARCH.deb, the installed files
#      in Debian's places, the man page rendered, the demo's tunnel run by
#      the installed binary; the package is removed afterwards;
#   2. the release tarball: meson dist, which builds the tarball from
#      scratch and runs its unit tests;
#   3. the fallbacks of subprojects/: their tarballs seeded from Debian's
#      source packages (tests/seed-subprojects.sh), then a build with
#      --wrap-mode=nodownload --force-fallback-for=wslay,inih,cmocka and its
#      unit tests. A tarball the archive does not give is said, and that
#      library comes from the system.
# Runs as root (it installs packages). The version must be the same in
# meson.build and debian/changelog.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/deps.sh
ensure_deps "$OTOROSHICTL_BUILD_PACKAGES debhelper dpkg-dev fakeroot lintian man-db"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version=$(meson introspect --projectinfo meson.build |
	/usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])')
deb_version=$(dpkg-parsechangelog -S Version)
if [ "$version" != "$deb_version" ]; then
	echo "meson.build says $version, debian/changelog $deb_version" >&2
	exit 1
fi
arch=$(dpkg --print-architecture)

echo "-- the Debian package, version $version" >&2
mkdir "$work/src"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$work/src"
# Its unit tests ran with the rest of tests/run.sh.
(cd "$work/src" && DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) ||
	{ tail -40 "$work/build.log" >&2; exit 1; }
deb="$work/otoroshictl_${version}_${arch}.deb"
[ -f "$deb" ] || { echo "no $deb" >&2; ls "$work" >&2; exit 1; }
lintian --fail-on error --display-info "$work/otoroshictl_${version}_${arch}.changes" >&2
apt-get install -y -q "$deb" >&2
for f in /usr/bin/otoroshictl \
	/usr/share/man/man1/otoroshictl-tcp-tunnel.1.gz /usr/share/man/man1/otoroshictl.1.gz \
	/usr/share/bash-completion/completions/otoroshictl.bash \
	/usr/share/zsh/vendor-completions/_otoroshictl \
	/usr/share/fish/vendor_completions.d/otoroshictl.fish \
	/usr/lib/systemd/user/otoroshictl-tunnel@.service /usr/lib/systemd/user/otoroshictl-tunnel@.socket \
	/usr/share/doc/otoroshictl/copyright; do
	[ -e "$f" ] || { echo "the package did not install $f" >&2; exit 1; }
done
[ "$(/usr/bin/otoroshictl --version | head -n 1)" = "otoroshictl $version" ] ||
	{ echo "the installed otoroshictl says: $(/usr/bin/otoroshictl --version)" >&2; exit 1; }
grep -q '^ExecStart=/usr/bin/otoroshictl ' /usr/lib/systemd/user/otoroshictl-tunnel@.service
MANWIDTH=80 man -P cat otoroshictl-tcp-tunnel >"$work/man.txt" 2>"$work/man.err"
grep -q 'otoroshictl tcp-tunnel' "$work/man.txt" && grep -q '^SYNOPSIS' "$work/man.txt" ||
	{ echo "man otoroshictl-tcp-tunnel did not render:" >&2; cat "$work/man.err" >&2; exit 1; }
[ ! -s "$work/man.err" ] || { echo "man warned:" >&2; cat "$work/man.err" >&2; exit 1; }
bash -c '. /usr/share/bash-completion/completions/otoroshictl.bash && complete -p otoroshictl' >/dev/null
OTOROSHICTL_DEMO_BIN=/usr/bin/otoroshictl tests/demo.sh >&2
apt-get remove -y -q otoroshictl >&2

echo "-- the release tarball (meson dist)" >&2
meson setup "$work/dist" >/dev/null
# The allocation sweep of test-unit-io ran in the other builds.
IO_SWEEP_SKIP=1 meson dist -C "$work/dist" --formats xztar --allow-dirty >"$work/dist.log" 2>&1 ||
	{ tail -40 "$work/dist.log" >&2; exit 1; }
grep -E '^(Ok|Fail):' "$work/dist/meson-private/dist-build/meson-logs/testlog.txt" >&2 || true
ls "$work/dist/meson-dist/otoroshictl-c-$version.tar.xz" >&2

echo "-- the fallbacks of subprojects/" >&2
fallbacks=()
for name in wslay inih cmocka; do
	if tests/seed-subprojects.sh "$name" >"$work/seed-$name.log" 2>&1; then
		fallbacks+=("$name")
	else
		echo "$name: $(grep -E '^[a-z]+: ' "$work/seed-$name.log" | tail -n 1); it comes from the system" >&2
	fi
done
[ ${#fallbacks[@]} -gt 0 ] || { echo "no fallback could be seeded" >&2; exit 1; }
list=$(IFS=,; echo "${fallbacks[*]}")
meson setup "$work/fallback" --wrap-mode=nodownload --force-fallback-for="$list" >"$work/fallback.log" 2>&1 ||
	{ tail -40 "$work/fallback.log" >&2; exit 1; }
meson compile -C "$work/fallback" >"$work/fallback.log" 2>&1 || { tail -40 "$work/fallback.log" >&2; exit 1; }
"$work/fallback/otoroshictl" --version >&2
# The allocation sweep ran in step 1's build.
IO_SWEEP_SKIP=1 meson test -C "$work/fallback" --suite unit --print-errorlogs >&2
echo "-- packaging: all passed (fallbacks built: $list)" >&2

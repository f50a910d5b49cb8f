#!/bin/bash
# Runs integration suites with the tunnel binary under valgrind:
#   tests/valgrind.sh BINARY [PYTEST ARGS...]
# Every tunnel process the tests start runs as
#   valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite
# with its log in a directory of its own; valgrind is --quiet and shows only
# the leak kind that counts as an error (--show-leak-kinds=definite), so a log
# holds only reports. (A process that exits while libuv's resolver threads
# are alive leaves their thread-local blocks "possibly lost": not ours, and
# not an error under --errors-for-leak-kinds=definite.) A test whose process left a report fails (sanitizer.py), and
# so does this script if any process at all left one (the ones that helpers
# start without a fixture included). It says how many processes ran.
set -euo pipefail
bin=$(realpath "$1")
shift
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/logs"
cat >"$dir/otoroshictl" <<WRAP
#!/bin/sh
exec valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \\
	--show-leak-kinds=definite --quiet \\
	--log-file="$dir/logs/vg.%p" "$bin" "\$@"
WRAP
chmod +x "$dir/otoroshictl"
status=0
OTOROSHICTL_BIN="$dir/otoroshictl" OTOROSHICTL_REQUIRE_BIN=1 OTOROSHICTL_VALGRIND_LOGS="$dir/logs" \
	/usr/bin/python3 -m pytest -q -p no:cacheprovider "$@" || status=$?
runs=$(find "$dir/logs" -name 'vg.*' | wc -l)
reports=$(find "$dir/logs" -name 'vg.*' -size +0 | wc -l)
echo "valgrind: $runs tunnel processes, $reports with a report" >&2
for f in $(find "$dir/logs" -name 'vg.*' -size +0); do
	echo "--- $f" >&2
	head -60 "$f" >&2
done
if [ "$runs" -eq 0 ]; then
	echo "valgrind: no tunnel process ran under valgrind" >&2
	exit 1
fi
[ "$reports" -eq 0 ] || exit 1
exit "$status"

#!/bin/bash
# Builds otoroshictl and runs the whole test suite, all on loopback:
#   1. the cmocka unit tests and the integration tests (the real binary
#      against the stand-in gateway of tests/gateway), in build/;
#   2. the same tests again, built with AddressSanitizer and
#      UndefinedBehaviorSanitizer, in build-asan/;
#   3. the unit tests under valgrind;
#   4. the integration suites that do not measure speed or memory, with the
#      binary under valgrind (tests/valgrind.sh);
#   5. each libFuzzer target of tests/fuzz for FUZZ_SECONDS (default 5) with
#      clang, in build-fuzz/: a check that each still finds nothing in its
#      corpus and a little beyond (fuzz longer with FUZZ_SECONDS=600);
#   6. on mbedTLS 3.6 (subprojects/mbedtls.wrap, its tarball taken from
#      Debian's next release by tests/seed-subprojects.sh), in build-mbedtls3/:
#      the unit tests, and the TLS, handshake, lifecycle and everyday suites
#      against a gateway offering TLS 1.3, then the TLS suite against one
#      that stops at TLS 1.2;
#   7. the packaging, once (tests/package.sh): the Debian package built,
#      checked by lintian, installed and run; meson dist; the subprojects'
#      fallbacks built and unit-tested.
# Each step says how long it took.
# --quick runs step 1 only. Extra arguments go to the first meson test.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/deps.sh
quick=0
if [ "${1:-}" = "--quick" ]; then
	quick=1
	shift
fi
ensure_deps
ensure_build build
step() {
	echo "== $* (at $((SECONDS / 60)) min $((SECONDS % 60)) s)" >&2
}

step "unit and integration tests"
meson test -C build --print-errorlogs -v "$@"
[ "$quick" -eq 1 ] && exit 0

step "the same under AddressSanitizer and UndefinedBehaviorSanitizer"
ensure_build build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
# A small quarantine keeps memory figures meaningful for the tests that
# bound the tunnel's resident memory.
# The two tests of a minute or more (many short connections, the 200-tunnel
# soak) ran in step 1; under the sanitizers they would take most of CI's time.
ASAN_OPTIONS=quarantine_size_mb=16:detect_leaks=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 OTOROSHICTL_SKIP_LONG=1 \
	meson test -C build-asan --print-errorlogs

step "unit tests under valgrind"
meson test -C build --suite unit --setup valgrind --print-errorlogs

step "the I/O integration suites with the binary under valgrind"
tests/valgrind.sh build/otoroshictl -rf \
	tests/integration/test_handshake.py tests/integration/test_lifecycle.py \
	tests/integration/test_everyday_stdio.py tests/integration/test_hostile.py \
	tests/integration/test_hostile_faults.py tests/integration/test_hostile_secrets.py \
	tests/integration/test_core_defects.py tests/integration/test_https_proxy.py \
	tests/integration/test_otoroshi_ends.py tests/integration/test_forwards.py \
	tests/integration/test_reaching.py tests/integration/test_check.py

step "fuzzing, ${FUZZ_SECONDS:-5} s per target"
CC=clang ensure_build build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false
for target in upgrade ws cli ini proxy; do
	corpus=$(mktemp -d)
	cp tests/fuzz/corpus/$target/* "$corpus"/
	build-fuzz/tests/fuzz/fuzz-$target -max_total_time="${FUZZ_SECONDS:-5}" -print_final_stats=1 \
		"$corpus" 2>&1 | grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss)|ERROR|SUMMARY" >&2
	rm -rf "$corpus"
done
step "on mbedTLS 3.6, built from subprojects/"
tests/seed-subprojects.sh mbedtls
ensure_build build-mbedtls3 --force-fallback-for=mbedtls --wrap-mode=nodownload
meson test -C build-mbedtls3 --suite unit --print-errorlogs
mbedtls3_suites() {
	OTOROSHICTL_BIN="$PWD/build-mbedtls3/otoroshictl" OTOROSHICTL_REQUIRE_BIN=1 OTOROSHICTL_BUILD_DIR="$PWD/build-mbedtls3" \
	OTOROSHICTL_EXPECT_MBEDTLS=3.6 /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@"
}
mbedtls3_suites tests/integration/test_tls.py tests/integration/test_handshake.py tests/integration/test_lifecycle.py \
	tests/integration/test_everyday_*.py
OTOROSHICTL_GATEWAY_TLS_MAX=1.2 OTOROSHICTL_TEST_MAIN_KEY=ec mbedtls3_suites tests/integration/test_tls.py

step "packaging"
tests/package.sh
step "all passed"

# Sourced by tests/run.sh and tests/demo.sh: makes sure the Debian packages
# that building and testing need are installed, installing the missing ones
# when running as root.
# What building and the demo need, then what the whole test suite adds.
OTOROSHICTL_BUILD_PACKAGES="build-essential pkg-config meson ninja-build libuv1-dev libwslay-dev libmbedtls-dev \
libinih-dev libjansson-dev libsystemd-dev libcmocka-dev scdoc python3 python3-websockets"
OTOROSHICTL_PACKAGES="$OTOROSHICTL_BUILD_PACKAGES valgrind clang libclang-rt-14-dev python3-pytest \
redis-server redis-tools socat openssl openssh-server openssh-client tinyproxy zsh fish systemd"

# ensure_deps [PACKAGES]: the whole list by default.
ensure_deps() {
	local missing=()
	for p in ${1:-$OTOROSHICTL_PACKAGES}; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing packages: ${missing[*]}" >&2
		echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
		return 1
	fi
	echo "installing: ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >&2
	apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

ensure_build() {
	local dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >&2
	fi
	meson compile -C "$dir" >&2
}

#!/bin/bash
# A first look at otoroshictl tcp-tunnel: builds it, starts the stand-in
# gateway (tests/gateway/gateway.py) with one API-key route and an echo
# service behind it, all on loopback, then sends bytes through the tunnel
# and shows them coming back. Stops everything when done.
# OTOROSHICTL_DEMO_BIN runs another binary (an installed one) instead of
# building build/otoroshictl.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/deps.sh
bin=${OTOROSHICTL_DEMO_BIN:-}
if [ -z "$bin" ]; then
	ensure_deps "$OTOROSHICTL_BUILD_PACKAGES"
	ensure_build build
	bin=./build/otoroshictl
fi

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# Prints the first line of $1 that matches $2, waiting up to 10 s for it.
wait_line() {
	for _ in $(seq 100); do
		if grep -m1 -o "$2" "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "timed out waiting for '$2' in $1" >&2
	cat "$1" >&2
	return 1
}

/usr/bin/python3 - >"$work/echo.out" <<'PY' &
import socket, threading
srv = socket.create_server(("127.0.0.1", 0))
print("LISTENING", srv.getsockname()[1], flush=True)
def serve(c):
    with c:
        while data := c.recv(65536):
            c.sendall(data)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
PY
pids+=($!)
echo_port=$(wait_line "$work/echo.out" 'LISTENING [0-9]*' | cut -d' ' -f2)

route='{"host": "127.0.0.1", "access": "apikey", "apikeys": ["demo-client:demo-secret"],
        "target": "${req.query.remoteHost}:${req.query.remotePort}"}'
/usr/bin/python3 tests/gateway/gateway.py --listen 127.0.0.1:0 --route "$route" >"$work/gw.out" 2>"$work/gw.err" &
pids+=($!)
gw_port=$(wait_line "$work/gw.out" 'LISTENING [0-9]*' | cut -d' ' -f2)

echo "== echo service on 127.0.0.1:$echo_port, stand-in Otoroshi on 127.0.0.1:$gw_port"
echo "== otoroshictl tcp-tunnel --host 127.0.0.1:$gw_port --local-port 0 --remote-host 127.0.0.1 --remote-port $echo_port --apikey-client-id demo-client --apikey-client-secret ..."
NO_COLOR=1 "$bin" tcp-tunnel --host "127.0.0.1:$gw_port" --local-port 0 \
	--remote-host 127.0.0.1 --remote-port "$echo_port" \
	--apikey-client-id demo-client --apikey-client-secret demo-secret 2> >(tee "$work/tunnel.err" >&2) &
pids+=($!)
local_port=$(wait_line "$work/tunnel.err" 'listening on 127.0.0.1:[0-9]*' | sed 's/.*://')

echo "== sending a line and 8 MiB of random bytes through 127.0.0.1:$local_port"
/usr/bin/python3 - "$local_port" <<'PY'
import hashlib, os, socket, sys, threading
port = int(sys.argv[1])
with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
    s.sendall(b"hello through the Otoroshi tunnel\n")
    line = b""
    while not line.endswith(b"\n"):
        line += s.recv(100)
    print("   echoed back:", line.decode().strip())
    blob = os.urandom(8 << 20)
    got = bytearray()
    def reader():
        while chunk := s.recv(1 << 16):
            got.extend(chunk)
    t = threading.Thread(target=reader)
    t.start()
    s.sendall(blob)
    s.shutdown(socket.SHUT_WR)
    t.join(30)
    same = hashlib.sha256(blob).hexdigest() == hashlib.sha256(got).hexdigest()
    print(f"   sent {len(blob)} bytes, got {len(got)} back, sha256 {'identical' if same else 'DIFFERENT'}")
    sys.exit(0 if same else 1)
PY
echo "== done"

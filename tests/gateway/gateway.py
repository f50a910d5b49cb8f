#!/usr/bin/python3
"""A stand-in for Otoroshi's TCP tunnel plugin, for testing the C client.

It answers `GET /.well-known/otoroshi/tunnel?transport=tcp...` the way Otoroshi does
(see shared/PROTOCOL.md, sections 3 to 6, and the gateway sources cited there): the
route is chosen by the Host header, the credential is checked per route, refusals carry
`Otoroshi-Error: true` and `Otoroshi-Error-Msg` with Otoroshi's own messages and an
HTML page for a body (JSON only when the request has an Accept header that does not
list text/html), and a success is a 101 followed by a connection to the route's target,
whose bytes travel as binary frames both ways.

The WebSocket machinery is the `websockets` library's, not ours, so that an
independent implementation judges the C client: the request head is parsed and the
handshake validated by `websockets.server.ServerConnection` (Sec-WebSocket-Accept,
version, key, Upgrade and Connection checks), and every frame is parsed and
serialized by `websockets.frames.Frame` (which rejects unmasked client frames). Only
the message-level policy is ours, and it is Play's `WebSocketFlowHandler` around
Otoroshi's `TcpTunnel` flow:
- a client Close is echoed at once, the target's input is ended (FIN), and whatever
  the target sends after that point is dropped (and counted, as
  "dropped_after_client_close"); the connection is then closed;
- when the target ends (EOF) the gateway sends Close 1000, still passes the client's
  data on, and drops the connection if no Close answers within close_timeout (3 s);
- the target idle timeout counts every element in both directions (data from the
  target, and every client frame: data, text, ping and pong all become elements)
  and ends the tunnel with Close 1011;
- pings are answered in order, behind the data frames before them: a gateway whose
  target is slow answers late;
- an unreachable target is Close 1011 after the 101.

Usage:
  gateway.py --listen 127.0.0.1:0 --routes routes.json --record record.jsonl
  gateway.py --listen [::1]:0 --route '{"host": "*", "access": "public", "target": "127.0.0.1:7"}'
  gateway.py --tls-cert cert.pem --tls-key key.pem ...   (wss:// instead of ws://)
  gateway.py --tls-cert ... --tls-key ... --tls-client-ca ca.pem   (mutual TLS)

When ready it prints exactly one line `LISTENING <port>` on stdout.

Routes (a JSON list, or an object with a "routes" list) are re-read from --routes on
every new connection, so a test can change them while clients are connected. Fields:
  host            Host header to match (port stripped, case-insensitive), or "*"
  access          "apikey" | "bearer" | "session" | "public"
  apikeys         ["client_id:client_secret", ...] accepted by an apikey route
  revoked         [client_id, ...] answered 401
  tags_mismatch   [client_id, ...] answered 403
  quota_exceeded  [client_id, ...] answered 429
  tokens          valid bearer tokens (bearer) or pappsToken values (session)
  login_url       where a session route redirects (303)
  target          "host:port", or a template using ${req.query.remoteHost[:default]}
                  and ${req.query.remotePort[:default]}
Test knobs, as route fields or as global flags (a route field wins):
  slow_read (bytes/s), frame_size, fragment, text_frames, ping_every (s),
  close_delay (s), connect_timeout (s), handshake_delay (s), idle_timeout (s, the
  route backend's idle timeout), close_timeout (s, how long a Close of the gateway's
  waits for the client's), refusal_linger (s), max_frame (bytes), hang (never answer
  the upgrade), bad_accept (send a wrong Sec-WebSocket-Accept), dribble (response
  head one byte per segment), coalesce (101 and first frame in one write),
  abort_after_bytes (end the connection without a Close after N bytes to the client),
  abort_how (how abort_after_bytes ends it: "close", the transport's own close, which
  over TLS sends close_notify first; "fin", a TCP FIN on the socket and nothing else,
  so no close_notify over TLS; "reset", a TCP RST),
  response_headers ({name: value or null} replacing or removing headers of the 101),
  refuse ({"status", "body", "content_type", "headers", "no_length"}: answer every
  upgrade with this response instead, as a load balancer in front might),
  modern_errors (refusals in Otoroshi's modern format: an Otoroshi-Error-Cause header,
  and a JSON body {"error": cause, "error_description": message}),
  error_template (a custom error template, as routes may have: no Otoroshi-Error-Msg
  header, a page of the template's own, or JSON {"status", "cause", "message"}),
  backend_close (a Close code sent right after the 101, with no target: a route without
  the TCP tunnel plugin, whose backend takes the WebSocket and refuses it).
Apikey route fields: apikeys ["client_id:client_secret", ...]; revoked [client_id, ...]
(401 bad apikey); constrained [client_id, ...] (the key's routing constraints do not
match the route: 401 invalid apikey); tags_mismatch [client_id, ...] (403 forbidden);
quota_exceeded [client_id, ...] (429).

TLS (--tls-cert/--tls-key, and --tls-client-ca FILE to require a client certificate
signed by a CA of FILE; --tls-no-tickets to resume by session id only): the settings
can be replaced while running by a "tls" member of the routes object, re-read on each
connection, {"cert", "key", "client_ca", "tickets"}, each falling back to the flags.
One SSLContext is kept per distinct setting, so that sessions resume across
connections that share one. TLS runs on ssl.SSLObject over memory BIOs (TlsStream),
not asyncio's TLS layer, so that a failed handshake's alert reaches the client, the
client's close_notify is told from a bare TCP EOF, and abort_how can end the TCP
connection under TLS. Each handshake is recorded: {"event": "tls", "id", "ok",
"error", "sni" (the client's server_name, or null when it sent none),
"session_reused", "version", "cipher", "alpn", "client_cert" (the verified client
certificate's subject CN)}. Every ClientHello's SNI is also recorded as {"event":
"sni", "sni"} from the SNI callback, before the handshake can fail. Over TLS the
"closed" record's "tls_client_end" says how the client ended TLS: "close_notify",
"eof" (no close_notify), "error: ..." or null (not seen within 1 s of the close
handshake).

Each upgrade request is recorded to --record as a JSON line {"event": "request", ...}
holding the raw head (base64 and latin-1), the request line, the ordered header list,
the decoded query and the status given. A tunnel then adds {"event": "client_close"}
the moment the client's Close frame arrives, and {"event": "closed"} at the end, with
the close codes, byte counts and SHA-256 digests of each direction, frame statistics
and ping/pong accounting; {"event": "pong"} marks each pong that answered our ping.
"""

import argparse
import asyncio
import base64
import binascii
import email.utils
import hashlib
import html
import http
import itertools
import json
import os
import re
import signal
import socket
import ssl
import struct
import sys
import time
import urllib.parse

from websockets.datastructures import Headers
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    Frame,
)
from websockets.http11 import Request, Response
from websockets.server import ServerConnection
from websockets.streams import StreamReader

TUNNEL_PATH = "/.well-known/otoroshi/tunnel"

# Otoroshi's refusals: key -> (status, message, cause id). The messages are the
# gateway's (PROTOCOL.md section 3); the JWT ones stand for a verifier's.
ERRORS = {
    "no_apikey": (400, "no apikey", "errors.no.api.key"),
    "invalid_tuple": (400, "invalid apikey tuple", "errors.invalid.api.key"),
    "bad_apikey": (401, "bad apikey", "errors.bad.api.key"),
    "invalid_apikey": (401, "invalid apikey", "errors.invalid.api.key"),
    "forbidden": (403, "forbidden", "errors.forbidden"),
    "quota": (429, "You performed too much requests", "errors.too.much.requests"),
    "no_route": (404, "no route found !", "errors.no.route.found"),
    "not_found": (404, "Resource not found", "errors.not.found"),
    "no_token": (400, "no token found", "errors.no.token"),
    "invalid_token": (401, "invalid token", "errors.bad.token"),
}

DEFAULT_LOGIN_URL = "http://privateapps.oto.tools/privateapps/generic/login"

KNOBS = {
    "slow_read": 0.0,
    "frame_size": 32768,
    "fragment": False,
    "text_frames": False,
    "ping_every": 0.0,
    "close_delay": 0.0,
    "connect_timeout": 10.0,
    "handshake_delay": 0.0,
    "idle_timeout": 60.0,
    "close_timeout": 3.0,
    "refusal_linger": 30.0,
    "max_frame": 1 << 20,
    "hang": False,
    "bad_accept": False,
    "dribble": False,
    "coalesce": False,
    "abort_after_bytes": None,
    "abort_how": "close",
    "response_headers": None,
    "refuse": None,
    "modern_errors": False,
    "error_template": False,
    "backend_close": None,
}

TEMPLATE = re.compile(r"\$\{req\.query\.([A-Za-z0-9_]+)(?::([^}]*))?\}")


def log(*args):
    print("gateway:", *args, file=sys.stderr, flush=True)


def render_target(template, params):
    """Expand ${req.query.NAME[:default]} as Otoroshi's expression language does: a
    missing parameter without a default becomes the literal no-query-NAME."""

    def sub(m):
        value = params.get(m.group(1))
        if value is None:
            value = m.group(2) if m.group(2) is not None else f"no-query-{m.group(1)}"
        return value

    return TEMPLATE.sub(sub, template)


def split_host_port(target):
    """'h:p' or '[v6]:p' -> (host, port); raises ValueError."""
    if target.startswith("["):
        end = target.index("]")
        host, rest = target[1:end], target[end + 1 :]
        if not rest.startswith(":"):
            raise ValueError(f"no port in {target!r}")
        port = rest[1:]
    else:
        host, sep, port = target.rpartition(":")
        if not sep:
            raise ValueError(f"no port in {target!r}")
    if not host:
        raise ValueError(f"no host in {target!r}")
    port = int(port)
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {target!r}")
    return host, port


def strip_port(host):
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1].lower() if end >= 0 else host.lower()
    return host.rpartition(":")[0].lower() if ":" in host else host.lower()


def split_head_lines(head):
    """The head's lines without their terminators (CRLF or a bare LF)."""
    lines = head.split(b"\n")
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


class NotHttp(ValueError):
    """The connection opened with bytes no HTTP request starts with."""

    def __str__(self):
        return f"not an HTTP request (it starts with {bytes(self.args[0][:4])!r})"


class Recorder:
    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8") if path else None

    def write(self, **record):
        record.setdefault("time", time.time())
        if self.file:
            self.file.write(json.dumps(record, ensure_ascii=True) + "\n")
            self.file.flush()


class Routes:
    def __init__(self, path, inline, defaults):
        self.path = path
        self.inline = [json.loads(r) for r in inline]
        self.defaults = defaults
        self.load()  # fail fast on a bad file

    def load(self):
        routes = []
        self.tls = {}
        if self.path:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            if isinstance(data, dict):
                self.tls = data.get("tls") or {}
                data = data.get("routes", [])
            routes.extend(data)
        routes.extend(self.inline)
        for route in routes:
            if "host" not in route or "target" not in route:
                raise ValueError(f"route needs host and target: {route}")
            access = route.setdefault("access", "public")
            if access not in ("apikey", "bearer", "jwt", "session", "public"):
                raise ValueError(f"unknown access {access!r}")
            for knob, value in self.defaults.items():
                route.setdefault(knob, value)
        return routes

    def find(self, host):
        want = strip_port(host)
        routes = self.load()
        for route in routes:
            if route["host"].lower() == want:
                return route
        for route in routes:
            if route["host"] == "*":
                return route
        return None


def authorize(route, headers, params, url):
    """None when allowed, else (status, message or None, cause, extra headers, key)."""
    access = route["access"]

    def refuse(key):
        return (*ERRORS[key], [], key)

    if access == "public":
        return None
    if access == "apikey":
        auth = headers.get("Authorization")
        if not auth or not auth[:6].lower() == "basic ":
            return refuse("no_apikey")
        try:
            tuple_ = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return refuse("invalid_tuple")
        client_id, colon, secret = tuple_.partition(":")
        known = dict(k.partition(":")[::2] for k in route.get("apikeys", []))
        if not colon or client_id not in known:
            return refuse("invalid_tuple")
        if known[client_id] != secret or client_id in route.get("revoked", []):
            return refuse("bad_apikey")
        if client_id in route.get("constrained", []):
            return refuse("invalid_apikey")
        if client_id in route.get("tags_mismatch", []):
            return refuse("forbidden")
        if client_id in route.get("quota_exceeded", []):
            return refuse("quota")
        return None
    if access in ("bearer", "jwt"):
        auth = headers.get("Authorization")
        if not auth or not auth[:7].lower() == "bearer ":
            return refuse("no_token")
        if auth[7:] not in route.get("tokens", []):
            return refuse("invalid_token")
        return None
    if access == "session":
        if params.get("pappsToken") in route.get("tokens", []):
            return None
        login = route.get("login_url", DEFAULT_LOGIN_URL)
        location = f"{login}?redirect={urllib.parse.quote(url, safe='')}"
        return (303, None, None, [("Location", location)], "session")
    raise AssertionError(access)


def wants_html(headers):
    """Otoroshi's test (gateway/errors.scala, standardResult): the Accept header,
    "text/html" when absent, split on commas without trimming, must hold the exact
    item text/html."""
    accept = headers.get("Accept")
    return "text/html" in (accept if accept is not None else "text/html").split(",")


def error_page(message):
    """The shape of Otoroshi's error page (views/oto/error.scala.html)."""
    text = html.escape(message)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<title>Otoroshi Error</title>\n"
        "<link rel=\"stylesheet\" href=\"/__otoroshi_assets/stylesheets/error.css\">\n</head>\n"
        "<body>\n<div class=\"jumbotron\">\n<h2><i class=\"glyphicon glyphicon-warning-sign\"></i> "
        f"Otoroshi Error</h2>\n<p class=\"lead\">\n{text}\n</p>\n</div>\n</body>\n</html>\n"
    ).encode()


def error_response(route, headers, status, message, cause):
    """Headers and body of one of Otoroshi's refusals: (extra headers, body, type)."""
    html_wanted = wants_html(headers)
    if route and route.get("error_template"):
        # A custom template: no message header (errors.scala, customResultSync).
        if html_wanted:
            page = f"<html><head><title>Access denied</title></head><body><p>{html.escape(message)}</p></body></html>"
            return [("Otoroshi-Error", "true")], page.encode(), "text/html; charset=utf-8"
        body = json.dumps({"status": status, "cause": cause, "message": message}).encode()
        return [("Otoroshi-Error", "true")], body, "application/json"
    extra = [("Otoroshi-Error", "true"), ("Otoroshi-Error-Msg", message)]
    if html_wanted:
        return extra, error_page(message), "text/html; charset=utf-8"
    if route and route.get("modern_errors"):
        extra.append(("Otoroshi-Error-Cause", cause))
        return extra, json.dumps({"error": cause, "error_description": message}).encode(), "application/json"
    return extra, json.dumps({"Otoroshi-Error": message}).encode(), "application/json"


class Gateway:
    def __init__(self, args):
        self.args = args
        defaults = {k: getattr(args, k, v) for k, v in KNOBS.items()}
        self.routes = Routes(args.routes, args.route, defaults)
        self.recorder = Recorder(args.record)
        self.ids = itertools.count(1)
        self.tasks = set()
        self.tls_contexts = {}

    def tls_context(self):
        """The SSLContext for a new connection, or None for plain ws://."""
        self.routes.load()
        over = self.routes.tls
        cert = over.get("cert", self.args.tls_cert)
        if not cert:
            return None
        key = over.get("key", self.args.tls_key)
        client_ca = over.get("client_ca", self.args.tls_client_ca)
        tickets = over.get("tickets", not self.args.tls_no_tickets)
        max_version = over.get("max_version", self.args.tls_max_version)
        setting = (cert, key, client_ca, bool(tickets), max_version)
        ctx = self.tls_contexts.get(setting)
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            # Python sets this by default; without it a TCP EOF that no close_notify
            # preceded is an error (SSLEOFError), which is what tells them apart.
            ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
            ctx.load_cert_chain(cert, key)
            if client_ca:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(client_ca)
            if not tickets:
                ctx.options |= ssl.OP_NO_TICKET
            if max_version:
                ctx.maximum_version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[max_version]
            ctx.set_alpn_protocols(["http/1.1"])
            ctx.sni_callback = self.on_sni
            self.tls_contexts[setting] = ctx
        return ctx

    def on_sni(self, ssl_obj, server_name, ctx):
        ssl_obj.otoroshi_sni = server_name
        self.recorder.write(event="sni", sni=server_name)
        return None

    async def start_tls(self, conn_id, ctx, reader, writer):
        """Runs the server handshake and records it: the TlsStream, or None."""
        peer = writer.get_extra_info("peername")
        base = {"event": "tls", "id": conn_id, "peer": list(peer[:2]) if peer else None}
        tls = TlsStream(ctx, reader, writer)
        try:
            await tls.handshake(10)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self.recorder.write(**base, ok=False, error=f"{type(exc).__name__}: {exc}",
                                sni=getattr(tls.obj, "otoroshi_sni", None))
            return None
        obj = tls.obj
        cert = obj.getpeercert() if ctx.verify_mode == ssl.CERT_REQUIRED else None
        subject = dict(item for rdn in cert["subject"] for item in rdn) if cert else {}
        self.recorder.write(
            **base, ok=True, error=None, sni=getattr(obj, "otoroshi_sni", None),
            session_reused=obj.session_reused, version=obj.version(), cipher=obj.cipher()[0],
            alpn=obj.selected_alpn_protocol(), client_cert=subject.get("commonName"),
        )
        return tls

    async def handle(self, reader, writer):
        task = asyncio.current_task()
        self.tasks.add(task)
        conn_id = next(self.ids)
        try:
            ctx = self.tls_context()
            if ctx is not None:
                tls = await self.start_tls(conn_id, ctx, reader, writer)
                if tls is None:
                    return
                reader = writer = tls
            await self.serve(conn_id, reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # keep serving whatever one connection did
            log(f"#{conn_id}: {type(exc).__name__}: {exc}")
        finally:
            if not writer.is_closing():
                writer.close()
            self.tasks.discard(task)

    async def read_head(self, reader):
        buf = bytearray()
        while True:
            if buf[:1] == b"\x16":
                # A TLS ClientHello on this plain port: an HTTP server's parser
                # fails on the first line and answers 400, as Otoroshi's does.
                raise NotHttp(bytes(buf))
            ends = [(buf.find(t), len(t)) for t in (b"\r\n\r\n", b"\n\n")]
            ends = [(i, n) for i, n in ends if i >= 0]
            if ends:
                i, n = min(ends)
                return bytes(buf[: i + n]), bytes(buf[i + n :])
            if len(buf) > 65536:
                raise ValueError("request head too long")
            data = await reader.read(65536)
            if not data:
                raise EOFError(f"connection closed after {len(buf)} bytes of request head")
            buf += data

    async def serve(self, conn_id, reader, writer):
        peer = writer.get_extra_info("peername")
        base = {"id": conn_id, "peer": list(peer[:2]) if peer else None}
        try:
            head, rest = await asyncio.wait_for(self.read_head(reader), 30)
        except NotHttp as exc:
            self.recorder.write(event="request", **base, status=400, error=str(exc))
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 36\r\n"
                         b"Connection: close\r\n\r\nIllegal request: not an HTTP request")
            await writer.drain()
            return
        except (asyncio.TimeoutError, EOFError, ValueError, ConnectionError) as exc:
            self.recorder.write(event="request", **base, status=None, error=str(exc))
            return

        lines = split_head_lines(head)
        request_line = lines[0].decode("latin-1")
        header_list = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                header_list.append([name.decode("latin-1"), value.strip().decode("latin-1")])
        target = request_line.split(" ")[1] if request_line.count(" ") >= 2 else ""
        path, _, query = target.partition("?")
        param_list = urllib.parse.parse_qsl(query, keep_blank_values=True, errors="replace")
        params = {}
        for k, v in param_list:
            params.setdefault(k, v)
        rec = dict(
            event="request",
            **base,
            head_b64=base64.b64encode(head).decode(),
            head=head.decode("latin-1"),
            request_line=request_line,
            headers=header_list,
            path=path,
            query=query,
            params=[list(p) for p in param_list],
        )

        ws = ServerConnection(max_size=None)
        try:
            ws.receive_data(head)
            events = ws.events_received()
            if not events or not isinstance(events[0], Request):
                raise ValueError("incomplete request head")
            request = events[0]
        except Exception as exc:
            rec.update(status=400, error=f"bad request: {exc}")
            self.recorder.write(**rec)
            body = f"bad request: {exc}\n".encode()
            await self.send_refusal(writer, reader, 400, body, "text/plain", [], 1.0)
            return

        headers = request.headers
        host = headers.get("Host", "")
        route = self.routes.find(host)
        url = f"http://{host}{target}"
        if route is None:
            refusal = (*ERRORS["no_route"], [], "no_route")
        elif path != TUNNEL_PATH or "Sec-WebSocket-Version" not in headers:
            refusal = (*ERRORS["not_found"], [], "not_found")
        else:
            refusal = authorize(route, headers, params, url)
        linger = route["refusal_linger"] if route else self.args.refusal_linger
        dribble = route["dribble"] if route else self.args.dribble
        rec["route"] = route["host"] if route else None
        if refusal is None and route["refuse"]:
            await self.send_forced_refusal(rec, route["refuse"], writer, reader, linger)
            return
        if refusal:
            status, text, cause, extra, key = refusal
            rec.update(status=status, error=text, refusal=key)
            self.recorder.write(**rec)
            body, ctype = b"", None
            if text is not None:
                knobs = route or {k: getattr(self.args, k) for k in ("modern_errors", "error_template")}
                more, body, ctype = error_response(knobs, headers, status, text, cause)
                extra = more + extra
            await self.send_refusal(writer, reader, status, body, ctype, extra, linger, dribble)
            return

        if route["hang"]:
            rec.update(status=None, hang=True)
            self.recorder.write(**rec)
            await reader.read()  # until the client gives up
            return

        if route["handshake_delay"]:
            await asyncio.sleep(route["handshake_delay"])
        response = ws.accept(request)
        if response.status_code != 101:
            # The library found the handshake invalid (key, version, Upgrade...).
            rec.update(status=response.status_code, error=str(ws.handshake_exc))
            self.recorder.write(**rec)
            await self.send_refusal(writer, reader, response.status_code, response.body,
                                    "text/plain; charset=utf-8", [], linger, dribble)
            return
        if route["bad_accept"]:
            del response.headers["Sec-WebSocket-Accept"]
            response.headers["Sec-WebSocket-Accept"] = base64.b64encode(b"\0" * 20).decode()
        for name, value in (route["response_headers"] or {}).items():
            if name in response.headers:
                del response.headers[name]
            if value is not None:
                response.headers[name] = value
        ws.send_response(response)
        head_out = b"".join(ws.data_to_send())
        if not route["coalesce"]:
            await write_out(writer, head_out, route["dribble"])
            head_out = b""
        target_addr = render_target(route["target"], params)
        rec.update(status=101, target=target_addr)
        self.recorder.write(**rec)
        session = Session(self, conn_id, route, reader, writer, rest, target_addr, head_out)
        await session.run()

    async def send_forced_refusal(self, rec, spec, writer, reader, linger):
        """A refusal that is not Otoroshi's own (e.g. a load balancer's 502 page),
        optionally without Content-Length (the body then ends at EOF)."""
        status = int(spec.get("status", 502))
        body = spec.get("body", "").encode()
        rec.update(status=status, error=spec.get("body"), refusal="forced")
        self.recorder.write(**rec)
        if not spec.get("no_length"):
            extra = [tuple(h) for h in spec.get("headers", [])]
            await self.send_refusal(writer, reader, status, body,
                                    spec.get("content_type", "text/html"), extra, linger)
            return
        headers = Headers()
        headers["Content-Type"] = spec.get("content_type", "text/html")
        headers["Connection"] = "close"
        for name, value in spec.get("headers", []):
            headers[name] = value
        response = Response(status, http.HTTPStatus(status).phrase, headers, body)
        await write_out(writer, response.serialize(), False)
        writer.close()

    async def send_refusal(self, writer, reader, status, body, ctype, extra, linger,
                           dribble=False):
        """Write a refusal, then keep the connection open as a keep-alive server would
        (up to `linger` seconds) so that a client reading until EOF is caught."""
        headers = Headers()
        headers["Date"] = email.utils.formatdate(usegmt=True)
        for name, value in extra:
            headers[name] = value
        if body:
            headers["Content-Type"] = ctype
        headers["Content-Length"] = str(len(body or b""))
        response = Response(status, http.HTTPStatus(status).phrase, headers, body or b"")
        await write_out(writer, response.serialize(), dribble)
        try:
            await asyncio.wait_for(reader.read(), linger)
        except (asyncio.TimeoutError, ConnectionError):
            pass


class TlsStream:
    """TLS on an accepted connection, with ssl.SSLObject over memory BIOs between the
    socket's asyncio streams and the gateway, rather than asyncio's own TLS layer, so
    that: the alert of a failed handshake reaches the client (asyncio drops it, and the
    client could not say why it was refused); the client's close_notify is told apart
    from a bare TCP EOF (`peer_end`); and a test knob can end the TCP connection under
    the TLS layer (no close_notify). It serves as both the reader and the writer."""

    def __init__(self, ctx, reader, writer):
        self.raw_reader = reader
        self.raw_writer = writer
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        # How the client ended TLS: "close_notify", "eof" (TCP EOF without
        # close_notify), "error: ..." (a TLS error, e.g. a bad record), or None.
        self.peer_end = None
        self.done_writing = False  # close_notify sent, or the TCP side ended under us

    @property
    def transport(self):
        return self.raw_writer.transport

    def get_extra_info(self, name, default=None):
        if name == "ssl_object":
            return self.obj
        return self.raw_writer.get_extra_info(name, default)

    def flush(self):
        data = self.outgoing.read()
        if data and not self.raw_writer.is_closing():
            self.raw_writer.write(data)

    async def fill(self):
        """More ciphertext from the socket; at its EOF, the BIO's EOF."""
        try:
            data = await self.raw_reader.read(65536)
        except (ConnectionError, OSError):
            data = b""
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    async def handshake(self, timeout):
        async def run():
            while True:
                try:
                    self.obj.do_handshake()
                    return
                except ssl.SSLWantReadError:
                    self.flush()
                    await self.raw_writer.drain()
                    await self.fill()

        try:
            await asyncio.wait_for(run(), timeout)
        finally:
            self.flush()  # the last flight, or the alert that tells the client why
            try:
                await self.raw_writer.drain()
            except (ConnectionError, OSError):
                pass

    async def read(self, n=-1):
        if n is None or n < 0:
            chunks = []
            while True:
                data = await self.read(65536)
                if not data:
                    return b"".join(chunks)
                chunks.append(data)
        while self.peer_end is None:
            try:
                data = self.obj.read(n)
            except ssl.SSLWantReadError:
                self.flush()
                await self.fill()
                continue
            except ssl.SSLZeroReturnError:
                self.peer_end = "close_notify"
                break
            except ssl.SSLEOFError:
                self.peer_end = "eof"
                break
            except ssl.SSLError as exc:
                if exc.reason == "UNEXPECTED_EOF_WHILE_READING":  # (3.11's name for it)
                    self.peer_end = "eof"
                    break
                self.peer_end = f"error: {exc}"
                self.flush()
                raise ConnectionResetError(f"TLS: {exc}") from None
            self.flush()
            if not data:
                self.peer_end = "close_notify"
                break
            return data
        return b""

    def write(self, data):
        if self.done_writing:
            return
        try:
            self.obj.write(data)  # into the memory BIO: never blocks
        except ssl.SSLError:
            self.done_writing = True  # the session failed (an alert came, say)
        self.flush()

    async def drain(self):
        await self.raw_writer.drain()

    def is_closing(self):
        return self.done_writing or self.raw_writer.is_closing()

    def can_write_eof(self):
        return False

    def end_tcp(self):
        """From now on nothing more goes out through TLS (no close_notify)."""
        self.done_writing = True

    def close(self):
        if not self.done_writing:
            self.done_writing = True
            try:
                self.obj.unwrap()  # close_notify; the client's is not awaited
            except (ssl.SSLError, ValueError):
                pass
            self.flush()
        self.raw_writer.close()


async def write_out(writer, data, dribble):
    """Write `data`; with `dribble`, one byte per TCP segment, to exercise the
    client's incremental parsing of the response head."""
    if not dribble:
        writer.write(data)
        await writer.drain()
        return
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0.0005)  # one segment each, on loopback


class Session:
    """One accepted tunnel: the client's WebSocket paired with the target's TCP."""

    def __init__(self, gw, conn_id, route, reader, writer, rest, target_addr, head_out=b""):
        self.gw = gw
        self.id = conn_id
        self.route = route
        self.reader = reader
        self.writer = writer
        self.target_addr = target_addr
        self.stream = StreamReader()
        self.stream.feed_data(rest)
        self.parser = self.parse()
        self.frames = []
        self.tw = None  # target writer
        # With `coalesce`, the 101 waits to go out in one write with the first frame.
        self.head_out = head_out
        self.close_sent = None
        self.client_close = None
        self.msg_opcode = None  # opcode of the client's fragmented message in progress
        self.target_wr_open = True
        self.stats = dict(
            bytes_from_client=0,
            bytes_to_client=0,
            frames_from_client=0,
            max_frame_from_client=0,
            empty_frames_from_client=0,
            text_frames_from_client=0,
            continuation_frames_from_client=0,
            client_pings=0,
            pings_sent=0,
            pings_mid_message=0,
            pongs_received=0,
            pongs_matched=0,
            pongs_unmatched=0,
            messages_to_client=0,
            dropped_after_client_close=0,
        )
        # Loop time of the last element through the target flow, either way: what
        # the route's idle timeout counts.
        self.last_activity = asyncio.get_running_loop().time()
        self.sha_in = hashlib.sha256()  # client -> target
        self.sha_out = hashlib.sha256()  # target -> client
        self.pings_outstanding = {}  # payload -> sequence number
        self.ping_seq = itertools.count(1)
        self.last_pong_seq = 0
        self.protocol_error = None
        self.target_error = None
        self.aborted_how = None

    # -- frame codec glue (the library's Frame does the work) -------------------

    def parse(self):
        while True:
            if (yield from self.stream.at_eof()):
                raise EOFError("client closed the TCP connection")
            frame = yield from Frame.parse(
                self.stream.read_exact, mask=True, max_size=self.route["max_frame"]
            )
            self.frames.append(frame)

    def feed(self, data):
        """Feed bytes (b'' = EOF, None = nothing new); returns the frames parsed.
        Raises the parser's errors (ProtocolError for an unmasked frame, ...)."""
        if data:
            self.stream.feed_data(data)
        elif data is not None:
            self.stream.feed_eof()
        next(self.parser, None)
        frames, self.frames = self.frames, []
        return frames

    def send_frame(self, frame):
        if self.close_sent is not None or self.writer.is_closing():
            return False
        self.writer.write(self.take_head() + frame.serialize(mask=False))
        if frame.opcode == OP_CLOSE:
            self.close_sent = Close.parse(frame.data).code if frame.data else 1005
        return True

    def take_head(self):
        head, self.head_out = self.head_out, b""
        return head

    async def flush_head_later(self, delay):
        """A coalesced 101 goes out alone if no frame came along in time."""
        await asyncio.sleep(delay)
        if self.head_out and not self.writer.is_closing():
            self.writer.write(self.take_head())

    async def send_close(self, code, reason=""):
        if self.send_frame(Frame(OP_CLOSE, Close(code, reason).serialize())):
            try:
                await self.writer.drain()
            except ConnectionError:
                pass

    # -- directions ----------------------------------------------------------------

    async def client_to_target(self):
        """Reads the client's frames and passes data on; returns 'close', 'eof' or 'error'."""
        rate = float(self.route["slow_read"] or 0)
        chunk = 65536 if not rate else int(max(512, min(65536, rate / 20)))
        data = None  # the first pass parses what came along with the request head
        while True:
            try:
                frames = self.feed(data)
            except (ProtocolError, UnicodeDecodeError) as exc:
                return await self.fail(1002, f"protocol error: {exc}")
            except PayloadTooBig as exc:
                return await self.fail(1009, f"frame too big: {exc}")
            except EOFError:
                return "eof"
            for frame in frames:
                outcome = await self.on_frame(frame)
                if outcome:
                    return outcome
            try:
                data = await self.reader.read(chunk)
            except (ConnectionError, OSError):
                data = b""
            if rate and data:
                await asyncio.sleep(len(data) / rate)  # emulate a slow gateway

    def touch(self):
        self.last_activity = asyncio.get_running_loop().time()

    async def on_frame(self, frame):
        op = frame.opcode
        n = len(frame.data)
        if op != OP_CLOSE:
            # Every client frame becomes an element of the target flow (Otoroshi maps
            # text, ping and pong to empty chunks): each one counts as activity.
            self.touch()
        if op in (OP_BINARY, OP_TEXT, OP_CONT):
            self.stats["frames_from_client"] += 1
            self.stats["max_frame_from_client"] = max(self.stats["max_frame_from_client"], n)
            if n == 0:
                self.stats["empty_frames_from_client"] += 1
            if op == OP_CONT:
                self.stats["continuation_frames_from_client"] += 1
                if self.msg_opcode is None:
                    return await self.fail(1002, "unexpected continuation frame")
                kind = self.msg_opcode
            else:
                if self.msg_opcode is not None:
                    return await self.fail(1002, "expected a continuation frame")
                kind = op
            self.msg_opcode = None if frame.fin else kind
            if kind == OP_TEXT:
                self.stats["text_frames_from_client"] += 1
                return None  # Otoroshi maps text to nothing
            if n:
                self.stats["bytes_from_client"] += n
                self.sha_in.update(frame.data)
                await self.write_target(frame.data)
            return None
        if op == OP_PING:
            self.stats["client_pings"] += 1
            self.send_frame(Frame(OP_PONG, frame.data))
            return None
        if op == OP_PONG:
            self.stats["pongs_received"] += 1
            payload = bytes(frame.data)
            if payload in self.pings_outstanding:
                seq = self.pings_outstanding.pop(payload)
                self.last_pong_seq = max(self.last_pong_seq, seq)
                self.stats["pongs_matched"] += 1
                self.gw.recorder.write(event="pong", id=self.id, payload=payload.decode())
            else:
                self.stats["pongs_unmatched"] += 1
            return None
        if op == OP_CLOSE:
            try:
                close = Close.parse(frame.data)
            except (ProtocolError, UnicodeDecodeError) as exc:
                return await self.fail(1002, f"bad close frame: {exc}")
            self.client_close = close
            self.gw.recorder.write(
                event="client_close", id=self.id, code=close.code, reason=close.reason,
                after_server_close=self.close_sent is not None,
            )
            if self.msg_opcode is not None:
                return await self.fail(1002, "close inside a fragmented message")
            # Play echoes a client's Close at once (the same code and reason), ends
            # the target's input and cancels the target's output.
            if self.close_sent is None:
                self.send_frame(Frame(OP_CLOSE, frame.data))
                try:
                    await self.writer.drain()
                except ConnectionError:
                    pass
            await self.half_close_target()
            return "close"
        raise AssertionError(op)

    async def fail(self, code, reason):
        self.protocol_error = reason
        await self.send_close(code, reason)
        return "error"

    async def write_target(self, data):
        if not self.target_wr_open or self.tw is None:
            return
        try:
            self.tw.write(data)
            await self.tw.drain()
        except (ConnectionError, RuntimeError):
            self.target_wr_open = False

    async def half_close_target(self):
        if self.tw is not None and self.target_wr_open:
            self.target_wr_open = False
            try:
                await self.tw.drain()
                if self.tw.can_write_eof():
                    self.tw.write_eof()
            except (ConnectionError, RuntimeError, OSError):
                pass

    async def target_to_client(self, treader):
        """Returns 'eof', 'error' (the target failed), 'client_gone' (the client's
        connection failed under a write) or 'aborted'. After the client's Close, what the
        target sends is dropped (and counted), as Play cancels that stream."""
        size = int(self.route["frame_size"])
        abort_after = self.route["abort_after_bytes"]
        while True:
            try:
                data = await treader.read(size)
            except (ConnectionError, OSError):
                return "error"
            if not data:
                return "eof"
            self.touch()
            if self.client_close is not None:
                self.stats["dropped_after_client_close"] += len(data)
                continue
            if abort_after is not None:
                data = data[: abort_after - self.stats["bytes_to_client"]]
            self.stats["bytes_to_client"] += len(data)
            self.sha_out.update(data)
            if data and not await self.send_data(data):
                if self.client_close is not None:
                    continue  # the Close came while this was going out
                return "client_gone"
            if abort_after is not None and self.stats["bytes_to_client"] >= abort_after:
                # End the connection (after the data) without a Close frame: the
                # client sees an abnormal closure (1006).
                await self.abort(self.route["abort_how"])
                return "aborted"

    async def idle_watch(self):
        """Returns 'idle' once no element went through the target flow, either way,
        for the route's idle timeout (Akka's bidirectional idle timeout)."""
        idle = float(self.route["idle_timeout"])
        loop = asyncio.get_running_loop()
        while True:
            left = self.last_activity + idle - loop.time()
            if left <= 0:
                return "idle"
            await asyncio.sleep(left)

    async def send_data(self, data):
        n = self.stats["messages_to_client"] = self.stats["messages_to_client"] + 1
        frames = []
        if self.route["text_frames"]:
            junk = f"junk #{n} \u2603 ".encode() * (n % 7)
            if n % 3 == 0 and junk:
                # A fragmented text message: its continuation must be ignored too.
                frames += [Frame(OP_TEXT, junk[:3], fin=False), Frame(OP_CONT, junk[3:])]
            else:
                frames.append(Frame(OP_TEXT, junk))
        if self.route["fragment"]:
            a, b = len(data) // 3, 2 * len(data) // 3
            parts = [data[:a], data[a:b], data[b:]]
            frames.append(Frame(OP_BINARY, parts[0], fin=False))
            if self.route["ping_every"] and n % 16 == 1:
                ping = self.make_ping()  # a control frame inside a message
                if ping is not None:
                    self.stats["pings_mid_message"] += 1
                    frames.append(ping)
            frames.append(Frame(OP_CONT, parts[1], fin=False))
            frames.append(Frame(OP_CONT, parts[2], fin=True))
        else:
            frames.append(Frame(OP_BINARY, data))
        for frame in frames:
            if frame is None:
                continue
            if not self.send_frame(frame):
                return False
            if self.route["fragment"]:
                await asyncio.sleep(0)  # let the pinger interleave
        try:
            await self.writer.drain()
        except ConnectionError:
            return False
        return True

    async def abort(self, how):
        self.aborted_how = how
        if how == "close":
            self.writer.close()  # over TLS: close_notify, then FIN
            return
        # What was written reaches the socket first, so that the client gets exactly
        # the bytes counted; then the socket ends under the TLS layer's feet.
        raw = self.writer.transport
        if isinstance(self.writer, TlsStream):
            self.writer.end_tcp()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and raw.get_write_buffer_size():
            await asyncio.sleep(0.005)
        sock = self.writer.get_extra_info("socket")
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.abort()
        elif how == "fin":
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        else:
            raise ValueError(f"abort_how: {how!r}")

    def make_ping(self):
        # No pings once either side sent its Close: a client that has sent its Close
        # may no longer answer (RFC 6455 5.5.1), so they could not be accounted.
        if self.close_sent is not None or self.client_close is not None:
            return None
        seq = next(self.ping_seq)
        payload = f"ping-{self.id}-{seq}".encode()
        self.pings_outstanding[payload] = seq
        self.stats["pings_sent"] += 1
        return Frame(OP_PING, payload)

    async def pinger(self, every):
        while True:
            await asyncio.sleep(every)
            frame = self.make_ping()
            if frame is None or not self.send_frame(frame):
                return

    # -- life cycle --------------------------------------------------------------

    async def run(self):
        started = time.time()
        outcome = None
        tasks = []
        try:
            if self.route["backend_close"] is not None:
                await self.send_close(int(self.route["backend_close"]), "not a tunnel")
                outcome = "backend_close"
                await self.await_client_close()
                return
            try:
                host, port = split_host_port(self.target_addr)
                treader, self.tw = await asyncio.wait_for(
                    asyncio.open_connection(host, port), self.route["connect_timeout"]
                )
            except (OSError, ValueError, asyncio.TimeoutError) as exc:
                self.target_error = f"{type(exc).__name__}: {exc}"
                await self.send_close(1011, "could not reach the target")
                outcome = "target_unreachable"
                await self.await_client_close()
                return
            c2t = asyncio.create_task(self.client_to_target())
            t2c = asyncio.create_task(self.target_to_client(treader))
            idle = asyncio.create_task(self.idle_watch())
            tasks = [c2t, t2c, idle]
            if self.head_out:
                tasks.append(asyncio.create_task(self.flush_head_later(1.0)))
            if self.route["ping_every"]:
                tasks.append(asyncio.create_task(self.pinger(float(self.route["ping_every"]))))
            await asyncio.wait([c2t, t2c, idle], return_when=asyncio.FIRST_COMPLETED)
            if t2c.done() and t2c.result() == "aborted":
                outcome = "aborted"
                if self.aborted_how == "fin":
                    # Nothing more goes out; wait (briefly) for the client's end.
                    try:
                        await asyncio.wait_for(asyncio.shield(c2t), 5)
                    except asyncio.TimeoutError:
                        outcome += "+no_client_end"
            elif c2t.done() or (t2c.done() and t2c.result() == "client_gone"):
                # The client's side ended; what it sent before (a Close, say) is
                # read first, as the frames before a reset are still there.
                try:
                    result = await asyncio.wait_for(asyncio.shield(c2t), 2)
                except asyncio.TimeoutError:
                    result = "gone"
                outcome = "client_" + result
                if result == "close":
                    # The Close was echoed and the target's input ended; what the
                    # target still sends is dropped: count it for a moment.
                    idle.cancel()
                    if not self.is_tls():
                        try:
                            self.writer.write_eof()
                        except (OSError, RuntimeError):
                            pass
                    try:
                        outcome += "+target_" + await asyncio.wait_for(asyncio.shield(t2c), 1.0)
                    except asyncio.TimeoutError:
                        outcome += "+target_open"
            else:
                # The target ended (EOF: Close 1000; failed: 1011), or the idle
                # timeout failed the flow (1011).
                cause = t2c.result() if t2c.done() else "idle"
                outcome = "target_" + cause
                if cause == "idle":
                    self.target_wr_open = False
                    t2c.cancel()
                if self.route["close_delay"]:
                    await asyncio.sleep(self.route["close_delay"])
                await self.send_close(1000 if cause == "eof" else 1011)
                # Wait for the client's answering Close (still passing its data on
                # after an EOF), then drop the connection.
                try:
                    await asyncio.wait_for(asyncio.shield(c2t), self.route["close_timeout"])
                except asyncio.TimeoutError:
                    outcome += "+no_client_close"
        finally:
            for t in tasks:
                t.cancel()
            if self.tw is not None and not self.tw.is_closing():
                self.tw.transport.abort()
            if self.aborted_how in ("fin", "reset"):
                self.writer.transport.abort()  # no close_notify now either
            else:
                if (isinstance(self.reader, TlsStream) and self.client_close is not None
                        and self.reader.peer_end is None):
                    await asyncio.gather(*tasks, return_exceptions=True)  # no other reader
                    await self.await_tls_end(1.0)
                self.writer.close()
            self.gw.recorder.write(
                event="closed",
                id=self.id,
                outcome=outcome,
                target=self.target_addr,
                target_error=self.target_error,
                client_close_code=self.client_close.code if self.client_close else None,
                client_close_reason=self.client_close.reason if self.client_close else None,
                server_close_code=self.close_sent,
                aborted_how=self.aborted_how,
                tls_client_end=getattr(self.reader, "peer_end", None),
                protocol_error=self.protocol_error,
                sha256_from_client=self.sha_in.hexdigest(),
                sha256_to_client=self.sha_out.hexdigest(),
                duration=time.time() - started,
                # Pings never answered, by sequence number, and the last one answered:
                # only trailing pings may go unanswered (a Close overtook them).
                pings_unanswered=sorted(self.pings_outstanding.values()),
                last_pong_seq=self.last_pong_seq,
                **self.stats,
            )

    def is_tls(self):
        return isinstance(self.writer, TlsStream)

    async def await_tls_end(self, timeout):
        """After the close handshake, how the client ends TLS (close_notify or not),
        if it does within `timeout`."""
        try:
            async def drain():
                while await self.reader.read(65536):
                    pass
            await asyncio.wait_for(drain(), timeout)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass

    async def await_client_close(self):
        try:
            await asyncio.wait_for(self.client_to_target(), self.route["close_timeout"])
        except asyncio.TimeoutError:
            pass


def parse_listen(value):
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
    else:
        host, _, port = value.rpartition(":")
    return host, int(port)


async def amain(args):
    gw = Gateway(args)
    host, port = parse_listen(args.listen)
    gw.tls_context()  # fail fast on bad TLS files
    server = await asyncio.start_server(gw.handle, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()
    # A cancellation that lands as an inner wait_for completes is swallowed
    # (Python 3.11's wait_for): cancel again until every connection is gone,
    # for 5 s at most.
    for _ in range(10):
        pending = list(gw.tasks)
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.5)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--routes", help="JSON file of routes (re-read on each connection)")
    p.add_argument("--route", action="append", default=[], help="one route as JSON")
    p.add_argument("--record", help="JSON-lines file to append records to")
    p.add_argument("--slow-read", type=float, default=KNOBS["slow_read"], metavar="BYTES_PER_SEC")
    p.add_argument("--frame-size", type=int, default=KNOBS["frame_size"])
    p.add_argument("--fragment", action="store_true")
    p.add_argument("--text-frames", action="store_true")
    p.add_argument("--ping-every", type=float, default=KNOBS["ping_every"], metavar="SECONDS")
    p.add_argument("--close-delay", type=float, default=KNOBS["close_delay"])
    p.add_argument("--connect-timeout", type=float, default=KNOBS["connect_timeout"])
    p.add_argument("--handshake-delay", type=float, default=KNOBS["handshake_delay"])
    p.add_argument("--idle-timeout", type=float, default=KNOBS["idle_timeout"])
    p.add_argument("--close-timeout", type=float, default=KNOBS["close_timeout"])
    p.add_argument("--refusal-linger", type=float, default=KNOBS["refusal_linger"])
    p.add_argument("--max-frame", type=int, default=KNOBS["max_frame"])
    p.add_argument("--hang", action="store_true")
    p.add_argument("--bad-accept", action="store_true")
    p.add_argument("--dribble", action="store_true",
                   help="write the response head one byte per segment")
    p.add_argument("--coalesce", action="store_true",
                   help="send the 101 in one write with the first frame")
    p.add_argument("--abort-after-bytes", type=int, default=None,
                   help="end the TCP connection without a Close after N bytes to the client")
    p.add_argument("--tls-cert", help="serve wss:// with this PEM certificate (chain)")
    p.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", help="require a client certificate signed by a CA of this PEM file")
    p.add_argument("--tls-max-version", choices=["1.2", "1.3"],
                   default=os.environ.get("OTOROSHICTL_GATEWAY_TLS_MAX") or None,
                   help="the highest TLS version offered [default: $OTOROSHICTL_GATEWAY_TLS_MAX, else "
                        "Python's: 1.3]")
    p.add_argument("--tls-no-tickets", action="store_true",
                   help="issue no session tickets (sessions resume by id only)")
    p.add_argument("--abort-how", default=KNOBS["abort_how"], choices=["close", "fin", "reset"])
    p.add_argument("--modern-errors", action="store_true",
                   help="refusals in the modern format (Otoroshi-Error-Cause, error_description)")
    p.add_argument("--error-template", action="store_true",
                   help="refusals from a custom error template (no Otoroshi-Error-Msg)")
    args = p.parse_args(argv)
    if not args.routes and not args.route:
        p.error("give --routes FILE or --route JSON")
    try:
        asyncio.run(amain(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

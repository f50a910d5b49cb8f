/* gateway: the benchmark's stand-in for Otoroshi and for the service behind it.
 *
 * It answers the WebSocket upgrade, terminates the WebSocket and is itself
 * the service, so that no second hop spends CPU on a two-core machine: the
 * tunnel's own CPU is what bench/run compares. One libuv loop; raw
 * non-blocking sockets watched with uv_poll_t, so that reads land in one
 * shared buffer and writes leave a per-connection staging buffer in large
 * system calls (or 16 KiB TLS records). Each connection gets a bounded turn
 * per loop pass, so that a hundred busy streams are served fairly.
 *
 * Listeners, given as KIND:MODE:PORT (port 0 picks one; each chosen port is
 * printed as "LISTEN KIND:MODE:PORT" on stdout, then "READY"):
 *   ws       HTTP/1.1 upgrade (Sec-WebSocket-Accept from mbedTLS SHA-1 and
 *            base64), then WebSocket server frames. The mode comes from the
 *            query parameter remoteHost=MODE (the tunnel's --remote-host),
 *            else from the listener.
 *   wss      the same over TLS 1.2 (OpenSSL), with session tickets and a
 *            session cache, so that a client offering its last session
 *            resumes it.
 *   wssfull  the same without tickets nor cache: every handshake is full.
 *   wss13, wss13full  the same two offering TLS 1.3 as well (OpenSSL's
 *            TLS 1.3 suites, AES-256-GCM first), for mbedTLS 3.6's client.
 *   tcp      the bare service, for socat TCP:.
 *   tls      the bare service over TLS, for socat OPENSSL:.
 * Modes:
 *   sink     counts the bytes; at the end of the stream (FIN, or the client's
 *            WebSocket Close) sends the count as 8 bytes little-endian, then
 *            ends its side.
 *   source   reads an 8-byte little-endian length N, sends N bytes, then ends
 *            its side (FIN / close_notify, or Close 1000).
 *   echo     sends back what it receives, frame by frame.
 *   count    a sink that also reports its count (8 bytes, as above) each
 *            time another 256 KiB has arrived, so that the client knows what
 *            was delivered when, without waiting for buffers to drain.
 * SIGUSR1 prints one line "STATS KIND_full=N KIND_resumed=N ..." counting the
 * TLS handshakes; SIGTERM and SIGINT exit at once.
 *
 * Why the WebSocket frames are parsed here rather than by wslay's event API:
 * wslay copies its input through a 4 KiB buffer and unmasks client frames a
 * byte at a time; measured on the bench machine that costs 1.28 s of CPU per
 * GiB received, three times what the whole relay costs, so a wslay gateway
 * would be the bottleneck of every upload. Server frames need no mask on the
 * way out; masked input is skipped by the sinks and unmasked 8 bytes at a
 * time by the echo.
 *
 * Why OpenSSL rather than mbedTLS for TLS: Debian's mbedTLS 2.28 encrypts
 * AES-GCM at about 6 s of CPU per GiB on the bench machine (OpenSSL: 0.25),
 * which would make the gateway the bottleneck of every wss figure and of
 * the socat OPENSSL: floor.
 *
 * Build: cc -O2 -std=c11 gateway.c -luv -lmbedcrypto -lssl -lcrypto
 * Usage: gateway [--cert PEM --key PEM] KIND:MODE:PORT... */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>
#include <mbedtls/version.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define RBUF_SIZE (256 * 1024)
#define OUT_CAP (1024 * 1024)
#define OUT_HIGH (512 * 1024) /* producers stop above this much unsent */
#define FRAME_MAX 65536
#define HEAD_MAX 8192
#define TLS_CHUNK 16384
/* Work done for one connection per loop pass, so that a hundred busy
 * streams take turns instead of the fastest one taking everything. */
#define TURN_WRITE (1024 * 1024)
#define TURN_READS 4

enum kind { K_TCP, K_TLS, K_WS, K_WSS, K_WSSFULL, K_WSS13, K_WSS13FULL, N_KINDS };
enum mode { M_SINK, M_SOURCE, M_ECHO, M_COUNT };
enum phase { PH_TLS, PH_HTTP, PH_OPEN };

static const char *kind_names[] = {"tcp", "tls", "ws", "wss", "wssfull", "wss13", "wss13full"};
static const char *mode_names[] = {"sink", "source", "echo", "count"};
#define N_MODES 4
#define ACK_EVERY (256 * 1024)

struct listener {
	uv_poll_t poll;
	int fd;
	enum kind kind;
	enum mode mode;
};

struct conn {
	uv_poll_t poll;
	int fd;
	enum kind kind;
	enum mode mode;
	enum phase phase;
	bool ws;
	SSL *ssl;
	size_t tls_wlen; /* length of a TLS write to repeat after WANT_WRITE */
	bool tls_hs_write;

	char *head;
	size_t head_len;

	/* WebSocket input: the header being gathered, then the payload. */
	uint8_t fh[14];
	size_t fh_len;
	bool in_payload;
	uint8_t opcode;
	uint64_t pay_left;
	uint8_t mask[4];
	uint64_t mask_off;
	uint8_t ctl[125];
	size_t ctl_len;

	/* Input not consumed while the echo's output was full. */
	uint8_t *held;
	size_t held_off, held_len;
	bool paused;

	uint8_t *out;
	size_t out_off, out_len, out_cap;
	size_t wbudget;

	uint64_t count, acked;
	uint8_t req[8];
	unsigned req_got;
	uint64_t to_send;
	bool sending;

	bool eof_in;    /* the peer has ended (FIN, close_notify, or its Close) */
	bool finishing; /* our end is queued: end once the output is flushed */
	bool shut_sent;
	bool notify_sent;
	bool close_sent; /* ws: our Close frame is queued */
	bool dead;
	int events;
};

static uv_loop_t *loop;
static uint8_t rbuf[RBUF_SIZE];
static uint8_t pattern[FRAME_MAX];

static struct {
	bool ready;
	SSL_CTX *ctx;      /* resumption on: tickets and a session cache */
	SSL_CTX *ctx_full; /* resumption off: every handshake is full */
	SSL_CTX *ctx13, *ctx13_full; /* the same, TLS 1.3 offered too */
	bool told[3];
	unsigned long full[N_KINDS], resumed[N_KINDS]; /* handshakes, by listener kind */
} tls;

/* TLS 1.2 with these suites, the server's order first: AES-GCM as Otoroshi's
 * JVM prefers it, so that the tunnel (mbedTLS 2.28 speaks TLS 1.2 only) and
 * socat+OpenSSL negotiate the same suite and only the implementations differ. */
static const char suites[] = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
			     "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
			     "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

static void conn_process(struct conn *c);
static void on_conn_event(uv_poll_t *h, int status, int events);

static void die(const char *what, const char *why)
{
	fprintf(stderr, "gateway: %s: %s\n", what, why);
	exit(1);
}

/* ---- TLS ----------------------------------------------------------------------- */

static void tls_die(const char *what)
{
	char buf[256];
	ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
	die(what, buf);
}

static SSL_CTX *tls_ctx(const char *cert, const char *key, bool resume, bool tls13)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
		tls_die("SSL_CTX_new");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, tls13 ? TLS1_3_VERSION : TLS1_2_VERSION);
	if (SSL_CTX_set_cipher_list(ctx, suites) != 1)
		tls_die("cipher list");
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384");
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		tls_die(cert);
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		tls_die(key);
	static const unsigned char sid_ctx[] = "bench-gateway";
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	if (resume) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
		SSL_CTX_sess_set_cache_size(ctx, 100000);
	} else {
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	}
	return ctx;
}

static void tls_init(const char *cert, const char *key)
{
	tls.ctx = tls_ctx(cert, key, true, false);
	tls.ctx_full = tls_ctx(cert, key, false, false);
	tls.ctx13 = tls_ctx(cert, key, true, true);
	tls.ctx13_full = tls_ctx(cert, key, false, true);
	tls.ready = true;
}

/* ---- I/O ------------------------------------------------------------------- */

/* Returns the byte count, 0 at the end of the stream, -EAGAIN, or -EIO. */
static ssize_t xrecv(struct conn *c, uint8_t *buf, size_t len)
{
	if (c->ssl == NULL) {
		ssize_t n = recv(c->fd, buf, len, 0);
		if (n >= 0)
			return n;
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? -EAGAIN : -EIO;
	}
	int rc = SSL_read(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	if (rc > 0)
		return rc;
	switch (SSL_get_error(c->ssl, rc)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return -EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		ERR_clear_error();
		return -EIO;
	}
}

static ssize_t xsend(struct conn *c, const uint8_t *buf, size_t len)
{
	if (c->ssl == NULL) {
		ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0)
			return n;
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? -EAGAIN : -EIO;
	}
	/* A write that wanted to wait is repeated with the same length. */
	if (c->tls_wlen == 0)
		c->tls_wlen = len < TLS_CHUNK ? len : TLS_CHUNK;
	int rc = SSL_write(c->ssl, buf, (int)c->tls_wlen);
	if (rc > 0) {
		c->tls_wlen = 0;
		return rc;
	}
	int e = SSL_get_error(c->ssl, rc);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return -EAGAIN;
	ERR_clear_error();
	return -EIO;
}

static void on_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	close(c->fd);
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	free(c->head);
	free(c->held);
	free(c->out);
	free(c);
}

static void conn_close(struct conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	if (c->ssl != NULL && c->phase != PH_TLS && !c->notify_sent)
		SSL_shutdown(c->ssl);
	uv_poll_stop(&c->poll);
	uv_close((uv_handle_t *)&c->poll, on_closed);
}

static size_t out_pending(const struct conn *c)
{
	return c->out_len - c->out_off;
}

/* Makes room for n more bytes at the end of the output. */
static bool out_reserve(struct conn *c, size_t n)
{
	if (c->out_off > 0 && c->out_cap - c->out_len < n) {
		memmove(c->out, c->out + c->out_off, out_pending(c));
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_cap - c->out_len >= n)
		return true;
	if (c->out_len + n > OUT_CAP)
		return false;
	size_t cap = c->out_cap ? c->out_cap : 4096;
	while (cap - c->out_len < n)
		cap *= 2;
	if (cap > OUT_CAP)
		cap = OUT_CAP;
	uint8_t *p = realloc(c->out, cap);
	if (p == NULL)
		return false;
	c->out = p;
	c->out_cap = cap;
	return true;
}

static void out_append(struct conn *c, const void *data, size_t n)
{
	if (!out_reserve(c, n)) {
		conn_close(c);
		return;
	}
	memcpy(c->out + c->out_len, data, n);
	c->out_len += n;
}

static size_t ws_header(uint8_t *h, uint8_t first, uint64_t len)
{
	size_t n = 0;
	h[n++] = first;
	if (len < 126) {
		h[n++] = (uint8_t)len;
	} else if (len < 65536) {
		h[n++] = 126;
		h[n++] = (uint8_t)(len >> 8);
		h[n++] = (uint8_t)len;
	} else {
		h[n++] = 127;
		for (int s = 56; s >= 0; s -= 8)
			h[n++] = (uint8_t)(len >> s);
	}
	return n;
}

static void ws_append_frame(struct conn *c, uint8_t opcode, const uint8_t *data, size_t len)
{
	uint8_t h[14];
	size_t hn = ws_header(h, (uint8_t)(0x80 | opcode), len);
	out_append(c, h, hn);
	if (len > 0 && !c->dead)
		out_append(c, data, len);
}

static void le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Counts received bytes; the count mode reports each new MiB. */
static void count_bytes(struct conn *c, size_t n)
{
	c->count += n;
	if (c->mode == M_COUNT && c->count - c->acked >= ACK_EVERY) {
		uint8_t v[8];
		le64(v, c->count);
		if (c->ws)
			ws_append_frame(c, 0x2, v, 8);
		else
			out_append(c, v, 8);
		c->acked = c->count;
	}
}

/* Fills the output with what the source still owes, up to the high mark. */
static void produce(struct conn *c)
{
	while (c->sending && c->to_send > 0 && out_pending(c) < OUT_HIGH && !c->dead) {
		size_t n = c->to_send < FRAME_MAX ? (size_t)c->to_send : FRAME_MAX;
		if (c->ws) {
			ws_append_frame(c, 0x2, pattern, n);
		} else {
			out_append(c, pattern, n);
		}
		c->to_send -= n;
	}
	if (c->sending && c->to_send == 0 && !c->finishing) {
		c->sending = false;
		c->finishing = true;
		if (c->ws && !c->close_sent) {
			uint8_t code[2] = {0x03, 0xe8};
			ws_append_frame(c, 0x8, code, 2);
			c->close_sent = true;
		}
	}
}

static void flush(struct conn *c)
{
	while (!c->dead && out_pending(c) > 0 && c->wbudget > 0) {
		ssize_t n = xsend(c, c->out + c->out_off, out_pending(c));
		if (n == -EAGAIN)
			break;
		if (n < 0) {
			conn_close(c);
			return;
		}
		c->out_off += (size_t)n;
		c->wbudget = (size_t)n < c->wbudget ? c->wbudget - (size_t)n : 0;
		if (c->out_off == c->out_len)
			c->out_off = c->out_len = 0;
		if (out_pending(c) < OUT_HIGH)
			produce(c);
	}
}

/* The echo stops reading while its output is above the high mark. */
static bool reading_blocked(const struct conn *c)
{
	return c->paused || (c->mode == M_ECHO && out_pending(c) >= OUT_HIGH);
}

/* ---- the services ---------------------------------------------------------------- */

static void source_request(struct conn *c, const uint8_t *p, size_t n)
{
	while (n > 0 && c->req_got < 8) {
		c->req[c->req_got++] = *p++;
		n--;
	}
	if (c->req_got == 8 && !c->sending && !c->finishing) {
		uint64_t v = 0;
		for (int i = 7; i >= 0; i--)
			v = (v << 8) | c->req[i];
		c->to_send = v;
		c->sending = true;
		produce(c);
	}
}

static void unmask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], uint64_t off)
{
	uint8_t k[8];
	for (int i = 0; i < 8; i++)
		k[i] = key[(off + (uint64_t)i) & 3];
	uint64_t k64;
	memcpy(&k64, k, 8);
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v;
		memcpy(&v, src + i, 8);
		v ^= k64;
		memcpy(dst + i, &v, 8);
	}
	for (; i < n; i++)
		dst[i] = src[i] ^ k[i & 7];
}

static void ws_on_close(struct conn *c)
{
	c->eof_in = true;
	c->sending = false;
	c->to_send = 0;
	if (!c->close_sent) {
		if (c->mode == M_SINK || c->mode == M_COUNT) {
			uint8_t v[8];
			le64(v, c->count);
			ws_append_frame(c, 0x2, v, 8);
		}
		uint8_t code[2] = {0x03, 0xe8};
		if (c->ctl_len >= 2)
			memcpy(code, c->ctl, 2);
		ws_append_frame(c, 0x8, code, 2);
		c->close_sent = true;
	}
	c->finishing = true;
}

static void ws_frame_end(struct conn *c)
{
	c->in_payload = false;
	c->fh_len = 0;
	if (c->opcode == 0x8) {
		ws_on_close(c);
	} else if (c->opcode == 0x9 && !c->close_sent) {
		ws_append_frame(c, 0xA, c->ctl, c->ctl_len);
	}
}

static size_t ws_header_need(const uint8_t *fh, size_t have)
{
	if (have < 2)
		return 2;
	size_t need = 2 + ((fh[1] & 0x80) ? 4 : 0);
	uint8_t l7 = fh[1] & 0x7f;
	if (l7 == 126)
		need += 2;
	else if (l7 == 127)
		need += 8;
	return need;
}

/* Parses client frames; returns how much of p it consumed, which is less
 * than n only when the echo's output is full. */
static size_t ws_parse(struct conn *c, const uint8_t *p, size_t n)
{
	size_t used = 0;
	while (used < n && !c->dead && !c->eof_in) {
		if (!c->in_payload) {
			if (c->mode == M_ECHO && out_pending(c) >= OUT_HIGH)
				return used;
			c->fh[c->fh_len++] = p[used++];
			if (c->fh_len < ws_header_need(c->fh, c->fh_len))
				continue;
			uint8_t l7 = c->fh[1] & 0x7f;
			size_t at = 2;
			uint64_t len = l7;
			if (l7 == 126) {
				len = ((uint64_t)c->fh[2] << 8) | c->fh[3];
				at = 4;
			} else if (l7 == 127) {
				len = 0;
				for (int i = 0; i < 8; i++)
					len = (len << 8) | c->fh[2 + i];
				at = 10;
			}
			if (c->fh[1] & 0x80)
				memcpy(c->mask, c->fh + at, 4);
			else
				memset(c->mask, 0, 4);
			c->opcode = c->fh[0] & 0x0f;
			c->pay_left = len;
			c->mask_off = 0;
			c->ctl_len = 0;
			c->in_payload = true;
			if (c->opcode >= 0x8 && len > 125) {
				conn_close(c);
				return n;
			}
			if (c->mode == M_ECHO && c->opcode < 0x8) {
				uint8_t h[14];
				size_t hn = ws_header(h, c->fh[0], len);
				out_append(c, h, hn);
			}
			if (len == 0)
				ws_frame_end(c);
			continue;
		}
		size_t k = n - used;
		if (k > c->pay_left)
			k = (size_t)c->pay_left;
		if (c->opcode >= 0x8) {
			unmask_copy(c->ctl + c->ctl_len, p + used, k, c->mask, c->mask_off);
			c->ctl_len += k;
		} else if (c->mode == M_SINK || c->mode == M_COUNT) {
			count_bytes(c, k);
		} else if (c->mode == M_SOURCE) {
			uint8_t tmp[8];
			size_t t = k < 8 ? k : 8;
			unmask_copy(tmp, p + used, t, c->mask, c->mask_off);
			source_request(c, tmp, t);
		} else {
			size_t room = OUT_CAP - out_pending(c);
			if (room == 0)
				return used;
			if (k > room)
				k = room;
			if (!out_reserve(c, k)) {
				conn_close(c);
				return n;
			}
			unmask_copy(c->out + c->out_len, p + used, k, c->mask, c->mask_off);
			c->out_len += k;
		}
		used += k;
		c->pay_left -= k;
		c->mask_off += k;
		if (c->pay_left == 0)
			ws_frame_end(c);
	}
	return c->eof_in ? n : used;
}

static void raw_eof(struct conn *c)
{
	c->eof_in = true;
	if ((c->mode == M_SINK || c->mode == M_COUNT) && !c->finishing) {
		uint8_t v[8];
		le64(v, c->count);
		out_append(c, v, 8);
		c->finishing = true;
	} else if (c->mode == M_ECHO) {
		c->finishing = true;
	} else if (c->mode == M_SOURCE && !c->finishing) {
		/* The client left before the end: nothing more to do. */
		conn_close(c);
	}
}

/* Consumes input, keeping what the echo could not take yet. */
static void consume(struct conn *c, const uint8_t *p, size_t n)
{
	size_t used;
	if (c->ws) {
		used = ws_parse(c, p, n);
	} else if (c->mode == M_SINK || c->mode == M_COUNT) {
		count_bytes(c, n);
		used = n;
	} else if (c->mode == M_SOURCE) {
		source_request(c, p, n);
		used = n;
	} else {
		size_t room = OUT_CAP - out_pending(c);
		used = n < room ? n : room;
		out_append(c, p, used);
	}
	if (used < n && !c->dead) {
		uint8_t *h = malloc(n - used);
		if (h == NULL) {
			conn_close(c);
			return;
		}
		memcpy(h, p + used, n - used);
		c->held = h;
		c->held_off = 0;
		c->held_len = n - used;
		c->paused = true;
	}
}

static void resume_held(struct conn *c)
{
	if (c->held == NULL || out_pending(c) >= OUT_HIGH)
		return;
	uint8_t *h = c->held;
	size_t off = c->held_off, len = c->held_len;
	c->held = NULL;
	c->paused = false;
	consume(c, h + off, len - off);
	free(h);
}

/* ---- HTTP upgrade ---------------------------------------------------------------- */

static const char *find_ci(const char *hay, size_t hay_len, const char *needle)
{
	size_t n = strlen(needle);
	for (size_t i = 0; i + n <= hay_len; i++)
		if (strncasecmp(hay + i, needle, n) == 0)
			return hay + i;
	return NULL;
}

static bool upgrade(struct conn *c, size_t head_end)
{
	const char *h = c->head;
	const char *eol = memchr(h, '\r', head_end);
	if (eol == NULL || strncmp(h, "GET ", 4) != 0)
		return false;
	const char *q = find_ci(h, (size_t)(eol - h), "remoteHost=");
	if (q != NULL) {
		q += strlen("remoteHost=");
		for (int m = 0; m < N_MODES; m++) {
			size_t l = strlen(mode_names[m]);
			if (strncmp(q, mode_names[m], l) == 0 && (q[l] == '&' || q[l] == ' '))
				c->mode = (enum mode)m;
		}
	}
	const char *k = find_ci(h, head_end, "\r\nSec-WebSocket-Key:");
	if (k == NULL)
		return false;
	k += strlen("\r\nSec-WebSocket-Key:");
	while (*k == ' ' || *k == '\t')
		k++;
	const char *ke = k;
	while (ke < h + head_end && *ke != '\r' && *ke != ' ')
		ke++;
	char key[128];
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	size_t kl = (size_t)(ke - k);
	if (kl == 0 || kl + sizeof(guid) > sizeof(key))
		return false;
	memcpy(key, k, kl);
	memcpy(key + kl, guid, sizeof(guid) - 1);
	unsigned char sha[20];
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
	mbedtls_sha1((const unsigned char *)key, kl + sizeof(guid) - 1, sha);
#else
	mbedtls_sha1_ret((const unsigned char *)key, kl + sizeof(guid) - 1, sha);
#endif
	unsigned char accept[64];
	size_t al = 0;
	if (mbedtls_base64_encode(accept, sizeof(accept), &al, sha, sizeof(sha)) != 0)
		return false;
	char resp[256];
	int rl = snprintf(resp, sizeof(resp),
			  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
			  "Sec-WebSocket-Accept: %.*s\r\n\r\n",
			  (int)al, accept);
	out_append(c, resp, (size_t)rl);
	return true;
}

/* Gathers the request head, answers the upgrade once it is complete, and
 * hands what follows it to the frame parser. */
static void http_input(struct conn *c, const uint8_t *p, size_t n)
{
	if (c->head == NULL && (c->head = malloc(HEAD_MAX)) == NULL) {
		conn_close(c);
		return;
	}
	if (c->head_len + n > HEAD_MAX) {
		conn_close(c);
		return;
	}
	memcpy(c->head + c->head_len, p, n);
	size_t old = c->head_len;
	c->head_len += n;
	size_t from = old > 3 ? old - 3 : 0;
	for (size_t i = from; i + 4 <= c->head_len; i++) {
		if (memcmp(c->head + i, "\r\n\r\n", 4) != 0)
			continue;
		if (!upgrade(c, i + 2)) {
			static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
			out_append(c, bad, sizeof(bad) - 1);
			c->finishing = true;
			c->eof_in = true;
			return;
		}
		c->phase = PH_OPEN;
		size_t rest = c->head_len - (i + 4);
		uint8_t tmp[HEAD_MAX];
		memcpy(tmp, c->head + i + 4, rest);
		free(c->head);
		c->head = NULL;
		if (rest > 0)
			consume(c, tmp, rest);
		return;
	}
}

/* ---- the connection's event handling ------------------------------------------------- */

static void tls_handshake(struct conn *c)
{
	int rc = SSL_accept(c->ssl);
	c->tls_hs_write = false;
	if (rc != 1) {
		int e = SSL_get_error(c->ssl, rc);
		if (e == SSL_ERROR_WANT_READ)
			return;
		if (e == SSL_ERROR_WANT_WRITE) {
			c->tls_hs_write = true;
			return;
		}
		static unsigned long last;
		unsigned long err = ERR_peek_error();
		if (err != 0 && err != last) {
			char buf[256];
			ERR_error_string_n(err, buf, sizeof(buf));
			fprintf(stderr, "gateway: TLS handshake failed: %s\n", buf);
			last = err;
		}
		ERR_clear_error();
		conn_close(c);
		return;
	}
	if (SSL_session_reused(c->ssl))
		tls.resumed[c->kind]++;
	else
		tls.full[c->kind]++;
	bool v13 = c->kind == K_WSS13 || c->kind == K_WSS13FULL;
	int k = v13 ? 2 : c->ws ? 1 : 0;
	if (!tls.told[k]) {
		fprintf(stderr, "gateway: %s: %s %s\n", v13 ? "wss13" : c->ws ? "wss" : "tls", SSL_get_version(c->ssl),
			SSL_get_cipher_name(c->ssl));
		tls.told[k] = true;
	}
	c->phase = c->ws ? PH_HTTP : PH_OPEN;
}

static void read_some(struct conn *c)
{
	for (int i = 0; i < TURN_READS && !c->dead && !reading_blocked(c); i++) {
		if (c->phase == PH_TLS) {
			tls_handshake(c);
			if (c->phase == PH_TLS)
				return;
			continue;
		}
		size_t cap = RBUF_SIZE;
		if (c->phase == PH_HTTP)
			cap = HEAD_MAX - c->head_len;
		ssize_t n = xrecv(c, rbuf, cap);
		if (n == -EAGAIN)
			return;
		if (n < 0) {
			conn_close(c);
			return;
		}
		if (n == 0) {
			if (c->ws || c->phase != PH_OPEN) {
				/* A WebSocket that ends without a Close, or after ours. */
				conn_close(c);
				return;
			}
			raw_eof(c);
			return;
		}
		if (c->phase == PH_HTTP)
			http_input(c, rbuf, (size_t)n);
		else if (c->eof_in)
			continue; /* after the peer's Close: nothing to keep */
		else
			consume(c, rbuf, (size_t)n);
	}
}

static void update_events(struct conn *c)
{
	if (c->dead)
		return;
	int ev = 0;
	if (!reading_blocked(c))
		ev |= UV_READABLE;
	if (out_pending(c) > 0 || c->tls_hs_write)
		ev |= UV_WRITABLE;
	if (ev != c->events) {
		c->events = ev;
		uv_poll_start(&c->poll, ev, on_conn_event);
	}
}

static void conn_process(struct conn *c)
{
	c->wbudget = TURN_WRITE;
	if (!c->dead && c->phase == PH_TLS && c->tls_hs_write)
		tls_handshake(c);
	flush(c);
	resume_held(c);
	if (!c->dead)
		read_some(c);
	flush(c);
	resume_held(c);
	if (c->dead)
		return;
	if (c->finishing && out_pending(c) == 0) {
		if (!c->shut_sent) {
			c->shut_sent = true;
			if (!c->ws) {
				if (c->ssl != NULL) {
					SSL_shutdown(c->ssl);
					c->notify_sent = true;
				}
				shutdown(c->fd, SHUT_WR);
			}
		}
		if (c->eof_in) {
			conn_close(c);
			return;
		}
	}
	update_events(c);
}

static void on_conn_event(uv_poll_t *h, int status, int events)
{
	(void)events;
	struct conn *c = h->data;
	if (status < 0) {
		conn_close(c);
		return;
	}
	conn_process(c);
}

static void conn_start(struct listener *l, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		close(fd);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	c->kind = l->kind;
	c->mode = l->mode;
	c->ws = l->kind != K_TCP && l->kind != K_TLS;
	c->phase = c->ws ? PH_HTTP : PH_OPEN;
	if (l->kind != K_TCP && l->kind != K_WS) {
		SSL_CTX *ctx = l->kind == K_WSSFULL ? tls.ctx_full : l->kind == K_WSS13 ? tls.ctx13
			       : l->kind == K_WSS13FULL ? tls.ctx13_full : tls.ctx;
		c->ssl = SSL_new(ctx);
		if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
			SSL_free(c->ssl);
			close(fd);
			free(c);
			return;
		}
		c->phase = PH_TLS;
	}
	uv_poll_init(loop, &c->poll, fd);
	c->poll.data = c;
	c->events = UV_READABLE;
	uv_poll_start(&c->poll, UV_READABLE, on_conn_event);
}

static void on_accept(uv_poll_t *h, int status, int events)
{
	(void)events;
	struct listener *l = h->data;
	if (status < 0)
		return;
	for (int i = 0; i < 256; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
				static int told;
				if (!told++)
					fprintf(stderr, "gateway: accept: %s\n", strerror(errno));
			}
			return;
		}
		conn_start(l, fd);
	}
}

static void listen_on(const char *spec)
{
	char kind[16], mode[16];
	unsigned port;
	if (sscanf(spec, "%15[a-z0-9]:%15[a-z]:%u", kind, mode, &port) != 3 || port > 65535)
		die(spec, "expected KIND:MODE:PORT");
	struct listener *l = calloc(1, sizeof(*l));
	if (l == NULL)
		die(spec, "out of memory");
	int k = -1, m = -1;
	for (int i = 0; i < N_KINDS; i++)
		if (strcmp(kind, kind_names[i]) == 0)
			k = i;
	for (int i = 0; i < N_MODES; i++)
		if (strcmp(mode, mode_names[i]) == 0)
			m = i;
	if (k < 0 || m < 0)
		die(spec, "unknown kind or mode");
	l->kind = (enum kind)k;
	l->mode = (enum mode)m;
	if (l->kind != K_TCP && l->kind != K_WS && !tls.ready)
		die(spec, "needs --cert and --key");
	l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(l->fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(l->fd, 4096) != 0)
		die(spec, strerror(errno));
	socklen_t al = sizeof(a);
	getsockname(l->fd, (struct sockaddr *)&a, &al);
	printf("LISTEN %s:%s:%u\n", kind, mode, ntohs(a.sin_port));
	uv_poll_init(loop, &l->poll, l->fd);
	l->poll.data = l;
	uv_poll_start(&l->poll, UV_READABLE, on_accept);
}

/* SIGUSR1: one line with the TLS handshakes so far, full and resumed. */
static void on_usr1(uv_signal_t *h, int signum)
{
	(void)h;
	(void)signum;
	printf("STATS");
	for (int k = K_TLS; k < N_KINDS; k++) {
		if (k == K_WS)
			continue;
		printf(" %s_full=%lu %s_resumed=%lu", kind_names[k], tls.full[k], kind_names[k], tls.resumed[k]);
	}
	printf("\n");
	fflush(stdout);
}

static void on_signal(uv_signal_t *h, int signum)
{
	(void)h;
	(void)signum;
	fflush(stdout);
	_exit(0);
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	loop = uv_default_loop();
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)((i * 2654435761u) >> 13);
	const char *cert = NULL, *key = NULL;
	int first = 1;
	while (first + 1 < argc && strncmp(argv[first], "--", 2) == 0) {
		if (strcmp(argv[first], "--cert") == 0)
			cert = argv[first + 1];
		else if (strcmp(argv[first], "--key") == 0)
			key = argv[first + 1];
		else
			die(argv[first], "unknown option");
		first += 2;
	}
	if (first >= argc) {
		fprintf(stderr, "usage: gateway [--cert PEM --key PEM] KIND:MODE:PORT...\n"
				"  KIND: ws wss wssfull tcp tls; MODE: sink source echo count\n");
		return 2;
	}
	if (cert != NULL && key != NULL)
		tls_init(cert, key);
	for (int i = first; i < argc; i++)
		listen_on(argv[i]);
	printf("READY\n");
	fflush(stdout);
	uv_signal_t sig_term, sig_int;
	uv_signal_init(loop, &sig_term);
	uv_signal_start(&sig_term, on_signal, SIGTERM);
	uv_signal_init(loop, &sig_int);
	uv_signal_start(&sig_int, on_signal, SIGINT);
	uv_signal_t sig_usr1;
	uv_signal_init(loop, &sig_usr1);
	uv_signal_start(&sig_usr1, on_usr1, SIGUSR1);
	return uv_run(loop, UV_RUN_DEFAULT);
}

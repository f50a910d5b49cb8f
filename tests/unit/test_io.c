/* Unit tests for the I/O modules (listener, tunnel, its connection stack,
 * writer) on a private libuv loop, with everything else in this process:
 * a scripted gateway (and, in some runs, a CONNECT proxy in front of it)
 * that sends its frames in chosen chunk sizes, and a local client that
 * sends a payload and checks every byte that comes back.
 *
 * The allocation-failure sweep replaces malloc and friends (IO_FAILALLOC,
 * left out under a sanitizer): it counts the allocations of one whole
 * tunnel's life on the loop's thread, then, for every N, lives it again
 * with the Nth allocation failing. Each run must end by itself, without a
 * crash, with every handle closed and every block freed, and the listener
 * must then carry a clean tunnel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include "buf.h"
#include "cli.h"
#include "listener.h"
#include "mbedtls_compat.h"
#include "log.h"
#include "proxy.h"
#include "rng.h"
#include "tls.h"
#include "upgrade.h"

/* ---- the failing allocator ------------------------------------------------ */

/* Allocations are counted, and can fail, only on the thread that runs the
 * loop and only while armed; allocations of this file's own harness are
 * exempt. Blocks alive are counted on every thread (the resolver's
 * threads allocate what the loop's thread frees). */
static atomic_long live_blocks;
static _Thread_local bool loop_thread;
static _Thread_local int exempt;
static bool armed;
static long fail_at; /* the allocation to fail, from 1; 0: none */
static long counted; /* allocations counted since armed, mbedcrypto's apart */
static long counted_crypto; /* those mbedcrypto made itself */
static bool fail_in_crypto; /* fail_at counts mbedcrypto's own allocations */
static bool interposed; /* the allocator below is the one in use */

#define HARNESS_ENTER() (exempt++)
#define HARNESS_LEAVE() (exempt--)

#ifdef IO_FAILALLOC
static long failed;  /* allocations made to fail */
static void *failed_caller; /* the code whose allocation failed */

/* The blocks allocated while armed, with the code that asked for each:
 * what is left of them once everything has closed is a leak, and where it
 * was made says whose. */
#define TRACKED_MAX 8192
struct tracked {
	void *p;
	void *caller;
};
static struct tracked tracked[TRACKED_MAX];
static size_t tracked_overflow;
static atomic_flag tracked_lock = ATOMIC_FLAG_INIT;

static void tracked_add(void *p, void *caller)
{
	while (atomic_flag_test_and_set(&tracked_lock))
		;
	size_t i = 0;
	while (i < TRACKED_MAX && tracked[i].p != NULL)
		i++;
	if (i < TRACKED_MAX)
		tracked[i] = (struct tracked){p, caller};
	else
		tracked_overflow++;
	atomic_flag_clear(&tracked_lock);
}

static void tracked_remove(void *p)
{
	while (atomic_flag_test_and_set(&tracked_lock))
		;
	for (size_t i = 0; i < TRACKED_MAX; i++)
		if (tracked[i].p == p) {
			tracked[i].p = NULL;
			break;
		}
	atomic_flag_clear(&tracked_lock);
}

static bool tracking;

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *p);

/* The allocations mbedcrypto makes itself (its bignum arithmetic makes
 * thousands in a handshake, as many as its random numbers call for) are
 * counted apart from every other: those of the modules, of wslay, libuv,
 * and of mbedTLS's protocol layer keep their numbers from one life to the
 * next, whatever the arithmetic did. */
static bool made_by_crypto(void *caller)
{
	Dl_info info;
	exempt++;
	bool yes = dladdr(caller, &info) != 0 && info.dli_fname != NULL &&
		   strstr(info.dli_fname, "libmbedcrypto") != NULL;
	exempt--;
	return yes;
}

static bool fail_this_one(void *caller)
{
	if (!armed || !loop_thread || exempt > 0)
		return false;
	bool crypto = made_by_crypto(caller);
	long n = crypto ? ++counted_crypto : ++counted;
	if (n != fail_at || crypto != fail_in_crypto)
		return false;
	failed++;
	failed_caller = caller;
	errno = ENOMEM;
	/* IO_BACKTRACE shows where the failing allocation is made, to debug a
	 * sweep (with IO_SWEEP_ONLY). */
	if (getenv("IO_BACKTRACE") != NULL) {
		void *frames[32];
		exempt++;
		int n = backtrace(frames, 32);
		backtrace_symbols_fd(frames, n, STDERR_FILENO);
		exempt--;
	}
	return true;
}

static void *born(void *p, void *caller)
{
	if (p == NULL)
		return NULL;
	atomic_fetch_add(&live_blocks, 1);
	if (tracking && loop_thread && exempt == 0)
		tracked_add(p, caller);
	return p;
}

void *malloc(size_t size)
{
	if (fail_this_one(__builtin_return_address(0)))
		return NULL;
	return born(__libc_malloc(size), __builtin_return_address(0));
}

void *calloc(size_t n, size_t size)
{
	if (fail_this_one(__builtin_return_address(0)))
		return NULL;
	return born(__libc_calloc(n, size), __builtin_return_address(0));
}

void *realloc(void *old, size_t size)
{
	if (old == NULL)
		return malloc(size);
	if (size == 0) {
		free(old);
		return NULL;
	}
	if (fail_this_one(__builtin_return_address(0)))
		return NULL;
	void *p = __libc_realloc(old, size);
	if (p != NULL && p != old && tracking) {
		tracked_remove(old);
		if (loop_thread && exempt == 0)
			tracked_add(p, __builtin_return_address(0));
	}
	return p;
}

/* Freed blocks wait in a quarantine, filled with 0xdd, before they go
 * back to the C library: a use after free then reads the pattern (a
 * pointer from it faults) instead of a block handed out again. */
#define QUARANTINE 1024
static void *quarantine[QUARANTINE];
static size_t quarantine_next;
static atomic_flag quarantine_lock = ATOMIC_FLAG_INIT;

void free(void *p)
{
	if (p == NULL)
		return;
	atomic_fetch_sub(&live_blocks, 1);
	if (tracking)
		tracked_remove(p);
	memset(p, 0xdd, malloc_usable_size(p));
	while (atomic_flag_test_and_set(&quarantine_lock))
		;
	void *old = quarantine[quarantine_next];
	quarantine[quarantine_next] = p;
	quarantine_next = (quarantine_next + 1) % QUARANTINE;
	atomic_flag_clear(&quarantine_lock);
	__libc_free(old);
}

static void *aligned(size_t align, size_t size)
{
	void *p = __libc_memalign(align, size);
	if (p != NULL)
		atomic_fetch_add(&live_blocks, 1);
	return p;
}

int posix_memalign(void **out, size_t align, size_t size)
{
	void *p = aligned(align, size);
	if (p == NULL)
		return ENOMEM;
	*out = p;
	return 0;
}

void *aligned_alloc(size_t align, size_t size)
{
	return aligned(align, size);
}

void *memalign(size_t align, size_t size)
{
	return aligned(align, size);
}
#endif

/* ---- what the harness sends and expects ------------------------------------ */

#define PAYLOAD_LEN (100 * 1024)
static uint8_t payload[PAYLOAD_LEN];
static const char greeting[] = "hello, tunnel";
#define GREETING_LEN (sizeof(greeting) - 1)
static uint8_t expected[GREETING_LEN + PAYLOAD_LEN];
#define EXPECTED_LEN sizeof(expected)

static uv_loop_t loop;
static uv_timer_t deadline;
static bool deadline_hit;

/* ---- the scripted gateway (and proxy) ---------------------------------------- */

enum gphase { G_CONNECT, G_HEAD, G_WS };

struct gateway {
	uv_tcp_t server;
	uint16_t port;
	bool as_proxy;   /* a CONNECT comes first */
	bool tls;        /* TLS (after the CONNECT, if any) */
	/* The TLS server end: one connection at a time. */
	mbedtls_ssl_config sconf;
	mbedtls_ssl_ticket_context tickets; /* sessions the client resumes */
	mbedtls_x509_crt scert;
	mbedtls_pk_context skey;
	mbedtls_ssl_context ssl;
	bool ssl_live, tls_on, tls_up;
	uint8_t tls_in[256 * 1024]; /* ciphertext received, not yet read by mbedTLS */
	size_t tls_in_off, tls_in_len;
	size_t chunk;    /* bytes per write */
	/* The one connection of a life. */
	uv_tcp_t conn;
	bool conn_live;
	size_t conns;    /* connections accepted in this life */
	enum gphase phase;
	uint8_t in[256 * 1024];
	size_t in_len;
	uint8_t out[512 * 1024];
	size_t out_off, out_len;
	uv_timer_t pump;
	bool close_when_sent;
	bool saw_connect, saw_pong, saw_credential;
	int close_code; /* the client's Close: -1 none, 0 no code */
	size_t echoed;  /* payload bytes echoed */
	char connect_line[128];
};

static struct gateway gw;
static uv_tcp_t gw_spare;

static void gw_end_tls(void);

static void gw_conn_closed(uv_handle_t *h)
{
	(void)h;
	gw.conn_live = false;
	gw_end_tls();
}

static void gw_close(void)
{
	uv_timer_stop(&gw.pump);
	if (gw.conn_live && !uv_is_closing((uv_handle_t *)&gw.conn))
		uv_close((uv_handle_t *)&gw.conn, gw_conn_closed);
}

static void gw_pump(uv_timer_t *timer);

/* Bytes for the wire, as they are. */
static void gw_queue_raw(const void *data, size_t len)
{
	if (gw.out_off + gw.out_len + len > sizeof(gw.out)) {
		memmove(gw.out, gw.out + gw.out_off, gw.out_len);
		gw.out_off = 0;
	}
	assert_true(gw.out_len + len <= sizeof(gw.out));
	memcpy(gw.out + gw.out_off + gw.out_len, data, len);
	gw.out_len += len;
	if (!uv_is_active((uv_handle_t *)&gw.pump))
		uv_timer_start(&gw.pump, gw_pump, 0, 0);
}

/* Bytes for the client: sealed into TLS records once TLS is up. */
static void gw_queue(const void *data, size_t len)
{
	if (!gw.tls_on) {
		gw_queue_raw(data, len);
		return;
	}
	const uint8_t *p = data;
	while (len > 0) {
		int rc = mbedtls_ssl_write(&gw.ssl, p, len);
		assert_true(rc > 0);
		p += rc;
		len -= (size_t)rc;
	}
}

static int srv_send(void *ctx, const unsigned char *buf, size_t len)
{
	(void)ctx;
	gw_queue_raw(buf, len);
	return (int)len;
}

static int srv_recv(void *ctx, unsigned char *buf, size_t len)
{
	(void)ctx;
	if (gw.tls_in_len == 0)
		return MBEDTLS_ERR_SSL_WANT_READ;
	size_t n = len < gw.tls_in_len ? len : gw.tls_in_len;
	memcpy(buf, gw.tls_in + gw.tls_in_off, n);
	gw.tls_in_off += n;
	gw.tls_in_len -= n;
	return (int)n;
}

/* From here on the connection speaks TLS. */
static void gw_start_tls(void)
{
	mbedtls_ssl_init(&gw.ssl);
	gw.ssl_live = true;
	assert_int_equal(mbedtls_ssl_setup(&gw.ssl, &gw.sconf), 0);
	mbedtls_ssl_set_bio(&gw.ssl, NULL, srv_send, srv_recv, NULL);
	gw.tls_on = true;
	gw.tls_up = false;
}

static void gw_end_tls(void)
{
	if (gw.ssl_live)
		mbedtls_ssl_free(&gw.ssl);
	gw.ssl_live = gw.tls_on = gw.tls_up = false;
	gw.tls_in_off = gw.tls_in_len = 0;
}

/* A server frame: unmasked, the shortest length form. */
static void gw_frame(bool fin, uint8_t opcode, const void *data, size_t len)
{
	uint8_t head[10];
	size_t n = 0;
	head[n++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
	if (len < 126) {
		head[n++] = (uint8_t)len;
	} else if (len < 65536) {
		head[n++] = 126;
		head[n++] = (uint8_t)(len >> 8);
		head[n++] = (uint8_t)len;
	} else {
		head[n++] = 127;
		for (int shift = 56; shift >= 0; shift -= 8)
			head[n++] = (uint8_t)((uint64_t)len >> shift);
	}
	gw_queue(head, n);
	if (len > 0)
		gw_queue(data, len);
}

/* One chunk per loop iteration, so that the tunnel reads them apart. */
static void gw_pump(uv_timer_t *timer)
{
	(void)timer;
	HARNESS_ENTER();
	if (gw.conn_live && !uv_is_closing((uv_handle_t *)&gw.conn) && gw.out_len > 0) {
		size_t n = gw.out_len < gw.chunk ? gw.out_len : gw.chunk;
		uv_buf_t b = uv_buf_init((char *)gw.out + gw.out_off, (unsigned)n);
		int rc = uv_try_write((uv_stream_t *)&gw.conn, &b, 1);
		if (rc > 0) {
			gw.out_off += (size_t)rc;
			gw.out_len -= (size_t)rc;
		} else if (rc != UV_EAGAIN) {
			gw_close();
			HARNESS_LEAVE();
			return;
		}
		if (gw.out_len > 0)
			uv_timer_start(&gw.pump, gw_pump, rc > 0 ? 0 : 1, 0);
	}
	if (gw.out_len == 0 && gw.close_when_sent) {
		if (gw.tls_up) {
			/* close_notify first, then the TCP close. */
			gw.tls_up = false;
			mbedtls_ssl_close_notify(&gw.ssl);
			if (gw.out_len > 0) {
				uv_timer_start(&gw.pump, gw_pump, 0, 0);
				HARNESS_LEAVE();
				return;
			}
		}
		gw_close(); /* as Play does once the Closes are exchanged */
	}
	HARNESS_LEAVE();
}

static const uint8_t *find_end_of_head(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 4 <= n; i++)
		if (memcmp(p + i, "\r\n\r\n", 4) == 0)
			return p + i + 4;
	return NULL;
}

static void gw_consume(size_t n)
{
	memmove(gw.in, gw.in + n, gw.in_len - n);
	gw.in_len -= n;
}

/* The upgrade request: the answer, then the script (a text frame to
 * ignore, a binary message in two fragments with a Ping between them). */
static bool gw_upgrade(const uint8_t *end)
{
	const char *key_name = "Sec-WebSocket-Key: ";
	char head[4096];
	size_t hl = (size_t)(end - gw.in);
	if (hl >= sizeof(head))
		return false;
	memcpy(head, gw.in, hl);
	head[hl] = '\0';
	gw_consume(hl);
	char *k = strstr(head, key_name);
	if (strncmp(head, "GET /.well-known/otoroshi/tunnel", 32) != 0 || k == NULL)
		return false;
	/* base64("io-client:io-secret") */
	gw.saw_credential = strstr(head, "\r\nAuthorization: Basic aW8tY2xpZW50OmlvLXNlY3JldA==\r\n") != NULL;
	k += strlen(key_name);
	char key[64];
	size_t kl = strcspn(k, "\r");
	if (kl >= sizeof(key))
		return false;
	memcpy(key, k, kl);
	key[kl] = '\0';
	char accept[UPGRADE_ACCEPT_LEN + 1];
	if (upgrade_accept_for_key(key, accept) != 0)
		return false;
	char answer[256];
	int n = snprintf(answer, sizeof(answer),
			 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
			 "Sec-WebSocket-Accept: %s\r\n\r\n",
			 accept);
	gw_queue(answer, (size_t)n);
	gw_frame(true, 0x1, "ignored", 7);
	gw_frame(false, 0x2, greeting, 7);
	gw_frame(true, 0x9, "hb", 2);
	gw_frame(true, 0x0, greeting + 7, GREETING_LEN - 7);
	gw.phase = G_WS;
	return true;
}

/* Client frames: binary ones are echoed, the Close is answered. */
static bool gw_frames(void)
{
	for (;;) {
		if (gw.in_len < 2)
			return true;
		const uint8_t *p = gw.in;
		if (!(p[1] & 0x80))
			return false; /* client frames are masked */
		uint64_t len = p[1] & 0x7f;
		size_t pos = 2;
		if (len == 126) {
			if (gw.in_len < 4)
				return true;
			len = (uint64_t)p[2] << 8 | p[3];
			pos = 4;
		} else if (len == 127) {
			if (gw.in_len < 10)
				return true;
			len = 0;
			for (int i = 0; i < 8; i++)
				len = len << 8 | p[2 + i];
			pos = 10;
		}
		if (len > 65536)
			return false;
		if (gw.in_len < pos + 4 + len)
			return true;
		const uint8_t *key = p + pos;
		uint8_t *data = gw.in + pos + 4;
		for (uint64_t i = 0; i < len; i++)
			data[i] ^= key[i % 4];
		uint8_t opcode = p[0] & 0x0f;
		if (opcode == 0x2 || opcode == 0x0) {
			gw_frame(true, 0x2, data, (size_t)len);
			gw.echoed += (size_t)len;
		} else if (opcode == 0xA) {
			gw.saw_pong = gw.saw_pong || (len == 2 && memcmp(data, "hb", 2) == 0);
		} else if (opcode == 0x9) {
			gw_frame(true, 0xA, data, (size_t)len);
		} else if (opcode == 0x8) {
			gw.close_code = len >= 2 ? data[0] << 8 | data[1] : 0;
			gw_frame(true, 0x8, data, len >= 2 ? 2 : 0);
			gw.close_when_sent = true;
			gw_consume(pos + 4 + (size_t)len);
			return true; /* nothing is read after a Close */
		}
		gw_consume(pos + 4 + (size_t)len);
	}
}

static void gw_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	(void)suggested;
	if (gw.tls_on) {
		if (gw.tls_in_off > 0) {
			memmove(gw.tls_in, gw.tls_in + gw.tls_in_off, gw.tls_in_len);
			gw.tls_in_off = 0;
		}
		size_t room = sizeof(gw.tls_in) - gw.tls_in_len;
		*buf = uv_buf_init((char *)gw.tls_in + gw.tls_in_len, (unsigned)(room > 65536 ? 65536 : room));
		return;
	}
	size_t room = sizeof(gw.in) - gw.in_len;
	*buf = uv_buf_init((char *)gw.in + gw.in_len, (unsigned)(room > 65536 ? 65536 : room));
}

/* Ciphertext in: the handshake, then plaintext into gw.in. Returns the
 * plaintext byte count added, or -1 when the connection is to close. */
static ssize_t gw_tls_in(size_t nread)
{
	gw.tls_in_len += nread;
	if (!gw.tls_up) {
		int rc = mbedtls_ssl_handshake(&gw.ssl);
		if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
			return 0;
		if (rc != 0)
			return -1;
		gw.tls_up = true;
	}
	size_t added = 0;
	for (;;) {
		size_t room = sizeof(gw.in) - gw.in_len;
		if (room == 0)
			return -1;
		int rc = mbedtls_ssl_read(&gw.ssl, gw.in + gw.in_len, room);
		if (rc > 0) {
			gw.in_len += (size_t)rc;
			added += (size_t)rc;
			continue;
		}
		if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
			return (ssize_t)added;
		return added > 0 ? (ssize_t)added : -1; /* close_notify or an error */
	}
}

static void gw_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	(void)s;
	(void)buf;
	HARNESS_ENTER();
	if (nread < 0) {
		gw_close();
	} else if (nread > 0 && !gw.close_when_sent) {
		bool ok = true;
		if (gw.tls_on) {
			ssize_t n = gw_tls_in((size_t)nread);
			if (n < 0) {
				gw_close();
				HARNESS_LEAVE();
				return;
			}
		} else {
			gw.in_len += (size_t)nread;
		}
		if (gw.phase == G_CONNECT) {
			const uint8_t *end = find_end_of_head(gw.in, gw.in_len);
			if (end != NULL) {
				size_t line = strcspn((const char *)gw.in, "\r");
				snprintf(gw.connect_line, sizeof(gw.connect_line), "%.*s",
					 (int)(line < 127 ? line : 127), (const char *)gw.in);
				gw.saw_connect = true;
				gw_consume((size_t)(end - gw.in));
				static const char ok200[] = "HTTP/1.1 200 Connection established\r\n\r\n";
				gw_queue(ok200, sizeof(ok200) - 1);
				gw.phase = G_HEAD;
				if (gw.tls) {
					/* What came after the CONNECT is the start of the
					 * TLS handshake. */
					gw_start_tls();
					size_t rest = gw.in_len;
					memcpy(gw.tls_in, gw.in, rest);
					gw.in_len = 0;
					if (gw_tls_in(rest) < 0)
						ok = false;
				}
			}
		}
		if (gw.phase == G_HEAD) {
			const uint8_t *end = find_end_of_head(gw.in, gw.in_len);
			if (end != NULL)
				ok = gw_upgrade(end);
		}
		if (ok && gw.phase == G_WS)
			ok = gw_frames();
		if (!ok || gw.in_len == sizeof(gw.in))
			gw_close();
	}
	HARNESS_LEAVE();
}

static void gw_spare_closed(uv_handle_t *h)
{
	(void)h;
}

static void gw_on_connection(uv_stream_t *server, int status)
{
	HARNESS_ENTER();
	if (status == 0) {
		if (gw.conn_live) {
			/* One connection per life: another one is a failure of
			 * the test, closed at once. */
			uv_tcp_init(&loop, &gw_spare);
			if (uv_accept(server, (uv_stream_t *)&gw_spare) == 0)
				gw.conns++;
			uv_close((uv_handle_t *)&gw_spare, gw_spare_closed);
		} else if (uv_tcp_init(&loop, &gw.conn) == 0) {
			gw.conn_live = true;
			if (gw.tls && !gw.as_proxy)
				gw_start_tls();
			if (uv_accept(server, (uv_stream_t *)&gw.conn) == 0) {
				gw.conns++;
				uv_read_start((uv_stream_t *)&gw.conn, gw_alloc, gw_read);
			} else {
				gw_close();
			}
		}
	}
	HARNESS_LEAVE();
}

static void gw_reset(size_t chunk, bool as_proxy)
{
	gw.chunk = chunk;
	gw.as_proxy = as_proxy;
	gw_end_tls();
	gw.phase = as_proxy ? G_CONNECT : G_HEAD;
	gw.in_len = gw.out_off = gw.out_len = 0;
	gw.conns = 0;
	gw.close_when_sent = gw.saw_connect = gw.saw_pong = gw.saw_credential = false;
	gw.close_code = -1;
	gw.echoed = 0;
	gw.connect_line[0] = '\0';
}

/* ---- the local client ------------------------------------------------------- */

struct client {
	uv_tcp_t tcp;
	uv_connect_t creq;
	uv_write_t wreq;
	uv_shutdown_t sreq;
	bool live, connected, shut, eof;
	int error;
	size_t got;
	bool mismatch;
	uint8_t rbuf[65536];
};

static struct client cl;

static void cl_closed(uv_handle_t *h)
{
	(void)h;
	cl.live = false;
}

static void cl_close(void)
{
	if (cl.live && !uv_is_closing((uv_handle_t *)&cl.tcp))
		uv_close((uv_handle_t *)&cl.tcp, cl_closed);
}

static void cl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	(void)suggested;
	*buf = uv_buf_init((char *)cl.rbuf, sizeof(cl.rbuf));
}

static void cl_shut(uv_shutdown_t *req, int status)
{
	(void)req;
	(void)status;
}

static void cl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	(void)s;
	HARNESS_ENTER();
	if (nread < 0) {
		if (nread == UV_EOF)
			cl.eof = true;
		else
			cl.error = (int)nread;
		cl_close();
	} else if (nread > 0) {
		size_t n = (size_t)nread;
		if (cl.got + n > EXPECTED_LEN || memcmp(expected + cl.got, buf->base, n) != 0)
			cl.mismatch = true;
		cl.got += n;
		/* Everything came back: the client is done, and says so. */
		if (cl.got == EXPECTED_LEN && !cl.shut) {
			cl.shut = true;
			if (uv_shutdown(&cl.sreq, (uv_stream_t *)&cl.tcp, cl_shut) != 0)
				cl_close();
		}
	}
	HARNESS_LEAVE();
}

static void cl_written(uv_write_t *req, int status)
{
	(void)req;
	if (status < 0)
		cl.error = status;
}

static void cl_connected(uv_connect_t *req, int status)
{
	(void)req;
	HARNESS_ENTER();
	if (status < 0) {
		cl.error = status;
		cl_close();
	} else {
		cl.connected = true;
		uv_buf_t b = uv_buf_init((char *)payload, PAYLOAD_LEN);
		if (uv_write(&cl.wreq, (uv_stream_t *)&cl.tcp, &b, 1, cl_written) != 0 ||
		    uv_read_start((uv_stream_t *)&cl.tcp, cl_alloc, cl_read) != 0)
			cl_close();
	}
	HARNESS_LEAVE();
}

static void cl_start(uint16_t port)
{
	memset(&cl, 0, sizeof(cl));
	struct sockaddr_in sa;
	assert_int_equal(uv_ip4_addr("127.0.0.1", port, &sa), 0);
	assert_int_equal(uv_tcp_init(&loop, &cl.tcp), 0);
	cl.live = true;
	assert_int_equal(uv_tcp_connect(&cl.creq, &cl.tcp, (const struct sockaddr *)&sa, cl_connected), 0);
}

/* ---- one tunnel's life --------------------------------------------------------- */

static struct tunnel_config cfg;
static struct proxy px;
static struct listener lst;
static struct tls_setup *client_tls;
static char pki_dir[128], cert_path[192], key_path[192];

static uint16_t port_of(const uv_tcp_t *tcp)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	assert_int_equal(uv_tcp_getsockname(tcp, (struct sockaddr *)&ss, &len), 0);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void on_deadline(uv_timer_t *t)
{
	(void)t;
	deadline_hit = true;
}

/* Runs the loop until cond holds, or for ms at most. */
static bool run_until(bool (*cond)(void), uint64_t ms)
{
	deadline_hit = false;
	uv_timer_start(&deadline, on_deadline, ms, 0);
	while (!cond() && !deadline_hit)
		uv_run(&loop, UV_RUN_ONCE);
	uv_timer_stop(&deadline);
	return cond();
}

static bool life_over(void)
{
	return !cl.live && !gw.conn_live && lst.count == 0 && !lst.forwards[0].spare_busy &&
	       !uv_is_active((uv_handle_t *)&lst.forwards[0].retry) && !uv_is_active((uv_handle_t *)&gw.pump);
}

static bool clean_life(void)
{
	return cl.got == EXPECTED_LEN && !cl.mismatch && cl.eof && cl.error == 0 && gw.saw_pong && gw.saw_credential &&
	       gw.close_code == 1000 && gw.conns == 1 && (!gw.as_proxy || gw.saw_connect);
}

static void describe_life(char *out, size_t len)
{
	snprintf(out, len,
		 "client: %s, %zu of %zu bytes back%s%s%s; gateway: %zu connection(s) %s, Pong %s, Close %d; "
		 "%zu tunnel(s) still open%s",
		 cl.live ? "open" : "closed", cl.got, EXPECTED_LEN, cl.mismatch ? " (wrong bytes)" : "",
		 cl.eof ? ", EOF" : "", cl.error ? uv_strerror(cl.error) : "", gw.conns,
		 gw.conn_live ? "open" : "closed", gw.saw_pong ? "seen" : "not seen", gw.close_code, lst.count,
		 gw.conns > 0 && !gw.saw_credential ? "; the upgrade lacked the API key" : "");
}

/* One local connection through the listener, from connect to the last
 * close; fail_n > 0 makes that allocation fail. Returns true when the
 * life was a clean one. Fails the test if it does not end by itself. */
static bool live_one(long fail_n, const char *what)
{
	gw_reset(gw.chunk, gw.as_proxy);
	cl_start(port_of(&lst.forwards[0].server));
	counted = counted_crypto = 0;
	fail_at = fail_n;
	loop_thread = true;
	armed = true;
	bool over = run_until(life_over, 8000);
	armed = false;
	if (!over) {
		char why[512];
		describe_life(why, sizeof(why));
		fail_msg("%s: the tunnel's life did not end within 8 s: %s", what, why);
	}
	return clean_life();
}

static void open_listener(bool via_proxy, bool tls)
{
	cli_defaults(&cfg);
	cfg.tls = tls;
	cfg.gw_port = gw.port;
	/* An API key: the credential's own allocations are in the sweep. */
	cfg.access = ACCESS_APIKEY;
	cfg.apikey_client_id = "io-client";
	cfg.apikey_client_secret = "io-secret";
	cfg.local_host = "127.0.0.1";
	cfg.local_port = 0;
	cfg.linger_ms = 0;
	cfg.keepalive = 0;
	static char host[64];
	if (via_proxy) {
		/* The proxy resolves the gateway's name: it need not exist. */
		snprintf(host, sizeof(host), "gateway.invalid:%u", (unsigned)gw.port);
		snprintf(cfg.gw_name, sizeof(cfg.gw_name), "gateway.invalid");
		char url[64], err[256];
		snprintf(url, sizeof(url), "http://127.0.0.1:%u", (unsigned)gw.port);
		assert_int_equal(proxy_parse_url(url, &px, err, sizeof(err)), 0);
		px.source = "--proxy";
	} else {
		snprintf(host, sizeof(host), "127.0.0.1:%u", (unsigned)gw.port);
		snprintf(cfg.gw_name, sizeof(cfg.gw_name), "127.0.0.1");
	}
	cfg.host = host;
	gw.as_proxy = via_proxy;
	gw.tls = tls;
	client_tls = NULL;
	if (tls) {
		/* The certificate verified as the real thing is: its name (or
		 * address) and its chain, itself the trust anchor. */
		struct tls_options o = {.ca_cert = cert_path, .ca_flag = "--ca-cert"};
		char err[256];
		client_tls = tls_setup_create(&o, err, sizeof(err));
		if (client_tls == NULL)
			fail_msg("tls_setup_create: %s", err);
	}
	assert_int_equal(listener_open(&lst, &loop, &cfg, via_proxy ? &px : NULL, client_tls, NULL), 0);
}

static bool loop_idle(void)
{
	return !uv_loop_alive(&loop);
}

/* Stops the listener and runs the loop until only the harness's own
 * handles are left: every handle of the listener and its tunnels closed. */
static void close_listener(void)
{
	listener_stop(&lst);
	/* The harness's handles stay; the loop runs until only they are. */
	uv_unref((uv_handle_t *)&gw.server);
	uv_unref((uv_handle_t *)&gw.pump);
	uv_unref((uv_handle_t *)&deadline);
	bool idle = run_until(loop_idle, 5000);
	uv_ref((uv_handle_t *)&gw.server);
	uv_ref((uv_handle_t *)&gw.pump);
	uv_ref((uv_handle_t *)&deadline);
	if (!idle)
		fail_msg("the listener's handles were still open 5 s after listener_stop");
	listener_finish(&lst);
	if (gw.as_proxy)
		proxy_finish(&px);
	tls_setup_destroy(client_tls);
	client_tls = NULL;
}

/* Blocks alive once everything a life allocates is freed: the pool of
 * chunks is handed back first. */
static long blocks_now(void)
{
	bufq_pool_drain();
	return atomic_load(&live_blocks);
}

/* ---- fixtures ----------------------------------------------------------------- */

static void on_poll(uv_poll_t *p, int status, int events)
{
	(void)p;
	(void)status;
	(void)events;
}

static int group_setup(void **state)
{
	(void)state;
	if (rng_init() != 0)
		return -1;
	log_default(LOG_ERROR);
	for (size_t i = 0; i < PAYLOAD_LEN; i++)
		payload[i] = (uint8_t)((i * 131 + (i >> 9)) & 0xff);
	memcpy(expected, greeting, GREETING_LEN);
	memcpy(expected + GREETING_LEN, payload, PAYLOAD_LEN);
	/* Under valgrind, its allocator replaces this file's: the sweep
	 * cannot fail anything there, and is skipped. */
	loop_thread = true;
	fail_at = 1;
	fail_in_crypto = false;
	counted = counted_crypto = 0;
	armed = true;
	/* Through a volatile pointer: the compiler may drop a malloc whose
	 * block is only freed. */
	void *(*volatile alloc)(size_t) = malloc;
	void *probe = alloc(16);
	armed = false;
	fail_at = 0;
	interposed = probe == NULL;
	free(probe);
	/* The gateway's certificate, for its name behind the proxy and its
	 * address straight. */
	const char *tmp = getenv("TMPDIR");
	snprintf(pki_dir, sizeof(pki_dir), "%s/test-io-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	if (mkdtemp(pki_dir) == NULL)
		return -1;
	snprintf(cert_path, sizeof(cert_path), "%s/gateway.pem", pki_dir);
	snprintf(key_path, sizeof(key_path), "%s/gateway.key", pki_dir);
	char cmd[1024];
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=gateway "
		 "-addext subjectAltName=DNS:gateway.invalid,IP:127.0.0.1 -keyout '%s' -out '%s' >/dev/null 2>&1",
		 key_path, cert_path);
	if (system(cmd) != 0) {
		fprintf(stderr, "cannot make a certificate with openssl: %s\n", cmd);
		return -1;
	}
	mbedtls_ssl_config_init(&gw.sconf);
	mbedtls_x509_crt_init(&gw.scert);
	mbedtls_pk_init(&gw.skey);
	if (mbedtls_ssl_config_defaults(&gw.sconf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
					MBEDTLS_SSL_PRESET_DEFAULT) != 0 ||
	    mbedtls_x509_crt_parse_file(&gw.scert, cert_path) != 0)
		return -1;
	mbedtls_ssl_conf_rng(&gw.sconf, rng_mbedtls, NULL);
	if (test_parse_keyfile(&gw.skey, key_path) != 0)
		return -1;
	if (mbedtls_ssl_conf_own_cert(&gw.sconf, &gw.scert, &gw.skey) != 0)
		return -1;
	mbedtls_ssl_ticket_init(&gw.tickets);
	if (mbedtls_ssl_ticket_setup(&gw.tickets, rng_mbedtls, NULL, MBEDTLS_CIPHER_AES_256_GCM, 3600) != 0)
		return -1;
	mbedtls_ssl_conf_session_tickets_cb(&gw.sconf, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse,
					    &gw.tickets);
	if (uv_loop_init(&loop) != 0)
		return -1;
	uv_timer_init(&loop, &deadline);
	uv_timer_init(&loop, &gw.pump);
	struct sockaddr_in sa;
	uv_ip4_addr("127.0.0.1", 0, &sa);
	if (uv_tcp_init(&loop, &gw.server) != 0 || uv_tcp_bind(&gw.server, (const struct sockaddr *)&sa, 0) != 0 ||
	    uv_listen((uv_stream_t *)&gw.server, 16, gw_on_connection) != 0)
		return -1;
	gw.port = port_of(&gw.server);
	gw.chunk = 1 << 20;
	/* libuv grows its table of watched descriptors with realloc and
	 * aborts when that fails: watching a high descriptor once makes the
	 * table big enough for every later one, so that only the modules'
	 * own allocations are put to the test. */
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || dup2(sv[0], 255) < 0)
		return -1;
	static uv_poll_t poll;
	uv_poll_init(&loop, &poll, 255);
	uv_poll_start(&poll, UV_READABLE, on_poll);
	uv_close((uv_handle_t *)&poll, NULL);
	uv_run(&loop, UV_RUN_NOWAIT);
	close(255);
	close(sv[0]);
	close(sv[1]);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	/* A test that failed half way leaves a listener or tunnels open:
	 * the loop gets 5 s to close them, then the process ends anyway. */
	if (lst.loop != NULL && !lst.stopping)
		listener_stop(&lst);
	uv_close((uv_handle_t *)&gw.server, NULL);
	uv_close((uv_handle_t *)&gw.pump, NULL);
	uv_unref((uv_handle_t *)&deadline);
	int rc = run_until(loop_idle, 5000) ? 0 : -1;
	uv_close((uv_handle_t *)&deadline, NULL);
	listener_finish(&lst);
	uv_run(&loop, UV_RUN_NOWAIT);
	if (rc == 0)
		rc = uv_loop_close(&loop);
	else
		fprintf(stderr, "handles still open 5 s after the tests: the loop is left as it is\n");
	mbedtls_ssl_config_free(&gw.sconf);
	mbedtls_ssl_ticket_free(&gw.tickets);
	mbedtls_x509_crt_free(&gw.scert);
	mbedtls_pk_free(&gw.skey);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", pki_dir);
	if (system(cmd) != 0)
		rc = -1;
	rng_finish();
	return rc == 0 ? 0 : -1;
}

/* ---- tests ---------------------------------------------------------------------- */

/* Clean lives with the gateway's bytes in pieces of every size, straight
 * and through the proxy: every byte back, in order, the Pong and the
 * Close 1000 seen by the gateway, everything closed and freed after. */
static void test_chunk_sizes(void **state)
{
	(void)state;
	static const size_t chunks[] = {1, 2, 3, 7, 13, 64, 1000, 1 << 20};
	/* What the first use of anything keeps (the resolver's threads) is
	 * kept before the counting starts. */
	for (int tls = 0; tls < 2; tls++) {
		open_listener(false, tls);
		assert_true(live_one(0, "warm-up"));
		close_listener();
	}
	for (int mode = 0; mode < 4; mode++) {
		bool via_proxy = mode & 1, tls = mode & 2;
		for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
			gw.chunk = chunks[i];
			long before = blocks_now();
			open_listener(via_proxy, tls);
			char what[64];
			snprintf(what, sizeof(what), "chunks of %zu%s%s", chunks[i], via_proxy ? " via the proxy" : "",
				 tls ? " over TLS" : "");
			if (!live_one(0, what)) {
				char why[512];
				describe_life(why, sizeof(why));
				fail_msg("%s: %s", what, why);
			}
			if (via_proxy)
				assert_non_null(strstr(gw.connect_line, "CONNECT gateway.invalid:"));
			assert_int_equal(gw.echoed, PAYLOAD_LEN);
			close_listener();
			long after = blocks_now();
			if (after != before)
				fail_msg("%s: %ld block(s) more alive after the tunnel than before", what, after - before);
		}
	}
	gw.chunk = 1 << 20;
}

#ifdef IO_FAILALLOC
/* The blocks of the failing life still alive: each one made by wslay is
 * counted in *theirs (a known leak of the library's, see sweep), any other
 * one fails the test, with the function that allocated it. */
static void check_leaks(const char *what, long *theirs)
{
	/* Only a failure inside wslay's queue makes wslay leak: a block of
	 * wslay's left over after any other one is ours (a context not
	 * destroyed). */
	Dl_info fi;
	bool in_queue = failed_caller != NULL && dladdr(failed_caller, &fi) != 0 && fi.dli_sname != NULL &&
			strcmp(fi.dli_sname, "wslay_queue_push") == 0;
	if (tracked_overflow > 0)
		fail_msg("%s: more than %d blocks alive at once: the leak check cannot follow", what, TRACKED_MAX);
	char ours[1024] = "";
	size_t ol = 0;
	for (size_t i = 0; i < TRACKED_MAX; i++) {
		if (tracked[i].p == NULL)
			continue;
		Dl_info info;
		bool known = dladdr(tracked[i].caller, &info) != 0 && info.dli_fname != NULL;
		bool by_wslay = known && (strstr(info.dli_fname, "libwslay") != NULL ||
					  (info.dli_sname != NULL && strncmp(info.dli_sname, "wslay_", 6) == 0));
		if (in_queue && by_wslay) {
			(*theirs)++;
		} else if (ol < sizeof(ours) - 1) {
			int n = snprintf(ours + ol, sizeof(ours) - ol, " %s+%#lx (%s)",
					 known && info.dli_sname ? info.dli_sname : "?",
					 known ? (unsigned long)((char *)tracked[i].caller - (char *)(info.dli_saddr ? info.dli_saddr : info.dli_fbase)) : 0UL,
					 known ? info.dli_fname : "?");
			ol += n > 0 ? (size_t)n : 0;
		}
		tracked[i].p = NULL;
	}
	if (ol > 0)
		fail_msg("%s: blocks leaked, allocated by:%s", what, ours);
}

/* One in this many of mbedcrypto's own allocations is made to fail, when
 * they are many. */
#define CRYPTO_SAMPLE 100

/* Each life of the sweep is the second through its listener: its TLS
 * handshake resumes the session of the first. */
static bool sweep_resumed;

/* A new listener, and when the sweep is of resumed sessions, one clean
 * life through it to leave a session to resume. */
static void open_for_sweep(bool via_proxy, bool tls, const char *what)
{
	open_listener(via_proxy, tls);
	if (sweep_resumed && !live_one(0, what))
		fail_msg("%s: the life that leaves a session was not a clean one", what);
}

/* One failing life, then a clean one through the same listener, then the
 * check that everything was closed and freed. Returns false when the
 * failing life never came to allocation n (only mbedcrypto's count may
 * vary). */
static bool fail_one(bool via_proxy, bool tls, bool crypto, long n, long total, long *base, long *wslay_leaks,
		     long *clean_anyway)
{
	char what[128];
	snprintf(what, sizeof(what), "%sallocation %ld of %ld failing%s%s%s", crypto ? "mbedcrypto's " : "", n, total,
		 via_proxy ? " via the proxy" : "", tls ? " over TLS" : "", sweep_resumed ? ", session resumed" : "");
	open_for_sweep(via_proxy, tls, what);
	failed = 0;
	fail_in_crypto = crypto;
	tracking = true;
	*clean_anyway += live_one(n, what);
	fail_in_crypto = false;
	if (failed != 1 && !crypto)
		fail_msg("%s: %ld allocation(s) failed, not one (the life took another path)", what, failed);
	/* The listener still takes connections, and carries them. */
	if (!live_one(0, what)) {
		char why[512];
		describe_life(why, sizeof(why));
		fail_msg("%s: the next tunnel was not a clean one: %s", what, why);
	}
	close_listener();
	long now = blocks_now();
	tracking = false;
	long theirs = 0;
	check_leaks(what, &theirs);
	if (now != *base + theirs)
		fail_msg("%s: %ld block(s) %s once everything closed", what,
			 now > *base + theirs ? now - *base - theirs : *base + theirs - now,
			 now > *base + theirs ? "leaked" : "freed twice or foreign");
	*wslay_leaks += theirs;
	*base = now;
	return failed == 1;
}

/* Every allocation of a tunnel's life, made to fail in turn (of
 * mbedcrypto's own, one in CRYPTO_SAMPLE). IO_SWEEP_ONLY=N (or cN for
 * mbedcrypto's) runs that one, to debug it. */
static void sweep(bool via_proxy, bool tls, size_t chunk)
{
	long wslay_leaks = 0, clean_anyway = 0, runs = 0, missed = 0;
	gw.chunk = chunk;
	/* The life once, so that what the first use of anything keeps is
	 * kept already, then once more to count its allocations, each through
	 * a listener of its own as every failing life is (a second life through
	 * the same one would resume the first one's TLS session). */
	open_for_sweep(via_proxy, tls, "warm-up");
	assert_true(live_one(0, "warm-up"));
	close_listener();
	open_for_sweep(via_proxy, tls, "counting");
	assert_true(live_one(0, "counting"));
	long total = counted, total_crypto = counted_crypto;
	close_listener();
	long base = blocks_now();
	assert_true(total > 10);
	/* A resumed handshake signs and checks nothing: a full one's
	 * arithmetic allocates thousands of times. */
	if (sweep_resumed && total_crypto >= 1000)
		fail_msg("the second handshake through a listener did not resume the first one's session "
			 "(%ld allocations by mbedcrypto)", total_crypto);
	print_message("%s%s%s, chunks of %zu: %ld allocations in a tunnel's life, and %ld by mbedcrypto's arithmetic\n",
		      via_proxy ? "via a proxy" : "straight", tls ? ", TLS" : "", sweep_resumed ? " resumed" : "", chunk,
		      total, total_crypto);
	const char *only = getenv("IO_SWEEP_ONLY");
	if (only != NULL) {
		bool crypto = only[0] == 'c';
		long n = atol(only + crypto);
		if (n <= (crypto ? total_crypto : total))
			fail_one(via_proxy, tls, crypto, n, crypto ? total_crypto : total, &base, &wslay_leaks,
				 &clean_anyway);
		return;
	}
	for (long n = 1; n <= total; n++, runs++)
		fail_one(via_proxy, tls, false, n, total, &base, &wslay_leaks, &clean_anyway);
	/* A few (a resumed handshake's) are failed each in turn. */
	long step = total_crypto < 2 * CRYPTO_SAMPLE ? 1 : CRYPTO_SAMPLE;
	for (long n = step == 1 ? 1 : CRYPTO_SAMPLE / 2; n <= total_crypto; n += step, runs++)
		missed += !fail_one(via_proxy, tls, true, n, total_crypto, &base, &wslay_leaks, &clean_anyway);
	print_message("%ld failing allocations, %ld of which still gave a clean tunnel (a retry or a spare path)\n",
		      runs, clean_anyway);
	if (missed > 0)
		print_message("%ld of mbedcrypto's were past the end of a shorter handshake\n", missed);
	if (wslay_leaks > 0)
		print_message("wslay leaked %ld block(s) in all: its message queue loses a message whose queue cell "
			      "cannot be allocated (wslay 1.1.1; the intrusive queue of its later sources has no such "
			      "allocation)\n",
			      wslay_leaks);
	gw.chunk = 1 << 20;
}

static void test_alloc_failures(void **state)
{
	(void)state;
	if (!interposed) {
		print_message("malloc is not this test's (valgrind?): no allocation can be made to fail\n");
		skip();
	}
	if (getenv("IO_SWEEP_SKIP") != NULL) {
		print_message("IO_SWEEP_SKIP is set: no allocation sweep\n");
		skip();
	}
	sweep(false, false, 7);
	sweep(false, false, 1 << 20);
	sweep(true, false, 1 << 20);
	/* Telling mbedcrypto's allocations apart takes its shared library: an
	 * mbedTLS linked in (the subproject's) makes thousands that would
	 * count as the modules' own, and a sweep over TLS proves nothing. */
	void (*fn)(mbedtls_ssl_context *) = mbedtls_ssl_init;
	void *where;
	memcpy(&where, &fn, sizeof(where));
	Dl_info info;
	if (dladdr(where, &info) == 0 || info.dli_fname == NULL ||
	    strstr(info.dli_fname, "libmbedtls") == NULL) {
		print_message("mbedTLS is linked in statically: the sweeps over TLS are left out\n");
		return;
	}
	sweep(false, true, 1 << 20);
	sweep(true, true, 1 << 20);
	sweep_resumed = true;
	sweep(false, true, 1 << 20);
	sweep_resumed = false;
}
#else
static void test_alloc_failures(void **state)
{
	(void)state;
	skip(); /* a sanitizer owns malloc */
}
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chunk_sizes),
		cmocka_unit_test(test_alloc_failures),
	};
	return cmocka_run_group_tests_name("io", tests, group_setup, group_teardown);
}

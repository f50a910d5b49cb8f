/* Unit tests for upgrade.h: the request head byte for byte, and the
 * response parser fed with scripted answers in every split: whole, one
 * byte at a time, and cut at every offset, with WebSocket bytes after the
 * head that must be left for the ws layer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/base64.h>

#include "cli.h"
#include "upgrade.h"

/* RFC 6455 section 1.3. */
#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

#define OK_101 \
	"HTTP/1.1 101 Switching Protocols\r\n" \
	"Upgrade: websocket\r\n" \
	"Connection: Upgrade\r\n" \
	"Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n" \
	"\r\n"

/* A binary frame "abc" and the start of a second one: what a gateway may
 * send in the same TCP segment as its 101. */
static const uint8_t frames[] = {0x82, 0x03, 'a', 'b', 'c', 0x82, 0x7e, 0x01};

static struct upgrade_response *new_response(const char *accept)
{
	struct upgrade_response *r = malloc(sizeof(*r));
	assert_non_null(r);
	memset(r, 0xa5, sizeof(*r)); /* init must not rely on zeroed memory */
	upgrade_response_init(r, accept);
	return r;
}

/* Feeds data[0..len) cut at the given offsets (ascending). Returns the
 * first result that is not NEED_MORE, or NEED_MORE; *end gets the offset
 * in data where the HTTP answer ended (data + *end is the first byte that
 * was not consumed). While the parser needs more, it must take every byte. */
static int feed_cuts(struct upgrade_response *r, const uint8_t *data, size_t len, const size_t *cuts,
		     size_t ncuts, size_t *end)
{
	size_t from = 0;
	for (size_t i = 0; i <= ncuts; i++) {
		size_t to = i < ncuts ? cuts[i] : len;
		size_t consumed = (size_t)-1;
		int rc = upgrade_response_feed(r, data + from, to - from, &consumed);
		assert_true(consumed <= to - from);
		if (rc != UPGRADE_NEED_MORE) {
			*end = from + consumed;
			return rc;
		}
		assert_int_equal(consumed, to - from);
		from = to;
	}
	*end = len;
	return UPGRADE_NEED_MORE;
}

static int feed_whole(struct upgrade_response *r, const char *text, size_t *end)
{
	return feed_cuts(r, (const uint8_t *)text, strlen(text), NULL, 0, end);
}

static int feed_bytewise(struct upgrade_response *r, const uint8_t *data, size_t len, size_t *end)
{
	size_t *cuts = malloc((len + 1) * sizeof(*cuts));
	assert_non_null(cuts);
	for (size_t i = 0; i < len; i++)
		cuts[i] = i + 1;
	int rc = feed_cuts(r, data, len, cuts, len > 0 ? len - 1 : 0, end);
	free(cuts);
	return rc;
}

/* An independent base64 (RFC 4648, padded), to check the request's
 * Authorization header without trusting the code under test. */
static void b64(const char *in, size_t len, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *p = (const unsigned char *)in;
	size_t o = 0;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < len)
			v |= p[i + 2];
		out[o++] = tab[(v >> 18) & 63];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? tab[v & 63] : '=';
	}
	out[o] = '\0';
}

static struct tunnel_config config_for(enum access_type access)
{
	struct tunnel_config cfg;
	cli_defaults(&cfg);
	cfg.host = "myotoroshi.example.com:9999";
	cfg.remote_host = "db.internal";
	cfg.remote_port = 5432;
	cfg.access = access;
	return cfg;
}

/* ---- keys ---------------------------------------------------------- */

static void test_accept_rfc_example(void **state)
{
	(void)state;
	char out[UPGRADE_ACCEPT_LEN + 1];
	memset(out, 'Z', sizeof(out));
	assert_int_equal(upgrade_accept_for_key(RFC_KEY, out), 0);
	assert_string_equal(out, RFC_ACCEPT);
	assert_int_equal(strlen(out), UPGRADE_ACCEPT_LEN);
}

static void test_make_key(void **state)
{
	(void)state;
	char key[UPGRADE_KEY_LEN + 1];
	assert_int_equal(upgrade_make_key((const uint8_t *)"the sample nonce", key), 0);
	assert_string_equal(key, RFC_KEY);

	uint8_t raw[16];
	for (int round = 0; round < 64; round++) {
		for (int i = 0; i < 16; i++)
			raw[i] = (uint8_t)(round * 37 + i * 11 + (round ^ i));
		memset(key, 'Z', sizeof(key));
		assert_int_equal(upgrade_make_key(raw, key), 0);
		assert_int_equal(strlen(key), UPGRADE_KEY_LEN);
		unsigned char back[32];
		size_t olen = 0;
		assert_int_equal(mbedtls_base64_decode(back, sizeof(back), &olen, (const unsigned char *)key,
						       strlen(key)), 0);
		assert_int_equal(olen, 16);
		assert_memory_equal(back, raw, 16);
	}
}

/* ---- request ------------------------------------------------------- */

static void check_request(const struct tunnel_config *cfg, const char *expected)
{
	char out[2048];
	memset(out, 'Z', sizeof(out));
	int n = upgrade_build_request(out, sizeof(out), cfg, RFC_KEY);
	assert_int_equal(n, (int)strlen(expected));
	assert_string_equal(out, expected);
}

#define HEAD_START(query, host) \
	"GET /.well-known/otoroshi/tunnel?transport=tcp" query " HTTP/1.1\r\n" \
	"Host: " host "\r\n" \
	"Connection: Upgrade\r\n" \
	"Upgrade: websocket\r\n" \
	"Sec-WebSocket-Version: 13\r\n" \
	"Sec-WebSocket-Key: " RFC_KEY "\r\n"

static void test_request_apikey(void **state)
{
	(void)state;
	struct tunnel_config cfg = config_for(ACCESS_APIKEY);
	cfg.apikey_client_id = "Aladdin";
	cfg.apikey_client_secret = "open sesame";
	check_request(&cfg, HEAD_START("&remoteHost=db.internal&remotePort=5432", "myotoroshi.example.com:9999")
		      "Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n"
		      "\r\n");
}

/* Every padding case of base64, and long credentials. */
static void test_request_apikey_lengths(void **state)
{
	(void)state;
	char id[300], secret[300], plain[700], enc[1000], expected[2048];
	for (size_t il = 1; il < 300; il += il < 8 ? 1 : 97) {
		for (size_t sl = 1; sl < 300; sl += sl < 8 ? 1 : 89) {
			for (size_t i = 0; i < il; i++)
				id[i] = (char)('a' + (i % 26));
			id[il] = '\0';
			for (size_t i = 0; i < sl; i++)
				secret[i] = (char)('0' + (i % 10));
			secret[sl] = '\0';
			int pl = snprintf(plain, sizeof(plain), "%s:%s", id, secret);
			b64(plain, (size_t)pl, enc);
			snprintf(expected, sizeof(expected),
				 HEAD_START("", "gw") "Authorization: Basic %s\r\n\r\n", enc);
			struct tunnel_config cfg;
			cli_defaults(&cfg);
			cfg.host = "gw";
			cfg.apikey_client_id = id;
			cfg.apikey_client_secret = secret;
			check_request(&cfg, expected);
		}
	}
}

static void test_request_bearer(void **state)
{
	(void)state;
	struct tunnel_config cfg = config_for(ACCESS_BEARER);
	cfg.bearer_token = "eyJhbGciOiJIUzI1NiJ9.e30.sig";
	/* Credentials of other access types are not sent. */
	cfg.apikey_client_id = "id";
	cfg.apikey_client_secret = "secret";
	cfg.session_token = "sess";
	check_request(&cfg, HEAD_START("&remoteHost=db.internal&remotePort=5432", "myotoroshi.example.com:9999")
		      "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig\r\n"
		      "\r\n");
}

static void test_request_session(void **state)
{
	(void)state;
	struct tunnel_config cfg = config_for(ACCESS_SESSION);
	cfg.session_token = "s&t=1";
	cfg.bearer_token = "bearer";
	cfg.apikey_client_id = "id";
	cfg.apikey_client_secret = "secret";
	check_request(&cfg, HEAD_START("&remoteHost=db.internal&remotePort=5432&pappsToken=s%26t%3D1",
				       "myotoroshi.example.com:9999")
		      "\r\n");
}

static void test_request_public(void **state)
{
	(void)state;
	struct tunnel_config cfg = config_for(ACCESS_PUBLIC);
	cfg.bearer_token = "bearer";
	cfg.apikey_client_id = "id";
	cfg.apikey_client_secret = "secret";
	cfg.session_token = "sess";
	check_request(&cfg, HEAD_START("&remoteHost=db.internal&remotePort=5432", "myotoroshi.example.com:9999")
		      "\r\n");
}

static void test_request_host_unchanged(void **state)
{
	(void)state;
	struct tunnel_config cfg = config_for(ACCESS_PUBLIC);
	cfg.remote_host = NULL;
	cfg.remote_port = 0;
	cfg.host = "[::1]:8443";
	check_request(&cfg, HEAD_START("", "[::1]:8443") "\r\n");
	cfg.host = "gw.example.com";
	check_request(&cfg, HEAD_START("", "gw.example.com") "\r\n");
	cfg.remote_host = "a b";
	check_request(&cfg, HEAD_START("&remoteHost=a%20b", "gw.example.com") "\r\n");
}

/* Like snprintf: every size of out gets the head's first bytes, a NUL, and
 * nothing past it; the length needed is returned whatever the size. */
static void check_truncation(const struct tunnel_config *cfg, size_t step)
{
	char full[1024];
	int need = upgrade_build_request(full, sizeof(full), cfg, RFC_KEY);
	assert_true(need > 0);
	assert_int_equal(strlen(full), (size_t)need);
	for (size_t outlen = 1; outlen <= (size_t)need + 1; outlen += step) {
		char out[1024];
		memset(out, 'Z', sizeof(out));
		assert_int_equal(upgrade_build_request(out, outlen, cfg, RFC_KEY), need);
		assert_int_equal(strlen(out), outlen - 1 < (size_t)need ? outlen - 1 : (size_t)need);
		assert_memory_equal(out, full, strlen(out));
		assert_int_equal(out[outlen], 'Z');
	}
	assert_int_equal(upgrade_build_request(NULL, 0, cfg, RFC_KEY), need);
}

static void test_request_truncation(void **state)
{
	(void)state;
	struct tunnel_config cfg = config_for(ACCESS_BEARER);
	cfg.bearer_token = "tok";
	check_truncation(&cfg, 7);
}

/* --header lines go after the tunnel's own, the blank line last, and the
 * length and truncation hold with them. */
static void test_request_extra_headers(void **state)
{
	(void)state;
	struct tunnel_config cfg = config_for(ACCESS_BEARER);
	cfg.bearer_token = "tok";
	cfg.headers[0] = "X-Team: data";
	cfg.headers[1] = "X-Empty: ";
	cfg.n_headers = 2;
	check_request(&cfg, HEAD_START("&remoteHost=db.internal&remotePort=5432", "myotoroshi.example.com:9999")
		      "Authorization: Bearer tok\r\n"
		      "X-Team: data\r\n"
		      "X-Empty: \r\n"
		      "\r\n");
	check_truncation(&cfg, 3);
}

/* ---- response: success --------------------------------------------- */

static void test_response_whole(void **state)
{
	(void)state;
	struct upgrade_response *r = new_response(RFC_ACCEPT);
	size_t end = 0;
	assert_int_equal(feed_whole(r, OK_101, &end), UPGRADE_SWITCHED);
	assert_int_equal(end, strlen(OK_101));
	assert_int_equal(r->status, 101);
	assert_string_equal(r->reason, "Switching Protocols");

	/* Once switched, later bytes belong to the WebSocket. */
	size_t consumed = 99;
	assert_int_equal(upgrade_response_feed(r, frames, sizeof(frames), &consumed), UPGRADE_SWITCHED);
	assert_int_equal(consumed, 0);
	free(r);
}

/* Head and frames in one buffer, cut in two at every offset and in three
 * at many: the result and the frames' offset never change. */
static void test_response_every_split(void **state)
{
	(void)state;
	size_t hlen = strlen(OK_101);
	size_t len = hlen + sizeof(frames);
	uint8_t *data = malloc(len);
	assert_non_null(data);
	memcpy(data, OK_101, hlen);
	memcpy(data + hlen, frames, sizeof(frames));
	struct upgrade_response *r = malloc(sizeof(*r));
	assert_non_null(r);

	for (size_t cut = 0; cut <= len; cut++) {
		upgrade_response_init(r, RFC_ACCEPT);
		size_t end = 0;
		int rc = feed_cuts(r, data, len, &cut, 1, &end);
		if (rc != UPGRADE_SWITCHED || end != hlen)
			fail_msg("cut at %zu: rc %d, end %zu (head is %zu)", cut, rc, end, hlen);
	}
	for (size_t a = 0; a <= len; a += 3) {
		for (size_t b = a; b <= len; b += 5) {
			size_t cuts[2] = {a, b};
			upgrade_response_init(r, RFC_ACCEPT);
			size_t end = 0;
			assert_int_equal(feed_cuts(r, data, len, cuts, 2, &end), UPGRADE_SWITCHED);
			assert_int_equal(end, hlen);
		}
	}
	upgrade_response_init(r, RFC_ACCEPT);
	size_t end = 0;
	assert_int_equal(feed_bytewise(r, data, len, &end), UPGRADE_SWITCHED);
	assert_int_equal(end, hlen);

	/* Head alone, one byte at a time: NEED_MORE until its last byte. */
	upgrade_response_init(r, RFC_ACCEPT);
	for (size_t i = 0; i < hlen; i++) {
		size_t consumed = 0;
		int rc = upgrade_response_feed(r, data + i, 1, &consumed);
		assert_int_equal(consumed, 1);
		assert_int_equal(rc, i + 1 < hlen ? UPGRADE_NEED_MORE : UPGRADE_SWITCHED);
	}
	free(r);
	free(data);
}

static void test_response_lf_only(void **state)
{
	(void)state;
	const char *head = "HTTP/1.1 101 Switching Protocols\n"
			   "Upgrade: websocket\n"
			   "Connection: Upgrade\n"
			   "Sec-WebSocket-Accept: " RFC_ACCEPT "\n"
			   "\n";
	size_t hlen = strlen(head);
	uint8_t data[256];
	memcpy(data, head, hlen);
	memcpy(data + hlen, frames, sizeof(frames));
	size_t len = hlen + sizeof(frames);
	struct upgrade_response *r = new_response(RFC_ACCEPT);
	for (size_t cut = 0; cut <= len; cut++) {
		upgrade_response_init(r, RFC_ACCEPT);
		size_t end = 0;
		assert_int_equal(feed_cuts(r, data, len, &cut, 1, &end), UPGRADE_SWITCHED);
		assert_int_equal(end, hlen);
	}
	free(r);
}

static void test_response_case_insensitive(void **state)
{
	(void)state;
	static const char *const heads[] = {
		"HTTP/1.1 101 Switching Protocols\r\n"
		"upgrade: WebSocket\r\n"
		"CONNECTION: keep-alive, Upgrade\r\n"
		"sec-websocket-accept: " RFC_ACCEPT "\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\n"
		"Server: x\r\n"
		"Connection:upgrade\r\n"
		"UPGRADE:   WEBSOCKET  \r\n"
		"Sec-WebSocket-Accept:\t" RFC_ACCEPT " \r\n\r\n",
		"HTTP/1.1 101\r\n"
		"Upgrade: websocket\r\n"
		"Connection: Upgrade,keep-alive\r\n"
		"Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		struct upgrade_response *r = new_response(RFC_ACCEPT);
		size_t end = 0;
		int rc = feed_whole(r, heads[i], &end);
		if (rc != UPGRADE_SWITCHED)
			fail_msg("head %zu: %d (%s)", i, rc, upgrade_strerror(rc));
		assert_int_equal(end, strlen(heads[i]));
		free(r);
	}
}

/* HTTP/1.0 has no protocol switch: a 101 over it is refused, while a
 * 1.0 refusal is still a refusal. A TLS record where HTTP belongs means
 * the port speaks TLS. */
static void test_response_http10_and_tls(void **state)
{
	(void)state;
	struct upgrade_response *r = new_response(RFC_ACCEPT);
	size_t end = 0;
	assert_int_equal(feed_whole(r, "HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\n"
				    "Connection: Upgrade\r\nSec-WebSocket-Accept: " RFC_ACCEPT "\r\n\r\n", &end),
			 UPGRADE_ERR_HTTP10);
	free(r);
	r = new_response(RFC_ACCEPT);
	assert_int_equal(feed_whole(r, "HTTP/1.0 403 Forbidden\r\nContent-Length: 0\r\n\r\n", &end), UPGRADE_REFUSED);
	assert_int_equal(r->status, 403);
	free(r);
	/* A TLS alert (what a TLS server sends to a plain-text request) and a
	 * handshake record. */
	static const uint8_t alert[] = {0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46};
	static const uint8_t hello[] = {0x16, 0x03, 0x03, 0x00, 0x31, 0x02, 0x00};
	const uint8_t *records[] = {alert, hello};
	for (size_t i = 0; i < 2; i++) {
		r = new_response(RFC_ACCEPT);
		size_t used = 0;
		assert_int_equal(upgrade_response_feed(r, records[i], 7, &used), UPGRADE_ERR_TLS);
		assert_int_equal(upgrade_response_feed(r, records[i], 7, &used), UPGRADE_ERR_TLS);
		free(r);
	}
	assert_non_null(strstr(upgrade_strerror(UPGRADE_ERR_TLS), "--tls"));
}

/* ---- response: broken 101s ----------------------------------------- */

struct bad_case {
	const char *head;
	int rc;
};

static void check_bad_cases(const struct bad_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		/* Whole, and one byte at a time: the same verdict. */
		for (int bytewise = 0; bytewise < 2; bytewise++) {
			struct upgrade_response *r = new_response(RFC_ACCEPT);
			size_t end = 0;
			int rc = bytewise ? feed_bytewise(r, (const uint8_t *)cases[i].head, strlen(cases[i].head), &end)
					  : feed_whole(r, cases[i].head, &end);
			if (rc != cases[i].rc)
				fail_msg("case %zu: got %d (%s), expected %d (%s)\n%s", i, rc, upgrade_strerror(rc),
					 cases[i].rc, upgrade_strerror(cases[i].rc), cases[i].head);
			free(r);
		}
	}
}

#define ACCEPT_LINE "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"

static void test_response_missing_headers(void **state)
{
	(void)state;
	static const struct bad_case cases[] = {
		{"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n" ACCEPT_LINE "\r\n",
		 UPGRADE_ERR_NO_UPGRADE},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n" ACCEPT_LINE "\r\n",
		 UPGRADE_ERR_NO_UPGRADE},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websockets\r\nConnection: Upgrade\r\n" ACCEPT_LINE
		 "\r\n",
		 UPGRADE_ERR_NO_UPGRADE},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" ACCEPT_LINE "\r\n",
		 UPGRADE_ERR_NO_CONNECTION},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n" ACCEPT_LINE
		 "\r\n",
		 UPGRADE_ERR_NO_CONNECTION},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgraded\r\n" ACCEPT_LINE
		 "\r\n",
		 UPGRADE_ERR_NO_CONNECTION},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		 UPGRADE_ERR_NO_ACCEPT},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
		 UPGRADE_ERR_BAD_ACCEPT},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo\r\n\r\n",
		 UPGRADE_ERR_BAD_ACCEPT},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Accept: S3PPLMBITXAQ9KYGZZHZRBK+XOO=\r\n\r\n",
		 UPGRADE_ERR_BAD_ACCEPT},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ACCEPT_LINE
		 "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
		 UPGRADE_ERR_EXTENSION},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "sec-websocket-protocol: chat\r\n" ACCEPT_LINE "\r\n",
		 UPGRADE_ERR_EXTENSION},
	};
	check_bad_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_response_malformed(void **state)
{
	(void)state;
	static const struct bad_case cases[] = {
		{"HTTP/1.1 1O1 Switching Protocols\r\n\r\n", UPGRADE_ERR_MALFORMED},
		{"HTTP/1.1101 Switching Protocols\r\n\r\n", UPGRADE_ERR_MALFORMED},
		{"HTTP/1.1 10 Switching\r\n\r\n", UPGRADE_ERR_MALFORMED},
		{"HTTP/1.1 1010 x\r\n\r\n", UPGRADE_ERR_MALFORMED},
		{"HTTP/2 101 x\r\n\r\n", UPGRADE_ERR_MALFORMED},
		{"ICY 200 OK\r\n\r\n", UPGRADE_ERR_MALFORMED},
		{"SSH-2.0-OpenSSH_9.2\r\n\r\n", UPGRADE_ERR_MALFORMED},
		{"\r\n\r\n", UPGRADE_ERR_MALFORMED},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade websocket\r\n\r\n", UPGRADE_ERR_MALFORMED},
		{"HTTP/1.1 400 Bad Request\r\nContent-Length: ten\r\n\r\n", UPGRADE_ERR_MALFORMED},
		{"HTTP/1.1 400 Bad Request\r\nContent-Length: -5\r\n\r\n", UPGRADE_ERR_MALFORMED},
	};
	check_bad_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* ---- response: size limits ----------------------------------------- */

/* A head that never ends, fed in pieces: refused once 16 KiB are held,
 * without writing past the buffer (valgrind and the canary check). */
static void test_response_head_too_large(void **state)
{
	(void)state;
	char piece[1000];
	memset(piece, 'a', sizeof(piece));
	memcpy(piece, "X-Pad: ", 7);
	memcpy(piece + sizeof(piece) - 2, "\r\n", 2);

	struct {
		struct upgrade_response r;
		uint8_t canary[64];
	} *box = malloc(sizeof(*box));
	assert_non_null(box);
	memset(box->canary, 0xee, sizeof(box->canary));
	upgrade_response_init(&box->r, RFC_ACCEPT);

	const char *status = "HTTP/1.1 101 Switching Protocols\r\n";
	size_t consumed = 0;
	assert_int_equal(upgrade_response_feed(&box->r, (const uint8_t *)status, strlen(status), &consumed),
			 UPGRADE_NEED_MORE);
	size_t total = strlen(status);
	int rc = UPGRADE_NEED_MORE;
	for (int i = 0; i < 40 && rc == UPGRADE_NEED_MORE; i++) {
		rc = upgrade_response_feed(&box->r, (const uint8_t *)piece, sizeof(piece), &consumed);
		assert_true(consumed <= sizeof(piece));
		total += sizeof(piece);
	}
	assert_int_equal(rc, UPGRADE_ERR_HEAD_TOO_LARGE);
	assert_true(total > UPGRADE_MAX_HEAD - sizeof(piece));
	assert_true(total <= UPGRADE_MAX_HEAD + sizeof(piece));
	assert_true(box->r.head_len <= UPGRADE_MAX_HEAD);
	/* It stays refused. */
	assert_int_equal(upgrade_response_feed(&box->r, (const uint8_t *)piece, sizeof(piece), &consumed),
			 UPGRADE_ERR_HEAD_TOO_LARGE);
	for (size_t i = 0; i < sizeof(box->canary); i++)
		assert_int_equal(box->canary[i], 0xee);

	/* The same in one buffer of 40 KB. */
	size_t biglen = 40000;
	char *big = malloc(biglen);
	assert_non_null(big);
	memcpy(big, status, strlen(status));
	for (size_t i = strlen(status); i < biglen; i++)
		big[i] = (i % 80 == 79) ? '\n' : 'b';
	upgrade_response_init(&box->r, RFC_ACCEPT);
	assert_int_equal(upgrade_response_feed(&box->r, (const uint8_t *)big, biglen, &consumed),
			 UPGRADE_ERR_HEAD_TOO_LARGE);
	for (size_t i = 0; i < sizeof(box->canary); i++)
		assert_int_equal(box->canary[i], 0xee);
	free(big);
	free(box);
}

/* Builds a valid 101 head of exactly `size` bytes, padded with a header. */
static char *head_of_size(size_t size)
{
	const char *start = "HTTP/1.1 101 Switching Protocols\r\n"
			    "Upgrade: websocket\r\n"
			    "Connection: Upgrade\r\n" ACCEPT_LINE "X-Pad: ";
	const char *tail = "\r\n\r\n";
	size_t fixed = strlen(start) + strlen(tail);
	assert_true(size > fixed);
	char *h = malloc(size + 1);
	assert_non_null(h);
	memcpy(h, start, strlen(start));
	memset(h + strlen(start), 'p', size - fixed);
	memcpy(h + size - strlen(tail), tail, strlen(tail));
	h[size] = '\0';
	return h;
}

/* upgrade.h: "A head larger than this is refused": a head of exactly
 * UPGRADE_MAX_HEAD bytes is not larger, one byte more is. */
static void test_response_head_limit_boundary(void **state)
{
	(void)state;
	struct upgrade_response *r = new_response(RFC_ACCEPT);
	size_t end = 0;
	char *h = head_of_size(UPGRADE_MAX_HEAD - 1);
	assert_int_equal(feed_whole(r, h, &end), UPGRADE_SWITCHED);
	assert_int_equal(end, UPGRADE_MAX_HEAD - 1);
	free(h);

	h = head_of_size(UPGRADE_MAX_HEAD + 1);
	upgrade_response_init(r, RFC_ACCEPT);
	assert_int_equal(feed_whole(r, h, &end), UPGRADE_ERR_HEAD_TOO_LARGE);
	free(h);

	h = head_of_size(UPGRADE_MAX_HEAD);
	upgrade_response_init(r, RFC_ACCEPT);
	int rc = feed_whole(r, h, &end);
	free(h);
	free(r);
	if (rc != UPGRADE_SWITCHED)
		fail_msg("a head of exactly UPGRADE_MAX_HEAD (%d) bytes gave %d (%s); upgrade.h says only a "
			 "larger head is refused",
			 UPGRADE_MAX_HEAD, rc, upgrade_strerror(rc));
}

/* ---- response: refusals -------------------------------------------- */

#define JSON_401 "{\"Otoroshi-Error\":\"Bad API key\"}"
#define REFUSAL_401 \
	"HTTP/1.1 401 Unauthorized\r\n" \
	"Content-Type: application/json\r\n" \
	"Content-Length: 32\r\n" \
	"\r\n" JSON_401

static void test_response_refused_content_length_splits(void **state)
{
	(void)state;
	assert_int_equal(strlen(JSON_401), 32);
	const char *text = REFUSAL_401;
	size_t len = strlen(text);
	/* Bytes after the body (say a second, pipelined answer) are not part
	 * of this one. */
	char data[512];
	snprintf(data, sizeof(data), "%sHTTP/1.1 200 OK\r\n", text);
	size_t dlen = strlen(data);
	struct upgrade_response *r = malloc(sizeof(*r));
	assert_non_null(r);

	for (size_t cut = 0; cut <= len; cut++) {
		/* Only the bytes up to the cut: incomplete unless the cut is the end. */
		upgrade_response_init(r, RFC_ACCEPT);
		size_t end = 0;
		int rc = feed_cuts(r, (const uint8_t *)text, cut, NULL, 0, &end);
		assert_int_equal(rc, cut == len ? UPGRADE_REFUSED : UPGRADE_NEED_MORE);

		upgrade_response_init(r, RFC_ACCEPT);
		rc = feed_cuts(r, (const uint8_t *)data, dlen, &cut, 1, &end);
		if (rc != UPGRADE_REFUSED || end != len)
			fail_msg("cut at %zu: rc %d end %zu", cut, rc, end);
		assert_int_equal(r->status, 401);
		assert_string_equal(r->reason, "Unauthorized");
		assert_int_equal(r->body_len, 32);
		assert_string_equal(r->body, JSON_401);
	}
	upgrade_response_init(r, RFC_ACCEPT);
	size_t end = 0;
	assert_int_equal(feed_bytewise(r, (const uint8_t *)data, dlen, &end), UPGRADE_REFUSED);
	assert_int_equal(end, len);
	assert_string_equal(r->body, JSON_401);

	/* After the refusal, further bytes are not taken. */
	size_t consumed = 7;
	assert_int_equal(upgrade_response_feed(r, (const uint8_t *)"more", 4, &consumed), UPGRADE_REFUSED);
	assert_int_equal(consumed, 0);
	free(r);
}

static void test_response_refused_chunked(void **state)
{
	(void)state;
	const char *text = "HTTP/1.1 400 Bad Request\r\n"
			   "transfer-encoding: chunked\r\n"
			   "\r\n"
			   "7\r\n{\"a\":1}\r\n"
			   "18\r\n, \"error\":\"no apikey\" \r\n\r\n"
			   "0\r\n"
			   "\r\n";
	const char *body = "{\"a\":1}, \"error\":\"no apikey\" \r\n";
	size_t len = strlen(text);
	size_t last_chunk_end = strstr(text, "0\r\n") - text + 3;
	struct upgrade_response *r = malloc(sizeof(*r));
	assert_non_null(r);
	for (size_t cut = 0; cut <= len; cut++) {
		upgrade_response_init(r, RFC_ACCEPT);
		size_t end = 0;
		int rc = feed_cuts(r, (const uint8_t *)text, cut, NULL, 0, &end);
		if (rc != (cut >= last_chunk_end ? UPGRADE_REFUSED : UPGRADE_NEED_MORE))
			fail_msg("prefix of %zu bytes: rc %d", cut, rc);

		upgrade_response_init(r, RFC_ACCEPT);
		rc = feed_cuts(r, (const uint8_t *)text, len, &cut, 1, &end);
		if (rc != UPGRADE_REFUSED)
			fail_msg("cut at %zu: rc %d", cut, rc);
		assert_int_equal(r->status, 400);
		assert_string_equal(r->body, body);
		assert_int_equal(r->body_len, strlen(body));
	}
	upgrade_response_init(r, RFC_ACCEPT);
	size_t end = 0;
	assert_int_equal(feed_bytewise(r, (const uint8_t *)text, len, &end), UPGRADE_REFUSED);
	assert_string_equal(r->body, body);

	char out[128];
	upgrade_refusal_text(r, out, sizeof(out));
	assert_string_equal(out, "no apikey");
	free(r);
}

static void test_response_refused_until_eof(void **state)
{
	(void)state;
	const char *text = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n\r\napikey tags do not match\n";
	size_t len = strlen(text);
	struct upgrade_response *r = malloc(sizeof(*r));
	assert_non_null(r);
	for (size_t cut = 0; cut <= len; cut++) {
		upgrade_response_init(r, RFC_ACCEPT);
		size_t end = 0;
		assert_int_equal(feed_cuts(r, (const uint8_t *)text, len, &cut, 1, &end), UPGRADE_NEED_MORE);
		assert_int_equal(upgrade_response_eof(r), UPGRADE_REFUSED);
		assert_int_equal(r->status, 403);
		assert_string_equal(r->body, "apikey tags do not match\n");
	}
	/* The head alone, then the end: a refusal with an empty body. */
	upgrade_response_init(r, RFC_ACCEPT);
	size_t end = 0;
	assert_int_equal(feed_whole(r, "HTTP/1.1 404 Not Found\r\n\r\n", &end), UPGRADE_NEED_MORE);
	assert_int_equal(upgrade_response_eof(r), UPGRADE_REFUSED);
	assert_int_equal(r->status, 404);
	assert_int_equal(r->body_len, 0);
	free(r);
}

static void test_response_truncated_head(void **state)
{
	(void)state;
	struct upgrade_response *r = new_response(RFC_ACCEPT);
	assert_int_equal(upgrade_response_eof(r), UPGRADE_ERR_TRUNCATED);
	const char *text = OK_101;
	for (size_t cut = 1; cut < strlen(text); cut++) {
		upgrade_response_init(r, RFC_ACCEPT);
		size_t end = 0;
		assert_int_equal(feed_cuts(r, (const uint8_t *)text, cut, NULL, 0, &end), UPGRADE_NEED_MORE);
		assert_int_equal(upgrade_response_eof(r), UPGRADE_ERR_TRUNCATED);
	}
	free(r);
}

static void test_response_no_body_statuses(void **state)
{
	(void)state;
	static const char *const heads[] = {
		"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		struct upgrade_response *r = new_response(RFC_ACCEPT);
		size_t end = 0;
		assert_int_equal(feed_whole(r, heads[i], &end), UPGRADE_REFUSED);
		assert_int_equal(end, strlen(heads[i]));
		assert_int_equal(r->body_len, 0);
		assert_string_equal(r->body, "");
		free(r);
	}
	struct upgrade_response *r = new_response(RFC_ACCEPT);
	size_t end = 0;
	assert_int_equal(feed_whole(r,
				    "HTTP/1.1 303 See Other\r\n"
				    "Location: https://privateapps.example.com/login?redirect=x\r\n"
				    "Content-Length: 0\r\n\r\n",
				    &end),
			 UPGRADE_REFUSED);
	assert_int_equal(r->status, 303);
	assert_string_equal(r->reason, "See Other");
	assert_string_equal(r->location, "https://privateapps.example.com/login?redirect=x");
	free(r);
}

static void check_body_prefix(const struct upgrade_response *r, const char *fill_of)
{
	assert_int_equal(r->body_len, UPGRADE_MAX_BODY);
	assert_int_equal(strlen(r->body), UPGRADE_MAX_BODY);
	for (size_t i = 0; i < UPGRADE_MAX_BODY; i++)
		assert_int_equal(r->body[i], fill_of[i % strlen(fill_of)]);
}

static void test_response_long_body_truncated(void **state)
{
	(void)state;
	const char *fill = "0123456789abcdefghijklmnopqrstuvwxyz";
	size_t blen = UPGRADE_MAX_BODY * 3 + 17;
	char *body = malloc(blen + 1);
	assert_non_null(body);
	for (size_t i = 0; i < blen; i++)
		body[i] = fill[i % strlen(fill)];
	body[blen] = '\0';

	/* Content-Length, one buffer and 1000-byte pieces. */
	size_t tlen = blen + 128;
	char *text = malloc(tlen);
	assert_non_null(text);
	int n = snprintf(text, tlen, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: %zu\r\n\r\n%s", blen, body);
	struct upgrade_response *r = new_response(RFC_ACCEPT);
	size_t end = 0;
	assert_int_equal(feed_cuts(r, (const uint8_t *)text, (size_t)n, NULL, 0, &end), UPGRADE_REFUSED);
	check_body_prefix(r, fill);
	size_t cuts[64], nc = 0;
	for (size_t c = 1000; c < (size_t)n && nc < 64; c += 1000)
		cuts[nc++] = c;
	upgrade_response_init(r, RFC_ACCEPT);
	assert_int_equal(feed_cuts(r, (const uint8_t *)text, (size_t)n, cuts, nc, &end), UPGRADE_REFUSED);
	check_body_prefix(r, fill);

	/* Without a length: kept truncated at the end. */
	n = snprintf(text, tlen, "HTTP/1.1 502 Bad Gateway\r\n\r\n%s", body);
	upgrade_response_init(r, RFC_ACCEPT);
	int rc = feed_cuts(r, (const uint8_t *)text, (size_t)n, cuts, nc, &end);
	if (rc == UPGRADE_NEED_MORE)
		rc = upgrade_response_eof(r);
	assert_int_equal(rc, UPGRADE_REFUSED);
	check_body_prefix(r, fill);

	/* Chunked: one large chunk. */
	n = snprintf(text, tlen, "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
		     blen, body);
	upgrade_response_init(r, RFC_ACCEPT);
	rc = feed_cuts(r, (const uint8_t *)text, (size_t)n, cuts, nc, &end);
	if (rc == UPGRADE_NEED_MORE)
		rc = upgrade_response_eof(r);
	assert_int_equal(rc, UPGRADE_REFUSED);
	check_body_prefix(r, fill);

	free(r);
	free(text);
	free(body);
}

/* ---- refusal text and hints ---------------------------------------- */

/* The text a refusal with this body (Content-Length given) yields. */
static void refusal_text_of(const char *body, char *out, size_t outlen)
{
	char text[8192];
	snprintf(text, sizeof(text), "HTTP/1.1 400 Bad Request\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
	struct upgrade_response *r = new_response(RFC_ACCEPT);
	size_t end = 0;
	assert_int_equal(feed_whole(r, text, &end), UPGRADE_REFUSED);
	memset(out, 'Z', outlen);
	upgrade_refusal_text(r, out, outlen);
	free(r);
}

static void expect_text(const char *body, const char *expected)
{
	char out[512];
	refusal_text_of(body, out, sizeof(out));
	if (strcmp(out, expected) != 0)
		fail_msg("body %s\n gave '%s'\n expected '%s'", body, out, expected);
}

static void test_refusal_text_json(void **state)
{
	(void)state;
	expect_text("{\"Otoroshi-Error\":\"Bad API key\"}", "Bad API key");
	expect_text("{ \"Otoroshi-Error\" : \"invalid apikey tuple\" }", "invalid apikey tuple");
	expect_text("{\n  \"Otoroshi-Error\":\n  \"quota exceeded\"\n}", "quota exceeded");
	expect_text("{\"error\":\"no apikey\"}", "no apikey");
	expect_text("{\"message\":\"route not found\"}", "route not found");
	/* The order of preference does not follow the order in the body. */
	expect_text("{\"message\":\"m\",\"error\":\"e\",\"Otoroshi-Error\":\"o\"}", "o");
	expect_text("{\"message\":\"m\",\"error\":\"e\"}", "e");
	/* Escapes in the value. */
	expect_text("{\"Otoroshi-Error\":\"say \\\"no\\\" \\\\ twice\"}", "say \"no\" \\ twice");
}

/* The body is read as JSON: escapes decoded, keys of nested objects found,
 * a key given twice read at its first value; a body that is not whole JSON
 * (cut at UPGRADE_MAX_BODY) still gives a value that is. */
static void test_refusal_text_json_parsed(void **state)
{
	(void)state;
	expect_text("{\"Otoroshi-Error\":\"caf\\u00e9 \\u2192 \\ud83d\\ude00\"}", "caf\xc3\xa9 \xe2\x86\x92 \xf0\x9f\x98\x80");
	expect_text("{\"error\":{\"code\":401,\"message\":\"token expired\"}}", "token expired");
	expect_text("[{\"error_description\":\"in an array\"}]", "in an array");
	expect_text("{\"error\":\"first\",\"error\":\"second\"}", "first");
	expect_text("{\"error\":42,\"message\":\"not a number\"}", "not a number");
	expect_text("{\"Otoroshi-Error\":\"\"}", "");

	char body[UPGRADE_MAX_BODY + 200];
	int n = snprintf(body, sizeof(body), "{\"Otoroshi-Error\":\"kept\",\"padding\":\"");
	memset(body + n, 'p', sizeof(body) - (size_t)n - 3);
	memcpy(body + sizeof(body) - 3, "\"}", 3);
	expect_text(body, "kept");
}

/* A key named "error" whose value comes after the word "error" used as a
 * value: the key's value is what the header promises. */
static void test_refusal_text_key_after_value(void **state)
{
	(void)state;
	expect_text("{\"status\":\"error\",\"error\":\"apikey revoked\"}", "apikey revoked");
}

static void test_refusal_text_plain(void **state)
{
	(void)state;
	expect_text("Not Found\nsecond line", "Not Found");
	expect_text("Service Unavailable\r\n", "Service Unavailable");
	expect_text("{\"other\":\"json\"}", "{\"other\":\"json\"}");

	char longline[600];
	memset(longline, 'x', sizeof(longline) - 1);
	longline[sizeof(longline) - 1] = '\0';
	char out[512];
	refusal_text_of(longline, out, sizeof(out));
	assert_int_equal(strlen(out), 200);
	refusal_text_of(longline, out, 50);
	assert_int_equal(strlen(out), 49);

	/* An empty body gives an empty text. */
	struct upgrade_response *r = new_response(RFC_ACCEPT);
	size_t end = 0;
	assert_int_equal(feed_whole(r, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", &end),
			 UPGRADE_REFUSED);
	memset(out, 'Z', sizeof(out));
	upgrade_refusal_text(r, out, sizeof(out));
	assert_string_equal(out, "");
	/* outlen 0 writes nothing. */
	out[0] = 'Z';
	upgrade_refusal_text(r, out, 0);
	assert_int_equal(out[0], 'Z');
	free(r);
}

static void assert_printable(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			fail_msg("control byte 0x%02x in '%s'", *p, s);
}

static void test_refusal_text_neutralised(void **state)
{
	(void)state;
	static const char *const bodies[] = {
		"{\"Otoroshi-Error\":\"bad\\nnew line\\r\\t and \\u001b[31m red\"}",
		"{\"Otoroshi-Error\":\"raw \x1b[2J\x1b]0;title\x07 bytes \x7f\x01\"}",
		"\x1b[31mplain red\x1b[0m\x08\x08\x7f",
		"{\"error\":\"line\\n[INFO  otoroshictl] forged\"}",
	};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		char out[512];
		refusal_text_of(bodies[i], out, sizeof(out));
		assert_true(strlen(out) > 0);
		assert_printable(out);
		assert_null(strchr(out, '\x1b'));
	}
	char out[512];
	refusal_text_of("{\"error\":\"line\\n[INFO  otoroshictl] forged\"}", out, sizeof(out));
	assert_null(strchr(out, '\n'));
	assert_non_null(strstr(out, "forged"));
}

static void test_refusal_hints(void **state)
{
	(void)state;
	const enum access_type all[] = {ACCESS_APIKEY, ACCESS_BEARER, ACCESS_SESSION, ACCESS_PUBLIC};
	const char *flag_401[] = {"--apikey-client-id", "--bearer-token", "--session-token", "--access-type"};
	for (size_t i = 0; i < 4; i++) {
		for (int s = 0; s < 2; s++) {
			const char *h = upgrade_refusal_hint(s == 0 ? 400 : 401, "", all[i]);
			assert_non_null(h);
			if (strstr(h, flag_401[i]) == NULL)
				fail_msg("hint for %d, access %zu lacks %s: %s", s == 0 ? 400 : 401, i, flag_401[i], h);
		}
		const char *h = upgrade_refusal_hint(303, "", all[i]);
		assert_non_null(h);
		assert_non_null(strstr(h, all[i] == ACCESS_SESSION ? "--session-token" : "--access-type session"));
		h = upgrade_refusal_hint(404, "no route found !", all[i]);
		assert_non_null(h);
		assert_non_null(strstr(h, "--host"));
		assert_non_null(strstr(h, "without its port"));
		h = upgrade_refusal_hint(404, "Resource not found", all[i]);
		assert_non_null(h);
		assert_non_null(strstr(h, "TCP tunnel plugin"));
		assert_non_null(strstr(h, "Sec-WebSocket-Version"));
		h = upgrade_refusal_hint(403, "forbidden", all[i]);
		assert_non_null(h);
		assert_non_null(strstr(h, "route"));
		h = upgrade_refusal_hint(429, "You performed too much requests", all[i]);
		assert_non_null(h);
		assert_non_null(strstr(h, "quota"));
		assert_null(upgrade_refusal_hint(101, "", all[i]));
		assert_null(upgrade_refusal_hint(200, "", all[i]));
		assert_null(upgrade_refusal_hint(418, "", all[i]));
	}
	assert_non_null(strstr(upgrade_refusal_hint(401, "", ACCESS_APIKEY), "--apikey-client-secret"));
}

/* Otoroshi's own messages (PROTOCOL.md section 3) get hints of their own. */
static void test_refusal_hints_follow_otoroshi_messages(void **state)
{
	(void)state;
	static const struct {
		int status;
		const char *message;
		const char *expect;
	} cases[] = {
		{400, "invalid apikey tuple", "no API key has this client id: check --apikey-client-id"},
		{400, "Invalid ApiKey Tuple", "no API key has this client id"},
		{401, "bad apikey", "--apikey-client-secret"},
		{401, "bad apikey", "disabled"},
		{401, "invalid apikey", "may not use this route"},
		{400, "no apikey", "Authorization: Basic"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *h = upgrade_refusal_hint(cases[i].status, cases[i].message, ACCESS_APIKEY);
		assert_non_null(h);
		if (strstr(h, cases[i].expect) == NULL)
			fail_msg("%d %s: hint '%s' lacks '%s'", cases[i].status, cases[i].message, h, cases[i].expect);
	}
	/* Without an API key sent, "no apikey" says which access type to use. */
	assert_non_null(strstr(upgrade_refusal_hint(400, "no apikey", ACCESS_PUBLIC), "--access-type apikey"));
	/* A message of the wrong status falls back to the status's hint. */
	assert_null(strstr(upgrade_refusal_hint(403, "bad apikey", ACCESS_APIKEY), "secret"));
}

/* The text of a whole response (head and body as given). */
static void refusal_text_of_response(const char *text, char *out, size_t outlen)
{
	struct upgrade_response *r = new_response(RFC_ACCEPT);
	size_t end = 0;
	assert_int_equal(feed_whole(r, text, &end), UPGRADE_REFUSED);
	upgrade_refusal_text(r, out, outlen);
	free(r);
}

static void expect_response_text(const char *text, const char *expected)
{
	char out[512];
	refusal_text_of_response(text, out, sizeof(out));
	if (strcmp(out, expected) != 0)
		fail_msg("response %s\n gave '%s'\n expected '%s'", text, out, expected);
}

#define OTO_PAGE "<!DOCTYPE html>\n<html><head><title>Otoroshi Error</title></head><body><p>bad apikey</p></body></html>\n"

static void test_refusal_text_prefers_the_header_and_hides_html(void **state)
{
	(void)state;
	char head[1024];
	/* Otoroshi's refusal without an Accept header: an HTML page, the message
	 * in the header. */
	snprintf(head, sizeof(head),
		 "HTTP/1.1 401 Unauthorized\r\nOtoroshi-Error: true\r\nOtoroshi-Error-Msg: bad apikey\r\n"
		 "Content-Type: text/html; charset=utf-8\r\nContent-Length: %zu\r\n\r\n%s", strlen(OTO_PAGE), OTO_PAGE);
	expect_response_text(head, "bad apikey");
	/* The header wins over a JSON body too. */
	expect_response_text("HTTP/1.1 400 Bad Request\r\nOtoroshi-Error-Msg: invalid apikey tuple\r\n"
			     "Content-Length: 22\r\n\r\n{\"Otoroshi-Error\":\"x\"}",
			     "invalid apikey tuple");
	/* A template page without the header: its title, never its markup. */
	snprintf(head, sizeof(head), "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/html\r\nContent-Length: %zu\r\n\r\n%s",
		 strlen(OTO_PAGE), OTO_PAGE);
	expect_response_text(head, "an HTML error page (\"Otoroshi Error\")");
	/* No title, and no Content-Type: recognised by its first tag. */
	expect_response_text("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 40\r\n\r\n  <html><body><h1>502</h1></body></html>",
			     "an HTML error page");
	/* Otoroshi's modern JSON: the description, not the cause id. */
	expect_response_text("HTTP/1.1 400 Bad Request\r\nOtoroshi-Error-Cause: errors.no.api.key\r\n"
			     "Content-Length: 61\r\n\r\n{\"error\":\"errors.no.api.key\",\"error_description\":\"no apikey\"}",
			     "no apikey");
	/* The header is a peer's text: made printable as the body is. */
	char out[512];
	refusal_text_of_response("HTTP/1.1 401 Unauthorized\r\nOtoroshi-Error-Msg: bad \x1b[31mapikey\x7f\r\n"
				 "Content-Length: 0\r\n\r\n", out, sizeof(out));
	assert_printable(out);
	assert_non_null(strstr(out, "apikey"));
}

static void test_refusal_response_keeps_the_error_headers(void **state)
{
	(void)state;
	struct upgrade_response *r = new_response(RFC_ACCEPT);
	size_t end = 0;
	assert_int_equal(feed_whole(r, "HTTP/1.1 429 Too Many Requests\r\notoroshi-error-msg:  You performed too much requests \r\n"
				    "Otoroshi-Error-Cause: errors.too.much.requests\r\nContent-Type: application/json\r\n"
				    "Content-Length: 0\r\n\r\n", &end),
			 UPGRADE_REFUSED);
	assert_string_equal(r->error_msg, "You performed too much requests");
	assert_string_equal(r->error_cause, "errors.too.much.requests");
	assert_string_equal(r->content_type, "application/json");
	free(r);
}

static void test_strerror(void **state)
{
	(void)state;
	for (int code = UPGRADE_ERR_TRUNCATED; code <= UPGRADE_REFUSED; code++) {
		const char *s = upgrade_strerror(code);
		assert_non_null(s);
		assert_true(strlen(s) > 0);
		assert_string_not_equal(s, "unknown error");
	}
	assert_non_null(upgrade_strerror(-100));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_rfc_example),
		cmocka_unit_test(test_make_key),
		cmocka_unit_test(test_request_apikey),
		cmocka_unit_test(test_request_apikey_lengths),
		cmocka_unit_test(test_request_bearer),
		cmocka_unit_test(test_request_session),
		cmocka_unit_test(test_request_public),
		cmocka_unit_test(test_request_host_unchanged),
		cmocka_unit_test(test_request_truncation),
		cmocka_unit_test(test_request_extra_headers),
		cmocka_unit_test(test_response_whole),
		cmocka_unit_test(test_response_every_split),
		cmocka_unit_test(test_response_lf_only),
		cmocka_unit_test(test_response_case_insensitive),
		cmocka_unit_test(test_response_http10_and_tls),
		cmocka_unit_test(test_response_missing_headers),
		cmocka_unit_test(test_response_malformed),
		cmocka_unit_test(test_response_head_too_large),
		cmocka_unit_test(test_response_head_limit_boundary),
		cmocka_unit_test(test_response_refused_content_length_splits),
		cmocka_unit_test(test_response_refused_chunked),
		cmocka_unit_test(test_response_refused_until_eof),
		cmocka_unit_test(test_response_truncated_head),
		cmocka_unit_test(test_response_no_body_statuses),
		cmocka_unit_test(test_response_long_body_truncated),
		cmocka_unit_test(test_refusal_text_json),
		cmocka_unit_test(test_refusal_text_key_after_value),
		cmocka_unit_test(test_refusal_text_json_parsed),
		cmocka_unit_test(test_refusal_text_plain),
		cmocka_unit_test(test_refusal_text_neutralised),
		cmocka_unit_test(test_refusal_hints),
		cmocka_unit_test(test_refusal_hints_follow_otoroshi_messages),
		cmocka_unit_test(test_refusal_text_prefers_the_header_and_hides_html),
		cmocka_unit_test(test_refusal_response_keeps_the_error_headers),
		cmocka_unit_test(test_strerror),
	};
	return cmocka_run_group_tests_name("upgrade", tests, NULL, NULL);
}

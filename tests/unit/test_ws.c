/* Unit tests for ws.h: the client WebSocket layer with no network. A fake
 * stream records the bytes the layer writes (or refuses them with a chosen
 * error), the test decodes them as a server would, and server frames are
 * built here and fed in chosen chunk sizes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "ws.h"

/* ---- a growing byte array --------------------------------------------- */

struct bytes {
	uint8_t *p;
	size_t len, cap;
};

static void bytes_add(struct bytes *b, const uint8_t *data, size_t len)
{
	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + len)
			cap *= 2;
		b->p = realloc(b->p, cap);
		assert_non_null(b->p);
		b->cap = cap;
	}
	if (len > 0)
		memcpy(b->p + b->len, data, len);
	b->len += len;
}

static void bytes_free(struct bytes *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* ---- the fake peer ------------------------------------------------------ */

/* The top of the stream stack as ws sees it: writes are taken whole, or
 * refused with fail_rc once fail_after writes have been taken. */
struct peer {
	struct stream s;
	struct bytes sent;     /* what ws wrote, as it would go on the wire */
	struct bytes received; /* what ws delivered to on_data */
	int fail_rc;           /* 0, or the error writes fail with */
	size_t fail_after;     /* writes taken before they start failing */
	size_t writes;
	size_t secret_writes;
	int close_calls;
	uint16_t close_code;
	uint8_t close_reason[128];
	size_t close_reason_len;
};

#define PEER(st) ((struct peer *)((char *)(st) - offsetof(struct peer, s)))

static void peer_on_data(void *user, const uint8_t *data, size_t len)
{
	struct peer *p = user;
	assert_true(len > 0);
	bytes_add(&p->received, data, len);
}

static void peer_on_close(void *user, uint16_t code, const uint8_t *reason, size_t reason_len)
{
	struct peer *p = user;
	p->close_calls++;
	p->close_code = code;
	assert_true(reason_len <= sizeof(p->close_reason));
	if (reason_len > 0)
		memcpy(p->close_reason, reason, reason_len);
	p->close_reason_len = reason_len;
}

static int peer_refuses(struct peer *p)
{
	if (p->fail_rc != 0 && p->writes >= p->fail_after)
		return p->fail_rc;
	p->writes++;
	return 0;
}

static int peer_write(struct stream *st, const uint8_t *data, size_t len, bool secret)
{
	struct peer *p = PEER(st);
	int rc = peer_refuses(p);
	if (rc != 0)
		return rc;
	p->secret_writes += secret;
	bytes_add(&p->sent, data, len);
	return 0;
}

static int peer_write_masked(struct stream *st, const uint8_t *data, size_t len, const uint8_t key[4])
{
	struct peer *p = PEER(st);
	int rc = peer_refuses(p);
	if (rc != 0)
		return rc;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = data[i] ^ key[i % 4];
		bytes_add(&p->sent, &c, 1);
	}
	return 0;
}

/* ws uses nothing else of the stream: the other operations stay NULL, so
 * that a call to one of them crashes the test. */
static const struct stream_ops peer_ops = {
	.write = peer_write,
	.write_masked = peer_write_masked,
};

static const struct ws_callbacks peer_callbacks = {
	.on_data = peer_on_data,
	.on_close = peer_on_close,
};

/* A fresh ws writing into p. */
static struct ws *peer_ws(struct peer *p)
{
	p->s.ops = &peer_ops;
	return ws_create(&peer_callbacks, p, &p->s);
}

/* Everything a test allocates hangs off the fixture, so that teardown
 * frees it even when a failed assertion leaves the test early: valgrind
 * then reports leaks of the code under test only. */
struct fixture {
	struct peer peer;
	struct ws *ws;
	struct bytes in; /* server frames to feed */
	void *owned[8];  /* scratch buffers, freed by teardown */
	size_t nowned;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -1;
	f->ws = peer_ws(&f->peer);
	if (f->ws == NULL) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	ws_destroy(f->ws);
	bytes_free(&f->peer.sent);
	bytes_free(&f->peer.received);
	bytes_free(&f->in);
	for (size_t i = 0; i < f->nowned; i++)
		free(f->owned[i]);
	free(f);
	return 0;
}

/* A fresh ws and peer in the fixture; the input is emptied too. */
static void fixture_reset(struct fixture *f)
{
	ws_destroy(f->ws);
	bytes_free(&f->peer.sent);
	bytes_free(&f->peer.received);
	memset(&f->peer, 0, sizeof(f->peer));
	f->in.len = 0;
	f->ws = peer_ws(&f->peer);
	assert_non_null(f->ws);
}

/* A scratch buffer that lives until teardown. */
static void *fixture_alloc(struct fixture *f, size_t len)
{
	assert_true(f->nowned < sizeof(f->owned) / sizeof(f->owned[0]));
	void *p = calloc(1, len);
	assert_non_null(p);
	f->owned[f->nowned++] = p;
	return p;
}

static int group_setup(void **state)
{
	(void)state;
	return rng_init() == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	rng_finish();
	return 0;
}

/* ---- decoding what the client sent, as a server would ------------------ */

struct frame {
	bool fin;
	uint8_t rsv;
	uint8_t opcode;
	bool masked;
	int len_bits; /* 7, 16 or 64: the length form used */
	uint64_t len;
	uint8_t mask[4];
	uint8_t *payload; /* unmasked; malloc'd */
	uint8_t *wire;    /* the payload as sent (masked); malloc'd */
};

/* Decodes every frame in data[0..len); the frames must end exactly at len.
 * Returns the number of frames. */
static size_t decode_frames(const uint8_t *data, size_t len, struct frame *out, size_t max)
{
	size_t pos = 0, n = 0;
	while (pos < len) {
		assert_true(n < max);
		struct frame *f = &out[n];
		memset(f, 0, sizeof(*f));
		assert_true(len - pos >= 2);
		f->fin = data[pos] & 0x80;
		f->rsv = (data[pos] >> 4) & 7;
		f->opcode = data[pos] & 15;
		f->masked = data[pos + 1] & 0x80;
		uint64_t l = data[pos + 1] & 0x7f;
		pos += 2;
		f->len_bits = 7;
		if (l == 126) {
			assert_true(len - pos >= 2);
			l = (uint64_t)data[pos] << 8 | data[pos + 1];
			pos += 2;
			f->len_bits = 16;
		} else if (l == 127) {
			assert_true(len - pos >= 8);
			l = 0;
			for (int i = 0; i < 8; i++)
				l = l << 8 | data[pos + i];
			pos += 8;
			f->len_bits = 64;
		}
		f->len = l;
		if (f->masked) {
			assert_true(len - pos >= 4);
			memcpy(f->mask, data + pos, 4);
			pos += 4;
		}
		assert_true(len - pos >= l);
		f->payload = malloc(l + 1);
		f->wire = malloc(l + 1);
		assert_non_null(f->payload);
		assert_non_null(f->wire);
		for (uint64_t i = 0; i < l; i++) {
			f->wire[i] = data[pos + i];
			f->payload[i] = data[pos + i] ^ (f->masked ? f->mask[i % 4] : 0);
		}
		pos += l;
		n++;
	}
	return n;
}

static void free_frames(struct frame *frames, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(frames[i].payload);
		free(frames[i].wire);
	}
}

/* The checks RFC 6455 makes of every client frame: FIN on unfragmented
 * messages, no RSV bits, masked, and the shortest length form. */
static void check_client_frame(const struct frame *f, uint8_t opcode)
{
	assert_true(f->fin);
	assert_int_equal(f->rsv, 0);
	assert_int_equal(f->opcode, opcode);
	assert_true(f->masked);
	int bits = f->len <= 125 ? 7 : f->len <= 65535 ? 16 : 64;
	assert_int_equal(f->len_bits, bits);
}

/* Decodes exactly one sent Close frame and returns its code (0: none). */
static uint16_t sent_close_code(const struct peer *p, size_t from)
{
	struct frame fr[4];
	size_t n = decode_frames(p->sent.p + from, p->sent.len - from, fr, 4);
	assert_int_equal(n, 1);
	check_client_frame(&fr[0], 0x8);
	uint16_t code = 0;
	if (fr[0].len >= 2)
		code = (uint16_t)(fr[0].payload[0] << 8 | fr[0].payload[1]);
	else
		assert_int_equal(fr[0].len, 0);
	free_frames(fr, n);
	return code;
}

/* ---- building what the server sends ------------------------------------ */

static size_t put_frame(uint8_t *out, uint8_t first_byte, bool mask, const uint8_t *payload, uint64_t len,
			uint64_t announced)
{
	size_t pos = 0;
	out[pos++] = first_byte;
	uint8_t m = mask ? 0x80 : 0;
	if (announced <= 125) {
		out[pos++] = m | (uint8_t)announced;
	} else if (announced <= 65535) {
		out[pos++] = m | 126;
		out[pos++] = (uint8_t)(announced >> 8);
		out[pos++] = (uint8_t)announced;
	} else {
		out[pos++] = m | 127;
		for (int i = 7; i >= 0; i--)
			out[pos++] = (uint8_t)(announced >> (8 * i));
	}
	static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
	if (mask) {
		memcpy(out + pos, key, 4);
		pos += 4;
	}
	for (uint64_t i = 0; i < len; i++)
		out[pos++] = payload[i] ^ (mask ? key[i % 4] : 0);
	return pos;
}

/* Appends a server frame (unmasked) to b. */
static void add_frame(struct bytes *b, bool fin, uint8_t opcode, const void *payload, size_t len)
{
	uint8_t *tmp = malloc(len + 16);
	assert_non_null(tmp);
	size_t n = put_frame(tmp, (uint8_t)((fin ? 0x80 : 0) | opcode), false, payload, len, len);
	bytes_add(b, tmp, n);
	free(tmp);
}

static void add_close(struct bytes *b, uint16_t code, const char *reason)
{
	uint8_t payload[128];
	payload[0] = (uint8_t)(code >> 8);
	payload[1] = (uint8_t)code;
	size_t rl = strlen(reason);
	memcpy(payload + 2, reason, rl);
	add_frame(b, true, 0x8, payload, rl + 2);
}

static uint32_t rand_state;

static uint32_t next_rand(void)
{
	rand_state ^= rand_state << 13;
	rand_state ^= rand_state >> 17;
	rand_state ^= rand_state << 5;
	return rand_state;
}

/* Feeds data in chunks: `chunk` bytes each, or random sizes up to
 * -chunk when chunk is negative. Returns the first non-OK result. */
static int feed_chunks(struct ws *ws, const uint8_t *data, size_t len, long chunk)
{
	size_t pos = 0;
	while (pos < len) {
		size_t n = chunk > 0 ? (size_t)chunk : 1 + next_rand() % (size_t)(-chunk);
		if (n > len - pos)
			n = len - pos;
		int rc = ws_feed(ws, data + pos, n);
		if (rc != WS_OK)
			return rc;
		pos += n;
	}
	return WS_OK;
}

static void fill_pattern(uint8_t *p, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)((i * 31 + seed * 7 + (i >> 8)) & 0xff);
}

/* ---- sending ------------------------------------------------------------- */

static void test_data_frame_lengths(void **state)
{
	struct fixture *f = *state;
	static const size_t sizes[] = {1, 2, 3, 4, 5, 125, 126, 127, 1000, 65535, 65536};
	uint8_t *data = fixture_alloc(f, WS_MAX_FRAME);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t len = sizes[i];
		fill_pattern(data, len, (uint32_t)i);
		f->peer.sent.len = 0;
		assert_int_equal(ws_send_binary(f->ws, data, len), WS_OK);
		/* Data frames go straight to the stream: wslay queues nothing. */
		assert_int_equal(ws_queued_count(f->ws), 0);

		struct frame fr[2];
		assert_int_equal(decode_frames(f->peer.sent.p, f->peer.sent.len, fr, 2), 1);
		check_client_frame(&fr[0], 0x2);
		assert_int_equal(fr[0].len, len);
		assert_memory_equal(fr[0].payload, data, len);
		/* The payload is really masked: with 64 KiB of data, a mask of
		 * zeros is the only way the wire could equal the data. */
		if (len == 65536)
			assert_memory_not_equal(fr[0].wire, data, len);
		free_frames(fr, 1);
	}
	/* Nothing ws writes carries a credential. */
	assert_int_equal(f->peer.secret_writes, 0);
	assert_int_equal(ws_control_bytes(f->ws), 0);
}

/* Masks are fresh per frame (RFC 6455 section 5.3). */
static void test_masks_differ(void **state)
{
	struct fixture *f = *state;
	for (int i = 0; i < 8; i++)
		assert_int_equal(ws_send_binary(f->ws, (const uint8_t *)"same", 4), WS_OK);
	struct frame fr[8];
	assert_int_equal(decode_frames(f->peer.sent.p, f->peer.sent.len, fr, 8), 8);
	size_t distinct = 0;
	for (int i = 0; i < 8; i++) {
		check_client_frame(&fr[i], 0x2);
		assert_memory_equal(fr[i].payload, "same", 4);
		bool seen = false;
		for (int j = 0; j < i; j++)
			seen = seen || memcmp(fr[i].mask, fr[j].mask, 4) == 0;
		distinct += !seen;
	}
	free_frames(fr, 8);
	assert_true(distinct >= 7);
}

static void test_data_limits(void **state)
{
	struct fixture *f = *state;
	uint8_t *data = fixture_alloc(f, WS_MAX_FRAME + 1);
	/* Nothing to send: no frame (the reference client never sends an
	 * empty one). */
	assert_int_equal(ws_send_binary(f->ws, data, 0), WS_OK);
	/* Over the limit: refused, nothing written. */
	assert_true(ws_send_binary(f->ws, data, WS_MAX_FRAME + 1) < 0);
	assert_int_equal(ws_flush(f->ws), WS_OK);
	assert_int_equal(f->peer.sent.len, 0);
	assert_int_equal(f->peer.writes, 0);
}

/* Data frames and the control frames wslay queues (a Pong here) reach the
 * stream in the order they were sent or flushed, each whole: the stream
 * takes a frame or refuses it, so none is ever cut by another. */
static void test_frames_in_call_order(void **state)
{
	struct fixture *f = *state;
	uint8_t *data = fixture_alloc(f, 5000);
	fill_pattern(data, 5000, 3);
	assert_int_equal(ws_send_binary(f->ws, data, 5000), WS_OK);
	add_frame(&f->in, true, 0x9, "p", 1);
	assert_int_equal(ws_feed(f->ws, f->in.p, f->in.len), WS_OK);
	/* The Pong waits in wslay's queue until the flush. */
	assert_int_equal(ws_queued_count(f->ws), 1);
	assert_int_equal(ws_flush(f->ws), WS_OK);
	assert_int_equal(ws_queued_count(f->ws), 0);
	assert_int_equal(ws_send_binary(f->ws, data, 70), WS_OK);
	struct frame fr[4];
	assert_int_equal(decode_frames(f->peer.sent.p, f->peer.sent.len, fr, 4), 3);
	check_client_frame(&fr[0], 0x2);
	assert_memory_equal(fr[0].payload, data, 5000);
	check_client_frame(&fr[1], 0xA);
	assert_int_equal(fr[1].len, 1);
	assert_memory_equal(fr[1].payload, "p", 1);
	check_client_frame(&fr[2], 0x2);
	assert_memory_equal(fr[2].payload, data, 70);
	free_frames(fr, 3);
	/* The Pong, 2 + 4 + 1 bytes, is the only control frame written. */
	assert_int_equal(ws_control_bytes(f->ws), 7);
}

/* A stream that refuses a write: the refusal is ours (WS_ERR_INTERNAL),
 * never a protocol error of the gateway's, and never "would block"; an
 * allocation failure is WS_ERR_NOMEM, so that the tunnel ends at once
 * instead of waiting for a write that will never come. */
static void test_write_refused(void **state)
{
	struct fixture *f = *state;
	static const struct {
		int rc;
		int expected;
	} cases[] = {
		{-EPIPE, WS_ERR_INTERNAL},
		{-ENOTCONN, WS_ERR_INTERNAL},
		{-ENOMEM, WS_ERR_NOMEM},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (size_t after = 0; after < 2; after++) {
			/* A data frame: the header (after = 0) or the payload
			 * (after = 1) is refused. */
			fixture_reset(f);
			f->peer.fail_rc = cases[i].rc;
			f->peer.fail_after = after;
			int rc = ws_send_binary(f->ws, (const uint8_t *)"data", 4);
			if (rc != cases[i].expected)
				fail_msg("ws_send_binary through a stream failing with %d after %zu write(s): %d (%s), "
					 "expected %d (%s)",
					 cases[i].rc, after, rc, ws_strerror(rc), cases[i].expected,
					 ws_strerror(cases[i].expected));
		}
		/* A control frame: wslay's send callback fails, and ws_flush
		 * says why. */
		fixture_reset(f);
		add_frame(&f->in, true, 0x9, "ping", 4);
		assert_int_equal(ws_feed(f->ws, f->in.p, f->in.len), WS_OK);
		f->peer.fail_rc = cases[i].rc;
		int rc = ws_flush(f->ws);
		if (rc != cases[i].expected)
			fail_msg("ws_flush of a Pong through a stream failing with %d: %d (%s), expected %d (%s)",
				 cases[i].rc, rc, ws_strerror(rc), cases[i].expected, ws_strerror(cases[i].expected));
		assert_int_equal(f->peer.sent.len, 0);
	}
}

/* ---- receiving ----------------------------------------------------------- */

/* Binary frames of every length form, fed whole, in fixed pieces and in
 * random pieces: the payloads arrive in order, nothing else does. */
static void test_receive_binary_splits(void **state)
{
	struct fixture *f = *state;
	static const size_t sizes[] = {0, 1, 125, 126, 300, 65535, 65536, 70000, 3};
	struct bytes in;
	uint8_t *expected = fixture_alloc(f, 300000);
	uint8_t *payload = fixture_alloc(f, 70000);
	size_t elen = 0;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		fill_pattern(payload, sizes[i], (uint32_t)i);
		add_frame(&f->in, true, 0x2, payload, sizes[i]);
		memcpy(expected + elen, payload, sizes[i]);
		elen += sizes[i];
	}
	/* The input moves to the owned buffers: fixture_reset empties f->in. */
	in = f->in;
	f->in = (struct bytes){0};
	f->owned[f->nowned++] = in.p;

	static const long chunks[] = {0, 1, 2, 3, -7, -100, -5000, -70000};
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		fixture_reset(f);
		rand_state = 0x9e3779b9u + (uint32_t)c;
		long chunk = chunks[c] == 0 ? (long)in.len : chunks[c];
		assert_int_equal(feed_chunks(f->ws, in.p, in.len, chunk), WS_OK);
		assert_int_equal(f->peer.received.len, elen);
		assert_memory_equal(f->peer.received.p, expected, elen);
		assert_true(ws_want_read(f->ws));
		assert_false(ws_close_received(f->ws));
		assert_int_equal(f->peer.close_calls, 0);
		/* Receiving data sends nothing. */
		assert_int_equal(ws_flush(f->ws), WS_OK);
		assert_int_equal(f->peer.sent.len, 0);
	}
}

static void test_text_frames_ignored(void **state)
{
	struct fixture *f = *state;
	for (int bytewise = 0; bytewise < 2; bytewise++) {
		fixture_reset(f);
		add_frame(&f->in, true, 0x2, "one", 3);
		add_frame(&f->in, true, 0x1, "text is dropped", 15);
		add_frame(&f->in, true, 0x2, "two", 3);
		/* A fragmented text message, continuation included, is dropped too. */
		add_frame(&f->in, false, 0x1, "frag", 4);
		add_frame(&f->in, true, 0x0, "ment", 4);
		add_frame(&f->in, true, 0x2, "three", 5);
		/* A pong nobody asked for carries no data either. */
		add_frame(&f->in, true, 0xA, "pong", 4);
		add_frame(&f->in, true, 0x2, "four", 4);
		assert_int_equal(feed_chunks(f->ws, f->in.p, f->in.len, bytewise ? 1 : (long)f->in.len), WS_OK);
		assert_int_equal(f->peer.received.len, 15);
		assert_memory_equal(f->peer.received.p, "onetwothreefour", 15);
		assert_int_equal(ws_flush(f->ws), WS_OK);
		assert_int_equal(f->peer.sent.len, 0);
	}
}

static void test_fragmented_binary(void **state)
{
	struct fixture *f = *state;
	add_frame(&f->in, false, 0x2, "abc", 3);
	add_frame(&f->in, false, 0x0, "", 0);
	add_frame(&f->in, false, 0x0, "def", 3);
	add_frame(&f->in, true, 0x0, "ghi", 3);
	add_frame(&f->in, true, 0x2, "jkl", 3);
	assert_int_equal(feed_chunks(f->ws, f->in.p, f->in.len, 1), WS_OK);
	assert_int_equal(f->peer.received.len, 12);
	assert_memory_equal(f->peer.received.p, "abcdefghijkl", 12);
	assert_true(ws_want_read(f->ws));
}

/* A ping between the fragments of a binary message: the data is whole,
 * and the pong (masked, same payload) is what ws_flush sends. */
static void test_ping_in_fragmented_message(void **state)
{
	struct fixture *f = *state;
	for (int bytewise = 0; bytewise < 2; bytewise++) {
		fixture_reset(f);
		add_frame(&f->in, false, 0x2, "abc", 3);
		add_frame(&f->in, true, 0x9, "are you there?", 14);
		add_frame(&f->in, false, 0x0, "def", 3);
		add_frame(&f->in, true, 0x9, "", 0);
		add_frame(&f->in, true, 0x0, "ghi", 3);
		assert_int_equal(feed_chunks(f->ws, f->in.p, f->in.len, bytewise ? 1 : (long)f->in.len), WS_OK);
		assert_int_equal(f->peer.received.len, 9);
		assert_memory_equal(f->peer.received.p, "abcdefghi", 9);
		assert_int_equal(ws_flush(f->ws), WS_OK);
		struct frame fr[3];
		assert_int_equal(decode_frames(f->peer.sent.p, f->peer.sent.len, fr, 3), 2);
		check_client_frame(&fr[0], 0xA);
		assert_int_equal(fr[0].len, 14);
		assert_memory_equal(fr[0].payload, "are you there?", 14);
		check_client_frame(&fr[1], 0xA);
		assert_int_equal(fr[1].len, 0);
		free_frames(fr, 2);
		assert_true(ws_want_read(f->ws));
		assert_false(ws_close_sent(f->ws));
	}
}

static void check_close_from_gateway(struct fixture *f, uint16_t code, const char *reason, long chunk)
{
	add_frame(&f->in, true, 0x2, "last", 4);
	add_close(&f->in, code, reason);
	assert_int_equal(feed_chunks(f->ws, f->in.p, f->in.len, chunk), WS_OK);
	assert_int_equal(f->peer.received.len, 4);
	assert_memory_equal(f->peer.received.p, "last", 4);
	assert_int_equal(f->peer.close_calls, 1);
	assert_int_equal(f->peer.close_code, code);
	assert_int_equal(f->peer.close_reason_len, strlen(reason));
	assert_memory_equal(f->peer.close_reason, reason, strlen(reason));
	assert_true(ws_close_received(f->ws));
	assert_false(ws_want_read(f->ws));
	/* The reply is queued, and sent by the next flush. */
	assert_false(ws_close_sent(f->ws));
	assert_int_equal(ws_queued_count(f->ws), 1);
	assert_int_equal(ws_flush(f->ws), WS_OK);
	assert_true(ws_close_sent(f->ws));
	assert_int_equal(ws_queued_count(f->ws), 0);
	assert_int_equal(sent_close_code(&f->peer, 0), code);
	assert_int_equal(ws_close_code_sent(f->ws), code);
	/* Nothing may be queued after the Close. */
	assert_int_equal(ws_send_binary(f->ws, (const uint8_t *)"x", 1), WS_ERR_CLOSED);
}

static void test_close_1000(void **state)
{
	check_close_from_gateway(*state, 1000, "", 1);
}

static void test_close_1011_with_reason(void **state)
{
	check_close_from_gateway(*state, 1011, "target unreachable", 3);
}

static void test_close_whole_buffer(void **state)
{
	check_close_from_gateway(*state, 1000, "bye", 1 << 20);
}

static void test_close_without_code(void **state)
{
	struct fixture *f = *state;
	add_frame(&f->in, true, 0x8, "", 0);
	/* Frames after the Close are not read. */
	add_frame(&f->in, true, 0x2, "late", 4);
	assert_int_equal(ws_feed(f->ws, f->in.p, f->in.len), WS_OK);
	assert_int_equal(f->peer.close_calls, 1);
	assert_int_equal(f->peer.close_code, 0);
	assert_int_equal(f->peer.close_reason_len, 0);
	assert_int_equal(f->peer.received.len, 0);
	assert_true(ws_close_received(f->ws));
	assert_int_equal(ws_flush(f->ws), WS_OK);
	assert_true(ws_close_sent(f->ws));
}

/* ---- protocol errors ----------------------------------------------------- */

/* Wire errors that wslay's frame decoder catches (control frame over 125
 * bytes, fragmented control frame, 64-bit length with the top bit set)
 * make it queue a Close with no status code; it has no way to queue 1002
 * there. For those, either is accepted. */
#define CODE_1002_OR_NONE 0

/* Feeds `bad` after a good binary frame, whole and byte by byte, and
 * expects WS_ERR_PROTOCOL, no data from the bad frame, and a Close with
 * `code` as the only frame sent. */
static void check_protocol_error(struct fixture *f, const uint8_t *bad, size_t badlen, uint16_t code,
				 const char *what)
{
	for (int bytewise = 0; bytewise < 2; bytewise++) {
		fixture_reset(f);
		add_frame(&f->in, true, 0x2, "ok", 2);
		bytes_add(&f->in, bad, badlen);
		int rc = WS_OK;
		if (bytewise) {
			for (size_t i = 0; i < f->in.len && rc == WS_OK; i++)
				rc = ws_feed(f->ws, f->in.p + i, 1);
		} else {
			rc = ws_feed(f->ws, f->in.p, f->in.len);
		}
		if (rc != WS_ERR_PROTOCOL)
			fail_msg("%s (%s): ws_feed returned %d (%s), expected WS_ERR_PROTOCOL", what,
				 bytewise ? "byte by byte" : "whole", rc, ws_strerror(rc));
		assert_int_equal(f->peer.received.len, 2);
		assert_memory_equal(f->peer.received.p, "ok", 2);
		assert_int_equal(f->peer.close_calls, 0);
		assert_false(ws_want_read(f->ws));
		assert_int_equal(ws_flush(f->ws), WS_OK);
		assert_true(ws_close_sent(f->ws));
		uint16_t sent = sent_close_code(&f->peer, 0);
		if (code == CODE_1002_OR_NONE ? sent != 1002 && sent != 0 : sent != code)
			fail_msg("%s: the Close sent carries %u, expected %u", what, sent, code == 0 ? 1002 : code);
		if (sent != 0)
			assert_int_equal(ws_close_code_sent(f->ws), sent);
		assert_int_equal(ws_send_binary(f->ws, (const uint8_t *)"x", 1), WS_ERR_CLOSED);
	}
}

/* A text message that is not UTF-8: the detail says so, and where,
 * whether it is one frame or split over continuations. */
static void test_error_text_not_utf8(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *payload;
		size_t len;
		size_t cut; /* split into two frames there; 0: one frame */
		const char *detail;
	} cases[] = {
		{"ab\xc3\x28" "cd", 6, 0, "not UTF-8 (at its byte 4)"},
		{"\xed\xa0\x80 surrogate", 13, 0, "not UTF-8 (at its byte 3)"},
		{"abc\xe2\x82\xac\xff", 7, 4, "not UTF-8 (at its byte 7)"},
		{"ok \xe2\x82", 5, 0, "ends inside a UTF-8 character"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fixture_reset(f);
		if (cases[i].cut == 0) {
			add_frame(&f->in, true, 0x1, cases[i].payload, cases[i].len);
		} else {
			add_frame(&f->in, false, 0x1, cases[i].payload, cases[i].cut);
			add_frame(&f->in, true, 0x0, cases[i].payload + cases[i].cut, cases[i].len - cases[i].cut);
		}
		assert_int_equal(ws_feed(f->ws, f->in.p, f->in.len), WS_ERR_PROTOCOL);
		const char *d = ws_error_detail(f->ws);
		if (strstr(d, cases[i].detail) == NULL)
			fail_msg("case %zu: detail '%s' lacks '%s'", i, d, cases[i].detail);
	}
}

static void test_error_masked_server_frame(void **state)
{
	uint8_t buf[64];
	size_t n = put_frame(buf, 0x82, true, (const uint8_t *)"masked", 6, 6);
	check_protocol_error(*state, buf, n, 1002, "masked frame from the server");
}

static void test_error_reserved_opcode(void **state)
{
	static const uint8_t opcodes[] = {0x3, 0x7, 0xB, 0xF};
	for (size_t i = 0; i < sizeof(opcodes); i++) {
		uint8_t buf[64];
		size_t n = put_frame(buf, (uint8_t)(0x80 | opcodes[i]), false, (const uint8_t *)"x", 1, 1);
		check_protocol_error(*state, buf, n, 1002, "reserved opcode");
	}
}

static void test_error_rsv_bits(void **state)
{
	static const uint8_t bits[] = {0x40, 0x20, 0x10};
	for (size_t i = 0; i < sizeof(bits); i++) {
		uint8_t buf[64];
		size_t n = put_frame(buf, (uint8_t)(0x82 | bits[i]), false, (const uint8_t *)"x", 1, 1);
		check_protocol_error(*state, buf, n, 1002, "RSV bit set");
	}
}

static void test_error_unexpected_continuation(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[64];
	size_t n = put_frame(buf, 0x80, false, (const uint8_t *)"cont", 4, 4);
	check_protocol_error(f, buf, n, 1002, "continuation with no message open");

	/* A new data frame while a fragmented message is open. */
	fixture_reset(f);
	add_frame(&f->in, false, 0x2, "a", 1);
	add_frame(&f->in, true, 0x2, "b", 1);
	assert_int_equal(ws_feed(f->ws, f->in.p, f->in.len), WS_ERR_PROTOCOL);
	assert_int_equal(ws_flush(f->ws), WS_OK);
	assert_int_equal(sent_close_code(&f->peer, 0), 1002);
}

static void test_error_control_too_long(void **state)
{
	uint8_t payload[126];
	memset(payload, 'p', sizeof(payload));
	uint8_t buf[256];
	size_t n = put_frame(buf, 0x89, false, payload, 126, 126);
	check_protocol_error(*state, buf, n, CODE_1002_OR_NONE, "ping of 126 bytes");
	n = put_frame(buf, 0x88, false, payload, 126, 126);
	check_protocol_error(*state, buf, n, CODE_1002_OR_NONE, "close of 126 bytes");
}

static void test_error_fragmented_ping(void **state)
{
	uint8_t buf[64];
	size_t n = put_frame(buf, 0x09, false, (const uint8_t *)"frag", 4, 4);
	check_protocol_error(*state, buf, n, CODE_1002_OR_NONE, "ping without FIN");
}

/* A header announcing 2^62 bytes: refused as soon as the frame shows up
 * (too big to take: 1009), with no allocation of that size (valgrind
 * would report a fishy malloc, and the test would run out of memory). */
static void test_error_huge_length(void **state)
{
	/* wslay looks at a frame once its first payload byte is in, so one
	 * byte follows the header. */
	uint8_t buf[16];
	size_t n = put_frame(buf, 0x82, false, NULL, 0, (uint64_t)1 << 62);
	buf[n++] = 'x';
	check_protocol_error(*state, buf, n, 1009, "2^62-byte frame");
}

/* The top bit of a 64-bit length is reserved (RFC 6455 section 5.2). */
static void test_error_length_top_bit(void **state)
{
	uint8_t buf[16];
	size_t n = put_frame(buf, 0x82, false, NULL, 0, (uint64_t)1 << 63);
	check_protocol_error(*state, buf, n, CODE_1002_OR_NONE, "64-bit length with the top bit set");
}

/* ---- closing from this side ---------------------------------------------- */

/* Data, then a Close: the Close follows the data on the wire, and no data
 * frame may follow the Close, from the moment it is queued. */
static void test_close_after_data(void **state)
{
	struct fixture *f = *state;
	uint8_t data[2000];
	fill_pattern(data, sizeof(data), 5);
	assert_int_equal(ws_send_binary(f->ws, data, sizeof(data)), WS_OK);
	assert_int_equal(ws_queue_close(f->ws, 1000), WS_OK);
	assert_int_equal(ws_queued_count(f->ws), 1);
	assert_false(ws_close_sent(f->ws));
	assert_int_equal(ws_close_code_sent(f->ws), 1000);
	/* Sending after the Close is refused, queued or sent, and writes
	 * nothing. */
	size_t before = f->peer.sent.len;
	assert_int_equal(ws_send_binary(f->ws, data, 10), WS_ERR_CLOSED);
	assert_int_equal(f->peer.sent.len, before);
	assert_int_equal(ws_flush(f->ws), WS_OK);
	assert_int_equal(ws_queued_count(f->ws), 0);
	assert_true(ws_close_sent(f->ws));
	assert_false(ws_close_received(f->ws));
	assert_int_equal(ws_close_code_sent(f->ws), 1000);
	assert_int_equal(ws_send_binary(f->ws, data, 10), WS_ERR_CLOSED);

	struct frame fr[3];
	assert_int_equal(decode_frames(f->peer.sent.p, f->peer.sent.len, fr, 3), 2);
	check_client_frame(&fr[0], 0x2);
	assert_memory_equal(fr[0].payload, data, sizeof(data));
	check_client_frame(&fr[1], 0x8);
	assert_int_equal(fr[1].len, 2);
	assert_int_equal(fr[1].payload[0] << 8 | fr[1].payload[1], 1000);
	free_frames(fr, 2);
	/* A second Close is refused too. */
	assert_int_equal(ws_queue_close(f->ws, 1000), WS_ERR_CLOSED);

	/* Data still arrives after our Close, until the gateway's. */
	add_frame(&f->in, true, 0x2, "reply", 5);
	add_close(&f->in, 1000, "");
	assert_true(ws_want_read(f->ws));
	assert_int_equal(ws_feed(f->ws, f->in.p, f->in.len), WS_OK);
	assert_int_equal(f->peer.received.len, 5);
	assert_memory_equal(f->peer.received.p, "reply", 5);
	assert_int_equal(f->peer.close_calls, 1);
	assert_true(ws_close_received(f->ws));
	assert_false(ws_want_read(f->ws));
}

/* ws.h: ws_close_code_sent is "the status code of the Close this side
 * sent or queued, or 0". */
static void test_close_code_sent_contract(void **state)
{
	struct fixture *f = *state;
	uint16_t fresh = ws_close_code_sent(f->ws);
	assert_int_equal(ws_queue_close(f->ws, 1001), WS_OK);
	uint16_t queued = ws_close_code_sent(f->ws);
	assert_int_equal(ws_flush(f->ws), WS_OK);
	assert_int_equal(ws_close_code_sent(f->ws), 1001);
	if (fresh != 0 || queued != 1001)
		fail_msg("ws_close_code_sent: %u before any Close (expected 0), %u with a Close 1001 queued "
			 "(expected 1001)",
			 fresh, queued);
}

/* Destroying with Pongs queued, a message half received and a Close
 * queued frees everything (valgrind checks). */
static void test_destroy_with_queue(void **state)
{
	struct fixture *f = *state;
	uint8_t data[1000] = {0};
	for (int i = 0; i < 10; i++)
		assert_int_equal(ws_send_binary(f->ws, data, sizeof(data)), WS_OK);
	add_frame(&f->in, true, 0x9, "p1", 2);
	add_frame(&f->in, true, 0x9, "p2", 2);
	add_frame(&f->in, false, 0x2, "partial message", 15);
	add_frame(&f->in, true, 0x9, "ping", 4);
	bytes_add(&f->in, (const uint8_t *)"\x82\x7e\x01", 3); /* a frame cut short */
	assert_int_equal(ws_feed(f->ws, f->in.p, f->in.len), WS_OK);
	assert_int_equal(ws_queue_close(f->ws, 1000), WS_OK);
	ws_destroy(f->ws);
	f->ws = NULL;
	ws_destroy(NULL);
}

static void test_strings(void **state)
{
	(void)state;
	assert_non_null(strstr(ws_describe_code(1000), "normal"));
	assert_non_null(strstr(ws_describe_code(1002), "protocol"));
	assert_non_null(strstr(ws_describe_code(1011), "error"));
	assert_non_null(ws_describe_code(4000));
	for (int e = WS_ERR_INTERNAL; e <= WS_OK; e++) {
		assert_non_null(ws_strerror(e));
		assert_true(strlen(ws_strerror(e)) > 0);
	}
	assert_string_not_equal(ws_strerror(WS_ERR_PROTOCOL), ws_strerror(WS_ERR_CLOSED));
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_data_frame_lengths),
		T(test_masks_differ),
		T(test_data_limits),
		T(test_frames_in_call_order),
		T(test_write_refused),
		T(test_receive_binary_splits),
		T(test_text_frames_ignored),
		T(test_fragmented_binary),
		T(test_ping_in_fragmented_message),
		T(test_close_1000),
		T(test_close_1011_with_reason),
		T(test_close_whole_buffer),
		T(test_close_without_code),
		T(test_error_text_not_utf8),
		T(test_error_masked_server_frame),
		T(test_error_reserved_opcode),
		T(test_error_rsv_bits),
		T(test_error_unexpected_continuation),
		T(test_error_control_too_long),
		T(test_error_fragmented_ping),
		T(test_error_huge_length),
		T(test_error_length_top_bit),
		T(test_close_after_data),
		T(test_close_code_sent_contract),
		T(test_destroy_with_queue),
		T(test_strings),
	};
	return cmocka_run_group_tests_name("ws", tests, group_setup, group_teardown);
}

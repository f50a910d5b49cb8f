/* Fuzz target: the incoming-frame path of the WebSocket layer. The input
 * is what a gateway sends after the 101, cut in pieces whose sizes come
 * from the input; whatever it is, the layer must neither crash, nor leak,
 * nor hand out more payload bytes than it was given. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "rng.h"
#include "ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t delivered;
static size_t sent;

static void on_data(void *user, const uint8_t *d, size_t len)
{
	(void)user;
	(void)d;
	delivered += len;
}

static void on_close(void *user, uint16_t code, const uint8_t *reason, size_t len)
{
	(void)user;
	(void)code;
	(void)reason;
	(void)len;
}

/* The top of the stream stack: takes every write. */
static int out_write(struct stream *s, const uint8_t *d, size_t len, bool secret)
{
	(void)s;
	(void)d;
	(void)secret;
	sent += len;
	return 0;
}

static int out_write_masked(struct stream *s, const uint8_t *d, size_t len, const uint8_t key[4])
{
	(void)s;
	(void)d;
	(void)key;
	sent += len;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int seeded;
	if (!seeded) {
		if (rng_init() != 0)
			abort();
		seeded = 1;
	}
	if (size < 1)
		return 0;
	size_t piece = (size_t)data[0] + 1;
	data++;
	size--;
	static const struct ws_callbacks cb = {on_data, on_close};
	static const struct stream_ops ops = {.write = out_write, .write_masked = out_write_masked};
	struct stream out = {.ops = &ops};
	struct ws *ws = ws_create(&cb, NULL, &out);
	if (ws == NULL)
		return 0;
	delivered = 0;
	for (size_t off = 0; off < size && ws_want_read(ws); off += piece) {
		size_t n = size - off < piece ? size - off : piece;
		if (ws_feed(ws, data + off, n) != WS_OK)
			break;
		ws_flush(ws);
	}
	if (delivered > size)
		__builtin_trap();
	ws_send_binary(ws, data, size < WS_MAX_FRAME ? size : WS_MAX_FRAME);
	ws_flush(ws);
	ws_destroy(ws);
	return 0;
}

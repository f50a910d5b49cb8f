/* ws: client WebSocket over wslay's event API; see ws.h. */
#include "ws.h"

#include <stdlib.h>
#include <string.h>

#include <wslay/wslay.h>

#include "rng.h"

struct ws {
	wslay_event_context_ptr ctx;
	struct ws_callbacks cb;
	void *user;

	/* The bytes ws_feed is handing to wslay. */
	const uint8_t *in;
	size_t in_len;

	/* What the current incoming frame and message are. */
	uint8_t frame_opcode;
	uint8_t msg_opcode;
	bool closed_seen;
	bool send_blocked;
	uint16_t close_queued;
};

const char *ws_strerror(int err)
{
	switch (err) {
	case WS_OK: return "no error";
	case WS_ERR_NOMEM: return "out of memory";
	case WS_ERR_PROTOCOL: return "the gateway broke the WebSocket protocol";
	case WS_ERR_CLOSED: return "the WebSocket is closing";
	default: return "internal WebSocket error";
	}
}

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
	(void)flags;
	struct ws *ws = user;
	if (ws->in_len == 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	size_t n = len < ws->in_len ? len : ws->in_len;
	memcpy(buf, ws->in, n);
	ws->in += n;
	ws->in_len -= n;
	return (ssize_t)n;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user)
{
	(void)flags;
	struct ws *ws = user;
	size_t n = ws->cb.send(ws->user, data, len);
	if (n == 0) {
		ws->send_blocked = true;
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	return (ssize_t)n;
}

static int on_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
	(void)ctx;
	(void)user;
	return rng_bytes(buf, len) == 0 ? 0 : -1;
}

static void on_frame_start(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_start_arg *arg,
			   void *user)
{
	(void)ctx;
	struct ws *ws = user;
	ws->frame_opcode = arg->opcode;
	if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
		ws->msg_opcode = arg->opcode;
}

static void on_frame_chunk(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_chunk_arg *arg,
			   void *user)
{
	(void)ctx;
	struct ws *ws = user;
	bool binary = ws->frame_opcode == WSLAY_BINARY_FRAME ||
		      (ws->frame_opcode == WSLAY_CONTINUATION_FRAME && ws->msg_opcode == WSLAY_BINARY_FRAME);
	if (binary && arg->data_length > 0)
		ws->cb.on_data(ws->user, arg->data, arg->data_length);
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
	(void)ctx;
	struct ws *ws = user;
	if (arg->opcode != WSLAY_CONNECTION_CLOSE)
		return;
	ws->closed_seen = true;
	const uint8_t *reason = arg->msg_length > 2 ? arg->msg + 2 : NULL;
	size_t reason_len = arg->msg_length > 2 ? arg->msg_length - 2 : 0;
	ws->cb.on_close(ws->user, arg->status_code, reason, reason_len);
}

struct ws *ws_create(const struct ws_callbacks *cb, void *user)
{
	static const struct wslay_event_callbacks callbacks = {
		.recv_callback = on_recv,
		.send_callback = on_send,
		.genmask_callback = on_genmask,
		.on_frame_recv_start_callback = on_frame_start,
		.on_frame_recv_chunk_callback = on_frame_chunk,
		.on_msg_recv_callback = on_msg,
	};
	struct ws *ws = calloc(1, sizeof(*ws));
	if (ws == NULL)
		return NULL;
	if (wslay_event_context_client_init(&ws->ctx, &callbacks, ws) != 0) {
		free(ws);
		return NULL;
	}
	/* Stream data frames instead of gathering whole messages: memory must
	 * not follow what a frame header announces. A single frame is still
	 * capped, well above anything a gateway sends. */
	wslay_event_config_set_no_buffering(ws->ctx, 1);
	wslay_event_config_set_max_recv_msg_length(ws->ctx, (uint64_t)1 << 31);
	ws->cb = *cb;
	ws->user = user;
	return ws;
}

void ws_destroy(struct ws *ws)
{
	if (ws == NULL)
		return;
	wslay_event_context_free(ws->ctx);
	free(ws);
}

int ws_feed(struct ws *ws, const uint8_t *data, size_t len)
{
	ws->in = data;
	ws->in_len = len;
	int rc = wslay_event_recv(ws->ctx);
	ws->in = NULL;
	ws->in_len = 0;
	if (rc == WSLAY_ERR_NOMEM)
		return WS_ERR_NOMEM;
	if (rc == WSLAY_ERR_CALLBACK_FAILURE)
		return WS_ERR_PROTOCOL;
	if (rc != 0)
		return WS_ERR_INTERNAL;
	/* wslay answers a broken frame by queuing a Close and no longer
	 * reading; a Close received is the normal way to stop reading. */
	if (!wslay_event_get_read_enabled(ws->ctx) && !ws->closed_seen)
		return WS_ERR_PROTOCOL;
	return WS_OK;
}

int ws_queue_data(struct ws *ws, const uint8_t *data, size_t len)
{
	if (len == 0)
		return WS_OK;
	if (len > WS_MAX_FRAME)
		return WS_ERR_INTERNAL;
	struct wslay_event_msg msg = {WSLAY_BINARY_FRAME, data, len};
	int rc = wslay_event_queue_msg(ws->ctx, &msg);
	if (rc == WSLAY_ERR_NOMEM)
		return WS_ERR_NOMEM;
	return rc == 0 ? WS_OK : WS_ERR_CLOSED;
}

int ws_send_binary(struct ws *ws, const uint8_t *data, size_t len)
{
	if (len == 0)
		return WS_OK;
	if (len > WS_MAX_FRAME)
		return WS_ERR_INTERNAL;
	if (ws->close_queued || !wslay_event_get_read_enabled(ws->ctx) || !wslay_event_get_write_enabled(ws->ctx))
		return WS_ERR_CLOSED;
	uint8_t head[14];
	size_t n = 0;
	head[n++] = 0x80 | WSLAY_BINARY_FRAME;
	if (len < 126) {
		head[n++] = (uint8_t)(0x80 | len);
	} else if (len < 65536) {
		head[n++] = 0x80 | 126;
		head[n++] = (uint8_t)(len >> 8);
		head[n++] = (uint8_t)len;
	} else {
		head[n++] = 0x80 | 127;
		for (int shift = 56; shift >= 0; shift -= 8)
			head[n++] = (uint8_t)((uint64_t)len >> shift);
	}
	uint8_t key[4];
	if (rng_bytes(key, sizeof(key)) != 0)
		return WS_ERR_INTERNAL;
	memcpy(head + n, key, 4);
	n += 4;
	if (ws->cb.send(ws->user, head, n) != n)
		return WS_ERR_NOMEM;
	if (ws->cb.send_masked(ws->user, data, len, key) != 0)
		return WS_ERR_NOMEM;
	return WS_OK;
}

int ws_queue_ping(struct ws *ws, const uint8_t *payload, size_t len)
{
	if (len > 125)
		return WS_ERR_INTERNAL;
	struct wslay_event_msg msg = {WSLAY_PING, payload, len};
	int rc = wslay_event_queue_msg(ws->ctx, &msg);
	if (rc == WSLAY_ERR_NOMEM)
		return WS_ERR_NOMEM;
	return rc == 0 ? WS_OK : WS_ERR_CLOSED;
}

int ws_queue_close(struct ws *ws, uint16_t code)
{
	int rc = wslay_event_queue_close(ws->ctx, code, NULL, 0);
	if (rc == 0)
		ws->close_queued = code;
	if (rc == WSLAY_ERR_NOMEM)
		return WS_ERR_NOMEM;
	return rc == 0 ? WS_OK : WS_ERR_CLOSED;
}

int ws_flush(struct ws *ws)
{
	int rc;
	do {
		ws->send_blocked = false;
		rc = wslay_event_send(ws->ctx);
	} while (rc == 0 && !ws->send_blocked && wslay_event_want_write(ws->ctx));
	if (rc == WSLAY_ERR_NOMEM)
		return WS_ERR_NOMEM;
	return rc == 0 ? WS_OK : WS_ERR_INTERNAL;
}

size_t ws_queued_bytes(const struct ws *ws)
{
	return wslay_event_get_queued_msg_length(ws->ctx);
}

size_t ws_queued_count(const struct ws *ws)
{
	return wslay_event_get_queued_msg_count(ws->ctx);
}

bool ws_close_sent(const struct ws *ws)
{
	return wslay_event_get_close_sent(ws->ctx);
}

bool ws_close_received(const struct ws *ws)
{
	return wslay_event_get_close_received(ws->ctx);
}

bool ws_want_read(const struct ws *ws)
{
	return wslay_event_want_read(ws->ctx);
}

uint16_t ws_close_code_sent(const struct ws *ws)
{
	if (!wslay_event_get_close_sent(ws->ctx))
		return ws->close_queued;
	return wslay_event_get_status_code_sent(ws->ctx);
}

const char *ws_describe_code(uint16_t code)
{
	switch (code) {
	case 1000: return "normal closure";
	case 1001: return "going away";
	case 1002: return "protocol error";
	case 1003: return "unsupported data";
	case 1005: return "no status code";
	case 1006: return "closed without a Close frame";
	case 1007: return "invalid payload data";
	case 1008: return "policy violation";
	case 1009: return "message too big";
	case 1010: return "extension required";
	case 1011: return "internal error on the gateway";
	default: return "application-defined";
	}
}

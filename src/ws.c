/* ws: client WebSocket over wslay's event API; see ws.h. */
#include "ws.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wslay/wslay.h>

#include "rng.h"

/* A second, shallow reading of the incoming frame headers, only to say
 * in words which rule a broken frame breaks: wslay rejects such frames
 * (and answers with a Close) but does not say why. */
struct track {
	uint8_t hdr[14];
	size_t hdr_len;
	uint64_t left;     /* payload bytes of the current frame still to come */
	uint8_t opcode;
	bool in_payload;
	bool fin;          /* the current frame ends its message */
	bool in_message;   /* a fragmented data message is open */
	bool text;         /* the open message is text */
	uint8_t close[125];
	size_t close_len;
	/* UTF-8 of the open text message, checked as it streams. */
	uint32_t u8_cp, u8_min;
	unsigned u8_need;  /* continuation bytes still expected */
	uint64_t u8_at;    /* bytes of the message seen */
	char why[112];     /* the first rule broken, or "" */
};

struct ws {
	wslay_event_context_ptr ctx;
	struct ws_callbacks cb;
	void *user;
	struct stream *out;
	int write_error; /* the stream's refusal, for ws_flush */

	/* The bytes ws_feed is handing to wslay. */
	const uint8_t *in;
	size_t in_len;

	/* What the current incoming frame and message are. */
	uint8_t frame_opcode;
	uint8_t msg_opcode;
	bool closed_seen;
	struct track track;
	uint16_t close_queued;
	uint64_t control_out; /* bytes of control frames handed to send, ever */
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

static void broke(struct track *k, const char *fmt, unsigned long long v)
{
	if (k->why[0] == '\0')
		snprintf(k->why, sizeof(k->why), fmt, v);
}

static bool valid_utf8(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		size_t more;
		uint32_t cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			more = 1;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			more = 2;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			more = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i <= more)
			return false;
		for (size_t j = 1; j <= more; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + j] & 0x3f);
		}
		/* Overlong forms, surrogates and what lies past U+10FFFF. */
		if ((more == 1 && cp < 0x80) || (more == 2 && cp < 0x800) || (more == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += more + 1;
	}
	return true;
}

/* One more byte of a text message; false when it breaks UTF-8 (RFC 3629:
 * no overlong forms, no surrogates, nothing past U+10FFFF). */
static bool utf8_byte(struct track *k, uint8_t c)
{
	k->u8_at++;
	if (k->u8_need == 0) {
		if (c < 0x80)
			return true;
		if ((c & 0xe0) == 0xc0) {
			k->u8_need = 1, k->u8_cp = c & 0x1f, k->u8_min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			k->u8_need = 2, k->u8_cp = c & 0x0f, k->u8_min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			k->u8_need = 3, k->u8_cp = c & 0x07, k->u8_min = 0x10000;
		} else {
			return false;
		}
		return true;
	}
	if ((c & 0xc0) != 0x80)
		return false;
	k->u8_cp = (k->u8_cp << 6) | (c & 0x3f);
	if (--k->u8_need > 0)
		return true;
	return k->u8_cp >= k->u8_min && k->u8_cp <= 0x10ffff && !(k->u8_cp >= 0xd800 && k->u8_cp <= 0xdfff);
}

static void utf8_text(struct track *k, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n && k->why[0] == '\0'; i++)
		if (!utf8_byte(k, p[i]))
			broke(k, "a text message that is not UTF-8 (at its byte %llu)", (unsigned long long)k->u8_at);
}

static bool valid_close_code(unsigned code)
{
	return (code >= 1000 && code <= 1011 && code != 1004 && code != 1005 && code != 1006) ||
	       (code >= 3000 && code <= 4999);
}

static void frame_done(struct track *k)
{
	if (k->text && k->fin && (k->opcode == WSLAY_TEXT_FRAME || k->opcode == WSLAY_CONTINUATION_FRAME) &&
	    k->u8_need > 0)
		broke(k, "a text message that ends inside a UTF-8 character%.0llu", 0);
	if (k->opcode == WSLAY_CONNECTION_CLOSE) {
		if (k->close_len == 1)
			broke(k, "a Close frame with a 1-byte payload%.0llu", 0);
		else if (k->close_len >= 2 && !valid_close_code((unsigned)(k->close[0] << 8 | k->close[1])))
			broke(k, "a Close frame with the invalid code %llu", (unsigned long long)(k->close[0] << 8 | k->close[1]));
		else if (k->close_len > 2 && !valid_utf8(k->close + 2, k->close_len - 2))
			broke(k, "a Close reason that is not UTF-8%.0llu", 0);
	}
	k->in_payload = false;
	k->hdr_len = 0;
}

/* Checks a complete header; returns its payload length. */
static uint64_t header_done(struct track *k, size_t need)
{
	const uint8_t *h = k->hdr;
	bool fin = h[0] & 0x80, masked = h[1] & 0x80;
	unsigned rsv = (h[0] >> 4) & 7, op = h[0] & 0x0f, len7 = h[1] & 0x7f;
	uint64_t len = len7;
	if (len7 == 126)
		len = (uint64_t)h[2] << 8 | h[3];
	else if (len7 == 127)
		for (int i = 0; i < 8; i++)
			len = (i == 0 ? 0 : len << 8) | h[2 + i];
	(void)need;
	k->opcode = (uint8_t)op;
	if (rsv != 0)
		broke(k, "reserved bits (RSV1-3) set, with no extension agreed%.0llu", 0);
	else if (masked)
		broke(k, "a masked frame (a server must not mask)%.0llu", 0);
	else if ((op >= 3 && op <= 7) || op >= 0xb)
		broke(k, "the reserved opcode 0x%llX", op);
	else if (op >= 8 && !fin)
		broke(k, "a fragmented control frame%.0llu", 0);
	else if (op >= 8 && len > 125)
		broke(k, "a control frame of %llu bytes (at most 125)", (unsigned long long)len);
	else if (op == 0 && !k->in_message)
		broke(k, "a continuation frame with no message to continue%.0llu", 0);
	else if ((op == 1 || op == 2) && k->in_message)
		broke(k, "a new message inside an unfinished fragmented one%.0llu", 0);
	else if (len7 == 127 && (h[2] & 0x80))
		broke(k, "a frame length with its top bit set%.0llu", 0);
	else if (len > ((uint64_t)1 << 31))
		broke(k, "a frame announcing %llu bytes (too big: more than 2 GiB)", (unsigned long long)len);
	if (op == 1 || op == 2) {
		k->in_message = !fin;
		k->text = op == 1;
		k->u8_need = 0;
		k->u8_at = 0;
	} else if (op == 0 && fin) {
		k->in_message = false;
	}
	k->fin = fin;
	if (op == WSLAY_CONNECTION_CLOSE)
		k->close_len = 0;
	return len;
}

static void track(struct track *k, const uint8_t *p, size_t n)
{
	while (n > 0 && k->why[0] == '\0') {
		if (k->in_payload) {
			size_t take = k->left < n ? (size_t)k->left : n;
			if (k->opcode == WSLAY_CONNECTION_CLOSE) {
				size_t room = sizeof(k->close) - k->close_len;
				size_t c = take < room ? take : room;
				memcpy(k->close + k->close_len, p, c);
				k->close_len += c;
			} else if (k->text && (k->opcode == WSLAY_TEXT_FRAME || k->opcode == WSLAY_CONTINUATION_FRAME)) {
				utf8_text(k, p, take);
			}
			k->left -= take;
			p += take;
			n -= take;
			if (k->left == 0)
				frame_done(k);
			continue;
		}
		k->hdr[k->hdr_len++] = *p++;
		n--;
		if (k->hdr_len < 2)
			continue;
		size_t len7 = k->hdr[1] & 0x7f;
		size_t need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((k->hdr[1] & 0x80) ? 4 : 0);
		if (k->hdr_len < need)
			continue;
		k->left = header_done(k, need);
		k->in_payload = true;
		if (k->left == 0)
			frame_done(k);
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

/* The stream takes everything or fails: never "would block". */
static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user)
{
	(void)flags;
	struct ws *ws = user;
	int rc = ws->out->ops->write(ws->out, data, len, false);
	if (rc != 0) {
		ws->write_error = rc;
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	/* Data frames bypass wslay (ws_send_binary): what it sends is control
	 * frames, Pongs and Pings and the Close. */
	ws->control_out += len;
	return (ssize_t)len;
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

struct ws *ws_create(const struct ws_callbacks *cb, void *user, struct stream *out)
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
	ws->out = out;
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
	track(&ws->track, data, len);
	ws->in = data;
	ws->in_len = len;
	int rc = wslay_event_recv(ws->ctx);
	ws->in = NULL;
	ws->in_len = 0;
	/* wslay says WSLAY_ERR_CALLBACK_FAILURE both when its frame decoder
	 * finds a broken frame, having queued a Close and stopped reading,
	 * and when a callback failed. Ours do not fail here (the receive
	 * callback says "would block" once the input is used up), so only the
	 * first is the gateway's fault; anything else is ours or wslay's. */
	if (rc == WSLAY_ERR_NOMEM)
		return WS_ERR_NOMEM;
	if (rc == WSLAY_ERR_CALLBACK_FAILURE && !wslay_event_get_read_enabled(ws->ctx))
		return WS_ERR_PROTOCOL;
	if (rc != 0)
		return WS_ERR_INTERNAL;
	/* wslay answers a broken frame by queuing a Close and no longer
	 * reading; a Close received is the normal way to stop reading. A
	 * Close of one byte wslay takes as one without a code: it is broken
	 * all the same. */
	if (!wslay_event_get_read_enabled(ws->ctx) && (!ws->closed_seen || ws->track.why[0] != '\0'))
		return WS_ERR_PROTOCOL;
	return WS_OK;
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
	int rc = ws->out->ops->write(ws->out, head, n, false);
	if (rc == 0)
		rc = ws->out->ops->write_masked(ws->out, data, len, key);
	if (rc != 0)
		return rc == -ENOMEM ? WS_ERR_NOMEM : WS_ERR_INTERNAL;
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
		rc = wslay_event_send(ws->ctx);
	} while (rc == 0 && wslay_event_want_write(ws->ctx));
	if (rc == WSLAY_ERR_NOMEM || (rc == WSLAY_ERR_CALLBACK_FAILURE && ws->write_error == -ENOMEM))
		return WS_ERR_NOMEM;
	return rc == 0 ? WS_OK : WS_ERR_INTERNAL;
}

size_t ws_queued_count(const struct ws *ws)
{
	return wslay_event_get_queued_msg_count(ws->ctx);
}

uint64_t ws_control_bytes(const struct ws *ws)
{
	return ws->control_out;
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

const char *ws_error_detail(const struct ws *ws)
{
	if (ws->track.why[0] != '\0')
		return ws->track.why;
	if (ws->track.text)
		return "invalid UTF-8 in a text frame";
	return "a frame that breaks RFC 6455";
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

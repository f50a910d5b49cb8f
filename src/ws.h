/* ws: the client side of a WebSocket connection (RFC 6455) on top of wslay's
 * event API, with no I/O of its own: bytes from the gateway are fed in with
 * ws_feed, and the frames to send are written into a stream (stream.h), the
 * top of the connection to the gateway, which takes them whole or fails.
 *
 * Incoming data frames are streamed, not gathered into messages: the
 * payload of binary frames (and of their continuations) reaches on_data as
 * it arrives, so that memory does not grow with the announced sizes. Text
 * frames carry nothing and are dropped. Pings are answered by wslay.
 *
 * Ownership: ws_create allocates, ws_destroy frees (NULL is fine); never
 * from inside a callback. The stream outlives the ws. */
#ifndef OTOROSHICTL_WS_H
#define OTOROSHICTL_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "stream.h"

/* Payload limit of the frames this client sends (PROTOCOL.md section 4). */
#define WS_MAX_FRAME 65536

enum ws_error {
	WS_OK = 0,
	WS_ERR_NOMEM = -1,
	WS_ERR_PROTOCOL = -2, /* the gateway broke RFC 6455; a Close was queued */
	WS_ERR_CLOSED = -3,   /* sending after the Close */
	WS_ERR_INTERNAL = -4, /* the stream refused a write, or wslay failed */
};

const char *ws_strerror(int err);

struct ws_callbacks {
	/* Payload bytes of binary messages, in order. */
	void (*on_data)(void *user, const uint8_t *data, size_t len);
	/* The gateway's Close frame; code is 0 when it carried none. */
	void (*on_close)(void *user, uint16_t code, const uint8_t *reason, size_t reason_len);
};

struct ws;

/* Frames go to out (write and write_masked). */
struct ws *ws_create(const struct ws_callbacks *cb, void *user, struct stream *out);
void ws_destroy(struct ws *ws);

/* Feeds bytes read from the gateway; runs the callbacks. Returns WS_OK or
 * a negative ws_error. */
int ws_feed(struct ws *ws, const uint8_t *data, size_t len);
/* Sends one binary frame of at most WS_MAX_FRAME bytes at once, without
 * wslay's queue: the header goes through the stream's write and the
 * payload through its write_masked, which masks it while copying it.
 * Returns WS_OK, WS_ERR_CLOSED once a Close is queued or sent, WS_ERR_NOMEM
 * or WS_ERR_INTERNAL (the stream refused it). */
int ws_send_binary(struct ws *ws, const uint8_t *data, size_t len);
/* Queues a Ping carrying payload (at most 125 bytes). */
int ws_queue_ping(struct ws *ws, const uint8_t *payload, size_t len);
/* Queues a Close frame with this status code. */
int ws_queue_close(struct ws *ws, uint16_t code);
/* Writes wslay's queued frames (control frames) into the stream. */
int ws_flush(struct ws *ws);

/* Messages (control frames) queued and not yet written. */
size_t ws_queued_count(const struct ws *ws);
/* Bytes of control frames (Pongs, Pings, the Close) written, ever:
 * a peer that sends Pings and reads nothing makes them pile up. */
uint64_t ws_control_bytes(const struct ws *ws);
bool ws_close_sent(const struct ws *ws);
bool ws_close_received(const struct ws *ws);
/* True while frames are still to be read (no Close received, no error). */
bool ws_want_read(const struct ws *ws);
/* The status code of the Close this side sent, or queued through
 * ws_queue_close, or 0. A Close queued jumps ahead of queued data, and the
 * data behind it is never sent. */
uint16_t ws_close_code_sent(const struct ws *ws);
/* After WS_ERR_PROTOCOL: which rule the gateway's frame broke, in words. */
const char *ws_error_detail(const struct ws *ws);
/* A few words for a Close status code (1000 "normal closure", ...). */
const char *ws_describe_code(uint16_t code);

#endif

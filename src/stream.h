/* stream: one layer of the connection to the gateway. The connection is a
 * stack (see upstream.h): TCP at the bottom, then optionally TLS to an
 * https:// proxy, then optionally the proxy's CONNECT, then optionally TLS
 * to the gateway. Every layer has the same small interface (stream_ops),
 * knows only the layer below it, and reports to the one above through
 * stream_events, so that a layer never cares what it is stacked on: TLS
 * inside TLS is two instances of one layer.
 *
 * The ws layer writes frames straight into the top of the stack.
 *
 * Ownership: a layer is embedded in its owner (struct upstream) and holds
 * the memory it allocates until its finish function, which the owner calls
 * after `closed` has come up from the bottom: nothing is freed while a
 * callback of libuv or mbedTLS is running. */
#ifndef OTOROSHICTL_STREAM_H
#define OTOROSHICTL_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The step of reaching the gateway that a layer does, for messages. */
enum stream_stage {
	STAGE_RESOLVE,   /* the bottom's name lookup */
	STAGE_CONNECT,   /* the bottom's TCP connect */
	STAGE_PROXY_TLS, /* TLS to an https:// proxy */
	STAGE_PROXY,     /* the proxy's CONNECT */
	STAGE_TLS,       /* TLS to the gateway */
	STAGE_OPEN,      /* the stack is open */
};

/* A few words for a stage ("the name lookup", "the TLS handshake"...). */
const char *stream_stage_name(enum stream_stage stage);

struct stream;

/* What a layer tells the one above it. */
struct stream_events {
	/* The layer is open (status 0), or could not be opened: status is a
	 * negative uv error, stage the step that failed, and detail, when not
	 * NULL, says why in words (valid during the call). */
	void (*opened)(void *user, int status, enum stream_stage stage, const char *detail);
	/* Bytes from the gateway; valid only during the call. */
	void (*read)(void *user, const uint8_t *data, size_t len);
	/* The peer's side ended: UV_EOF, or a negative uv error. */
	void (*ended)(void *user, int status);
	/* Some queued bytes were written (status 0), or writing failed. */
	void (*written)(void *user, int status);
	/* The layer and everything below it are closed. */
	void (*closed)(void *user);
};

struct stream_ops {
	/* Starts opening: the bottom connects, the others open the layer
	 * below and then do their own step. */
	void (*open)(struct stream *s);
	/* Queues bytes (copied). `secret` marks bytes that carry a credential:
	 * the memory that held them is wiped once they are written. Returns 0
	 * or a negative uv error (UV_ENOMEM, UV_ENOTCONN). */
	int (*write)(struct stream *s, const uint8_t *data, size_t len, bool secret);
	/* Queues a WebSocket payload, masked with key on the way (RFC 6455
	 * section 5.3). */
	int (*write_masked)(struct stream *s, const uint8_t *data, size_t len, const uint8_t key[4]);
	/* Starts writing what is queued. */
	int (*flush)(struct stream *s);
	/* Bytes queued in this layer and below, not yet written. */
	size_t (*pending)(const struct stream *s);
	/* Starts or stops delivering reads (a layer still in its own step
	 * reads anyway). */
	int (*read)(struct stream *s, bool on);
	/* Ends the layer (a TLS layer says close_notify) and closes the ones
	 * below; `closed` follows, once. Safe to call twice. */
	void (*close)(struct stream *s);
};

struct stream {
	const struct stream_ops *ops;
	struct stream *below;               /* NULL for the bottom */
	const struct stream_events *events; /* to the layer above, or the owner */
	void *user;
};

/* Makes `s` the layer above `below`: below's events go to s's handlers. */
static inline void stream_stack(struct stream *below, const struct stream_events *events, void *user)
{
	below->events = events;
	below->user = user;
}

#endif

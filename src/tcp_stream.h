/* tcp_stream: the bottom of the connection stack (see stream.h): resolves
 * a name without blocking (uv_getaddrinfo), tries every address in turn,
 * then carries bytes through one libuv TCP handle and its writer.
 *
 * Ownership: embedded in its owner; tcp_stream_finish releases what it
 * allocated, once `closed` has been reported. */
#ifndef OTOROSHICTL_TCP_STREAM_H
#define OTOROSHICTL_TCP_STREAM_H

#include <uv.h>

#include "liveness.h"
#include "stream.h"
#include "writer.h"

enum tcp_state {
	TS_IDLE,
	TS_RESOLVING,
	TS_CONNECTING,
	TS_OPEN,
	TS_FAILED,  /* could not open; closing is still to be asked */
	TS_CLOSING,
	TS_CLOSED,
};

struct tcp_stream {
	struct stream base;
	uv_loop_t *loop;
	enum tcp_state state;
	const char *name; /* outlives the stream */
	uint16_t port;
	unsigned probe_every; /* seconds between TCP keepalive probes; 0: none */

	uv_getaddrinfo_t gai;
	uv_connect_t creq;
	uv_tcp_t tcp;
	bool tcp_live; /* tcp is initialised and not yet closed */
	struct addrinfo *addrs, *next;
	int last_error;
	char peer[64]; /* the address tried or connected to, for logs */

	struct writer w;
	bool reading;
};

void tcp_stream_init(struct tcp_stream *t, uv_loop_t *loop, const char *name, uint16_t port, unsigned probe_every);
void tcp_stream_finish(struct tcp_stream *t);
/* What the keepalive needs to know of the connection (liveness.h). */
void tcp_stream_sample(const struct tcp_stream *t, struct liveness_sample *s);

#endif

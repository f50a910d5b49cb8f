/* tcp_stream: the bottom of the connection stack (see stream.h): resolves
 * a name without blocking (uv_getaddrinfo), connects the way RFC 8305
 * (Happy Eyeballs) says: the resolver's addresses interleaved by family, a
 * new attempt every TCP_STAGGER_MS unless the one before failed first (then
 * at once), the first connected socket wins and the others are closed;
 * then it carries bytes through one libuv TCP handle and its writer.
 *
 * Ownership: embedded in its owner; each attempt is an allocated racer,
 * freed in its close callback; the winner's socket is taken over (dup'ed)
 * by the stream's own handle. `closed` is reported once every handle of
 * the stream is closed; tcp_stream_finish then releases the rest. */
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

/* The wait before the next address is tried while one is still connecting
 * (RFC 8305's Connection Attempt Delay), and the addresses tried at most. */
#define TCP_STAGGER_MS 250
#define TCP_MAX_TRIES 16

struct tcp_racer;

struct tcp_stream {
	struct stream base;
	uv_loop_t *loop;
	enum tcp_state state;
	const char *name; /* outlives the stream */
	uint16_t port;
	unsigned probe_every; /* seconds between TCP keepalive probes; 0: none */

	uv_getaddrinfo_t gai;
	uv_tcp_t tcp;  /* the connection, once an attempt won */
	bool tcp_live; /* tcp is initialised and not yet closed */
	struct addrinfo *addrs;
	const struct addrinfo *order[TCP_MAX_TRIES]; /* interleaved by family */
	size_t n_order, next_try;
	struct tcp_racer *racers[TCP_MAX_TRIES];
	unsigned in_flight; /* attempts still connecting */
	unsigned pending;   /* handles (racers, the stagger timer, tcp) not yet closed */
	uv_timer_t stagger;
	bool stagger_live;
	int last_error;
	char *errors; /* each address's failure, for the message; allocated at the first */
	char peer[64]; /* the address tried or connected to, for logs */

	struct writer w;
	bool reading;
};

void tcp_stream_init(struct tcp_stream *t, uv_loop_t *loop, const char *name, uint16_t port, unsigned probe_every);
void tcp_stream_finish(struct tcp_stream *t);
/* What the keepalive needs to know of the connection (liveness.h). */
void tcp_stream_sample(const struct tcp_stream *t, struct liveness_sample *s);

#endif

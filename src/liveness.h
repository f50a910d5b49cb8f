/* liveness: is the gateway still there? The keepalive's judgement, from what
 * a tunnel can see of its connection to the gateway. Pure code: the caller
 * samples the connection and passes the loop time.
 *
 * A gateway is alive while it sends anything (a frame, a Pong), and also
 * while bytes on their way to it move: a gateway whose target reads slowly
 * stops reading the tunnel, so its TCP window fills and a Ping waits behind
 * the data it cannot read yet. Moving means the tunnel's queue drains into
 * the kernel, the gateway's TCP stack acknowledges bytes, its window opens
 * again (it read some), or, with the window full, it still answers the
 * kernel's window probes. It is declared gone after two intervals with none
 * of these; with nothing on its way, that is a Ping unanswered for an
 * interval after an interval of silence.
 *
 * Ownership: embedded in its owner; no memory of its own. */
#ifndef OTOROSHICTL_LIVENESS_H
#define OTOROSHICTL_LIVENESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct liveness_sample {
	uint64_t written; /* bytes the tunnel handed to the kernel, ever */
	size_t queued;    /* bytes still in the tunnel's own queues */
	/* The kernel's view (TCP_INFO); the rest is valid only when tcp is. */
	bool tcp;
	uint64_t acked;    /* bytes the gateway's TCP stack acknowledged, ever */
	uint32_t unacked;  /* segments sent and not yet acknowledged */
	uint32_t notsent;  /* bytes in the kernel not yet sent */
	uint32_t window;   /* the gateway's advertised receive window, bytes */
	bool has_window;   /* the kernel reports the window (newer kernels do) */
	uint8_t probes;    /* window probes sent and not answered */
};

enum liveness_verdict {
	LIVENESS_OK,   /* nothing to do */
	LIVENESS_PING, /* silent for an interval: send a Ping, then liveness_pinged */
	LIVENESS_DEAD, /* nothing for two intervals */
};

struct liveness {
	uint64_t alive_at; /* loop time of the last sign of life */
	uint64_t ping_at;  /* when the unanswered Ping went out; 0: none */
	struct liveness_sample last;
	bool have_last;
};

void liveness_init(struct liveness *lv, uint64_t now);
/* Bytes came from the gateway (a Pong answers the Ping), or the tunnel
 * stopped reading it by choice (its silence is then the tunnel's own). */
void liveness_heard(struct liveness *lv, uint64_t now);
void liveness_pinged(struct liveness *lv, uint64_t now);
/* One check, with the connection as it is now. */
enum liveness_verdict liveness_check(struct liveness *lv, const struct liveness_sample *s, uint64_t now,
				     uint64_t interval);
/* Milliseconds since the last sign of life. */
uint64_t liveness_quiet(const struct liveness *lv, uint64_t now);

#endif

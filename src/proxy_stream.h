/* proxy_stream: the HTTP CONNECT layer of the connection stack (see
 * stream.h): once the layer below is open (TCP to the proxy, or TLS to an
 * https:// proxy), it asks the proxy for a tunnel to the gateway, reads the
 * answer, and from then on passes bytes through both ways.
 *
 * Ownership: embedded in its owner; proxy_stream_finish releases what it
 * allocated, once `closed` has been reported. */
#ifndef OTOROSHICTL_PROXY_STREAM_H
#define OTOROSHICTL_PROXY_STREAM_H

#include "proxy.h"
#include "stream.h"

struct proxy_stream {
	struct stream base;
	const struct proxy *proxy;  /* outlives the stream */
	const char *target_name;    /* the gateway, as CONNECT names it */
	uint16_t target_port;
	struct proxy_answer *answer; /* only while the answer comes */
	enum { PROXY_IDLE, PROXY_ASKING, PROXY_OPEN, PROXY_FAILED } state;
};

/* Stacks p on below, to reach target_name:target_port through proxy. */
void proxy_stream_init(struct proxy_stream *p, struct stream *below, const struct proxy *proxy,
		       const char *target_name, uint16_t target_port);
void proxy_stream_finish(struct proxy_stream *p);

#endif

/* upstream: a tunnel's connection to the gateway, built as a stack of
 * streams (stream.h): TCP at the bottom, then, with an https:// proxy,
 * TLS to the proxy; with any proxy, its CONNECT; with --tls, TLS to the
 * gateway. The tunnel and its ws layer see only the top of the stack.
 *
 * Ownership: embedded in its owner. upstream_close ends it; `closed` comes
 * once every layer is closed, and only then may the owner call
 * upstream_finish and free the memory that holds it. */
#ifndef OTOROSHICTL_UPSTREAM_H
#define OTOROSHICTL_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "liveness.h"
#include "proxy.h"
#include "proxy_stream.h"
#include "stream.h"
#include "tcp_stream.h"
#include "tls.h"
#include "tls_stream.h"

/* How to reach the gateway; the strings and setups outlive the upstream. */
struct upstream_params {
	const char *gw_name;         /* the gateway's name or address, brackets removed */
	uint16_t gw_port;
	/* --connect-to: where to connect instead (or through the proxy's
	 * CONNECT); the TLS name stays gw_name. NULL: the gateway itself. */
	const char *connect_name;
	uint16_t connect_port;
	struct tls_setup *tls;       /* TLS to the gateway, or NULL for ws:// */
	const struct proxy *proxy;   /* the proxy, or NULL */
	struct tls_setup *proxy_tls; /* TLS to an https:// proxy, or NULL */
	unsigned probe_every;        /* TCP keepalive probes (tcpinfo.h), seconds; 0: none */
};

struct upstream {
	struct tcp_stream tcp;
	struct tls_stream proxy_tls;
	struct proxy_stream proxy;
	struct tls_stream tls;
	bool has_proxy_tls, has_proxy, has_tls;
	struct stream *top;
};

/* Builds the stack; `events` (with user) get what the top reports. */
void upstream_init(struct upstream *u, uv_loop_t *loop, const struct upstream_params *p,
		   const struct stream_events *events, void *user);
/* Starts opening; `opened` follows (at once, on some failures). */
void upstream_connect(struct upstream *u);
/* The top of the stack: what the handshake and the ws layer write to. */
struct stream *upstream_stream(struct upstream *u);
int upstream_flush(struct upstream *u);
size_t upstream_pending(const struct upstream *u);
int upstream_read(struct upstream *u, bool on);
void upstream_close(struct upstream *u);
void upstream_finish(struct upstream *u);
/* The step under way: where a stack that takes too long is stuck. */
enum stream_stage upstream_stage(const struct upstream *u);
/* The TLS connection to the gateway, once its handshake is done; NULL
 * without --tls. */
const struct tls_conn *upstream_tls(const struct upstream *u);
/* The TLS version and cipher suite of the connection to the gateway, once
 * its handshake was done (and after it ended): false without --tls, or
 * before. */
bool upstream_tls_protocol(const struct upstream *u, const char **version, const char **suite);
/* Why the gateway refused the TLS handshake after the client had done its
 * part (tls_conn_refused_late): true with the reason in why. */
bool upstream_refusal(const struct upstream *u, char *why, size_t len);
/* Each address's failure before the one that connected, or "". */
const char *upstream_tried(const struct upstream *u);
/* The address TCP connected to (or is trying), for logs. */
const char *upstream_peer(const struct upstream *u);
/* What the keepalive needs to know of the connection now (liveness.h). */
void upstream_sample(const struct upstream *u, struct liveness_sample *s);

#endif

/* upstream: the byte stream from a tunnel to the gateway. It resolves the
 * gateway's name without blocking (uv_getaddrinfo), tries every address in
 * turn, and then carries bytes both ways. The tunnel sees only this
 * interface, so TLS and an HTTP CONNECT proxy go in here, below the
 * WebSocket upgrade, without changing the tunnel.
 *
 * Ownership: embedded in its owner (init/close). The owner must wait for
 * on_closed before freeing the memory that holds it. */
#ifndef OTOROSHICTL_UPSTREAM_H
#define OTOROSHICTL_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "liveness.h"
#include "proxy.h"
#include "tls.h"
#include "writer.h"

struct upstream_callbacks {
	/* Connected (status 0), or failed: status is a negative uv error,
	 * stage says which step failed ("resolve", "connect" or "tls") and
	 * detail, when not NULL, says why in words. */
	void (*on_connect)(void *user, int status, const char *stage, const char *detail);
	/* Bytes from the gateway; valid only during the call. */
	void (*on_read)(void *user, const uint8_t *data, size_t len);
	/* The gateway's side ended: UV_EOF, or a negative uv error. */
	void (*on_end)(void *user, int status);
	/* A write finished (status 0) or failed; pending bytes went down. */
	void (*on_written)(void *user, int status);
	/* Everything is closed; the owner may free the memory now. */
	void (*on_closed)(void *user);
};

enum upstream_state {
	UPSTREAM_IDLE,
	UPSTREAM_RESOLVING,
	UPSTREAM_CONNECTING,
	UPSTREAM_PROXYING, /* TCP to the proxy is up, CONNECT is under way */
	UPSTREAM_SECURING, /* TCP is up, the TLS handshake runs */
	UPSTREAM_CONNECTED,
	UPSTREAM_CLOSING,
	UPSTREAM_CLOSED,
};

struct upstream {
	uv_loop_t *loop;
	enum upstream_state state;
	struct upstream_callbacks cb;
	void *user;

	uv_getaddrinfo_t gai;
	uv_connect_t creq;
	uv_tcp_t tcp;
	bool tcp_live; /* tcp is initialised and not yet closed */
	struct addrinfo *addrs, *next;
	int last_error;
	uint16_t port;
	char peer[64]; /* the address connected to, for logs */

	struct writer w;
	bool reading;
	unsigned probe_every; /* seconds between TCP keepalive probes; 0: none */

	/* With --tls: the session, and the plaintext waiting to be sealed
	 * into records at the next flush (so that many small writes make few
	 * records). */
	bool use_tls;
	const char *tls_name;

	/* With a proxy: where CONNECT goes, and its answer while it comes. */
	const struct proxy *proxy;
	const char *target_name;
	uint16_t target_port;
	struct proxy_answer *answer;
	struct tls_conn *tls;
	struct bufq plain;
};

void upstream_init(struct upstream *u, uv_loop_t *loop, const struct upstream_callbacks *cb, void *user);
/* Speak TLS over the connection, verifying `name` (see tls.h). The name
 * must outlive the upstream. Call before upstream_connect. */
void upstream_use_tls(struct upstream *u, const char *name);
/* Reach the gateway through this HTTP CONNECT proxy (it must outlive the
 * upstream). Call before upstream_connect. */
void upstream_use_proxy(struct upstream *u, const struct proxy *proxy);
/* Has the kernel probe the idle connection every `seconds` (see tcpinfo.h).
 * Call before upstream_connect. */
void upstream_use_probes(struct upstream *u, unsigned seconds);
/* What the keepalive needs to know of the connection now (liveness.h). */
void upstream_sample(const struct upstream *u, struct liveness_sample *s);
/* True when the TLS session of this connection was resumed. */
bool upstream_tls_resumed(const struct upstream *u);
/* Starts resolving name and connecting to port. Returns 0 or a negative uv
 * error (nothing started). */
int upstream_connect(struct upstream *u, const char *name, uint16_t port);
/* Queues bytes for the gateway (copied). */
int upstream_write(struct upstream *u, const uint8_t *data, size_t len);
/* Queues bytes masked with a WebSocket key (copied and masked at once). */
int upstream_write_masked(struct upstream *u, const uint8_t *data, size_t len, const uint8_t key[4]);
/* Starts writing what is queued. */
int upstream_flush(struct upstream *u);
/* Bytes queued and not yet confirmed written. */
size_t upstream_pending(const struct upstream *u);
/* Starts or stops reading from the gateway. */
int upstream_read(struct upstream *u, bool on);
/* Closes everything; on_closed follows (once). Safe to call twice. */
void upstream_close(struct upstream *u);

#endif

/* tunnel: one local connection (or, with --stdio, standard input and
 * output) paired with one WebSocket to the gateway (PROTOCOL.md section 1).
 * It owns the states of both directions, the queues between them and their
 * watermarks, and ends alone: nothing it does can stop its owner or another
 * tunnel.
 *
 * The ownership rule: ending a tunnel only stops things (its states go to
 * their ends, uv_close is called on each of its handles, its connection to
 * the gateway is told to close). Its memory (the tunnel itself, the ws
 * context, the handshake's parser, the held bytes, the queues, the
 * connection stack and the stdio handles) is freed in one function,
 * tunnel_free, which runs once the last close callback has run; it then
 * tells the owner, whose `gone` is the last use of the tunnel. Nothing is
 * freed inside a callback of libuv, wslay or mbedTLS while that library
 * still runs: a tunnel ended from inside wslay's receive keeps its ws
 * context until the loop has closed its handles. While it lives, a tunnel
 * lets go only of what nothing but itself uses (the handshake's parser once
 * the WebSocket is open).
 *
 * Ownership of the rest: the environment and the owner outlive every
 * tunnel started with them. */
#ifndef OTOROSHICTL_TUNNEL_H
#define OTOROSHICTL_TUNNEL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <uv.h>

#include "config.h"
#include "proxy.h"
#include "tls.h"

struct tunnel;

/* What every tunnel of a run shares. */
struct tunnel_env {
	uv_loop_t *loop;
	const struct tunnel_config *cfg;
	const struct proxy *proxy;    /* NULL: straight to the gateway */
	struct tls_setup *tls;        /* NULL: ws:// */
	struct tls_setup *proxy_tls;  /* an https:// proxy's, or NULL */
	/* The forward's name in logs, when the run has several; else NULL. */
	const char *name;
	/* The sequence the tunnels' numbers come from: shared by the envs of
	 * one run, so that no two tunnels of a log share one; NULL: next_id. */
	uint64_t *ids;
	uint64_t next_id;
};

/* Who keeps the tunnels; `gone` comes once per tunnel, from tunnel_free,
 * with `failed` telling whether an error ended it. */
struct tunnel_owner {
	void (*gone)(struct tunnel_owner *owner, struct tunnel *t, bool failed);
};

/* The owner's list links through a node inside each tunnel. */
struct tunnel_node {
	TAILQ_ENTRY(tunnel_node) entry;
};
TAILQ_HEAD(tunnel_list, tunnel_node);
struct tunnel_node *tunnel_node(struct tunnel *t);
struct tunnel *tunnel_of(struct tunnel_node *n);

/* Above this many bytes queued towards one side, the other side stops
 * reading; below the low mark it reads again. */
#define TUNNEL_HIGH_WATER (512 * 1024)
#define TUNNEL_LOW_WATER (128 * 1024)
/* Control frames (answers to the gateway's Pings) queued towards a gateway
 * that reads nothing: past this, the tunnel stops reading it. */
#define TUNNEL_CONTROL_HIGH_WATER (64 * 1024)
/* From accept to an accepted upgrade. */
#define TUNNEL_HANDSHAKE_TIMEOUT_MS 10000
/* How long the gateway has to close after our Close, and how long the local
 * client has to close after our FIN. */
#define TUNNEL_DRAIN_TIMEOUT_MS 30000
/* A Close with an error this soon after the 101, before any data, says
 * the route could not carry the tunnel at all. */
#define TUNNEL_EARLY_CLOSE_MS 1000
/* A Close 1011 after this much silence both ways is the route's backend
 * idle timeout. */
#define TUNNEL_IDLE_SILENCE_MS 3000

/* Accepts one connection from server and starts its tunnel. Returns 0 with
 * *out set, or a negative uv error when nothing was accepted (the caller
 * must still take the connection off the queue: libuv watches the server
 * again only once one is accepted). */
int tunnel_start(struct tunnel_env *env, struct tunnel_owner *owner, uv_stream_t *server, struct tunnel **out);
/* Starts the one tunnel of --stdio, over standard input and output (pipes,
 * sockets or a terminal). Returns 0 with *out set, or a negative uv error
 * (UV_EINVAL when a descriptor is a plain file, which cannot be watched);
 * a tunnel is started either way when *out is set. */
int tunnel_start_stdio(struct tunnel_env *env, struct tunnel_owner *owner, struct tunnel **out);
/* Ends the tunnel gracefully: what is queued is sent, then Close 1000 at
 * once (no linger), then the gateway's answering Close is awaited. */
void tunnel_shutdown(struct tunnel *t);
/* Closes everything at once. */
void tunnel_abort(struct tunnel *t);
/* The keepalive check, run for every tunnel by the owner's one timer (see
 * liveness.h): a tunnel whose gateway gave no sign of life for its
 * --keepalive interval sends a Ping; one with none for twice that ends. */
void tunnel_check_alive(struct tunnel *t, uint64_t now);

/* What a status report (SIGUSR1) shows of one tunnel. */
struct tunnel_status {
	const char *addr;    /* the local client's address, or "stdio" */
	const char *forward; /* the env's name, or NULL */
	uint64_t age_ms;
	uint64_t bytes_sent, bytes_received; /* payload, as in the summary */
	const char *state;   /* connecting, upgrading, open, ending, ended */
};
void tunnel_get_status(const struct tunnel *t, uint64_t now, struct tunnel_status *out);

#endif

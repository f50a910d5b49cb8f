/* listener: the local listening socket, the set of live tunnels, and the
 * process's lifetime (signals, graceful stop).
 *
 * Ownership: one listener per run, on the stack of listener_run. Tunnels
 * link themselves into it and unlink through listener_tunnel_gone. */
#ifndef OTOROSHICTL_LISTENER_H
#define OTOROSHICTL_LISTENER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "proxy.h"

struct tunnel;

/* How long open tunnels get to finish after SIGINT or SIGTERM. */
#define LISTENER_STOP_GRACE_MS 2000

struct listener {
	uv_loop_t *loop;
	const struct tunnel_config *cfg;
	const struct proxy *proxy; /* NULL: straight to the gateway */
	uv_tcp_t server;
	uv_signal_t sigint, sigterm, sighup;
	uv_timer_t grace;
	uv_timer_t keepalive; /* one timer checks every tunnel; runs only while tunnels exist */
	uv_timer_t log_drain; /* runs only while log lines wait for standard error */
	struct tunnel *tunnels; /* doubly linked through tunnel.prev/next */
	size_t count;
	size_t peak; /* most tunnels at once since memory was last handed back */
	uint64_t next_id;
	bool stopping;
	int exit_status; /* with --stdio: 0 when the tunnel ended cleanly */
	uint64_t refused; /* connections refused by --max-connections */
	unsigned fd_limit; /* RLIMIT_NOFILE at start, 0: none */
	unsigned fd_cap;   /* tunnels the descriptor limit leaves room for */
	uint64_t refused_logged_at, accept_error_logged_at;
};

/* Binds, serves until a signal, and returns the process's exit status.
 * proxy, when not NULL, is the HTTP proxy every tunnel goes through. */
int listener_run(const struct tunnel_config *cfg, const struct proxy *proxy);
void listener_tunnel_added(struct listener *l, struct tunnel *t);
/* A tunnel is gone; failed tells whether an error ended it. */
void listener_tunnel_gone(struct listener *l, struct tunnel *t, bool failed);

#endif

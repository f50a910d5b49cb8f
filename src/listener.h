/* listener: the local listening socket, the set of live tunnels, and the
 * process's lifetime (signals, graceful stop).
 *
 * Ownership: one listener per run, on the stack of listener_run (or of a
 * test, on its own loop). It links each tunnel it starts into its list, and
 * unlinks it when the tunnel says it is gone (struct tunnel_owner), as the
 * tunnel frees itself. */
#ifndef OTOROSHICTL_LISTENER_H
#define OTOROSHICTL_LISTENER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "proxy.h"
#include "tls.h"
#include "tunnel.h"

/* How long open tunnels get to finish after SIGINT, SIGTERM or SIGHUP. */
#define LISTENER_STOP_GRACE_MS 2000

struct listener {
	struct tunnel_env env;     /* what every tunnel shares */
	struct tunnel_owner owner; /* how tunnels say they are gone */
	struct tunnel_list tunnels;
	uv_loop_t *loop;
	const struct tunnel_config *cfg;
	uv_tcp_t server;
	/* A connection that cannot get a tunnel (memory ran out) is still
	 * taken off the queue, or libuv would stop watching the server: into
	 * this spare handle, closed at once. */
	uv_tcp_t spare;
	bool spare_busy;
	uv_timer_t retry; /* accepts again once the spare is free */
	uv_signal_t sigint, sigterm, sighup;
	uv_timer_t grace;
	uv_timer_t keepalive; /* one timer checks every tunnel; runs only while tunnels exist */
	uv_timer_t log_drain; /* runs only while log lines wait for standard error */
	size_t count;
	size_t peak; /* most tunnels at once since memory was last handed back */
	bool stopping;
	int exit_status; /* with --stdio: 0 when the tunnel ended cleanly */
	uint64_t refused; /* connections refused by --max-connections */
	unsigned fd_limit; /* RLIMIT_NOFILE at start, 0: none */
	unsigned fd_cap;   /* tunnels the descriptor limit leaves room for */
	uint64_t refused_logged_at, accept_error_logged_at;
};

/* Binds and starts serving on loop: 0, or a negative uv error (logged),
 * after which the loop must still run to close what was opened. The loop
 * runs the tunnels; listener_stop, or a signal, ends it all gracefully, and
 * once the loop has nothing left to run the listener can go. */
int listener_open(struct listener *l, uv_loop_t *loop, const struct tunnel_config *cfg, const struct proxy *proxy,
		  struct tls_setup *tls, struct tls_setup *proxy_tls);
/* No more connections; the open tunnels finish what they carry (for
 * LISTENER_STOP_GRACE_MS at most), then the listener's handles close. */
void listener_stop(struct listener *l);

/* Binds on the default loop, serves until a signal, and returns the
 * process's exit status.
 * proxy, when not NULL, is the proxy every tunnel goes through; tls and
 * proxy_tls the TLS setups of the gateway and of an https:// proxy (or
 * NULL). */
int listener_run(const struct tunnel_config *cfg, const struct proxy *proxy, struct tls_setup *tls,
		 struct tls_setup *proxy_tls);

#endif

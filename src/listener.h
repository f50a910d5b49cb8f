/* listener: the local listening sockets (one per forward), the set of live
 * tunnels, and the process's lifetime (signals, graceful stop, status
 * reports, the service manager's notifications).
 *
 * A run has one or more sources (the command line, or one per profile),
 * each with its gateway, credential and options and one or more forwards
 * (a local address and the remote its tunnels ask for). What is
 * process-wide lives in struct listener: the signals, the keepalive timer,
 * --max-connections and the descriptor cap, the list of tunnels. What is
 * a forward's own lives in struct forward: its listening socket, its
 * spare handle and retry timer, and the environment its tunnels share.
 *
 * Ownership: one listener per run, on the stack of listener_run (or of a
 * test, on its own loop); it owns its forwards (freed once the loop is
 * over, by listener_finish). It links each tunnel it starts into its list,
 * and unlinks it when the tunnel says it is gone (struct tunnel_owner), as
 * the tunnel frees itself. The sources' configs, proxies and TLS setups
 * outlive the listener. */
#ifndef OTOROSHICTL_LISTENER_H
#define OTOROSHICTL_LISTENER_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "proxy.h"
#include "tls.h"
#include "tunnel.h"

/* How long open tunnels get to finish after SIGINT, SIGTERM or SIGHUP. */
#define LISTENER_STOP_GRACE_MS 2000

/* One config and what was built from it. */
struct listener_source {
	const struct tunnel_config *cfg;
	const struct proxy *proxy;   /* NULL: straight to the gateway */
	struct tls_setup *tls;       /* NULL: ws:// */
	struct tls_setup *proxy_tls; /* an https:// proxy's, or NULL */
};

struct listener;

struct forward {
	struct listener *l;
	bool alone; /* its source has no other forward */
	struct tunnel_config cfg; /* the source's, with this forward's addresses */
	struct tunnel_env env;
	uv_tcp_t server;
	bool server_open;
	int passed_fd; /* a socket from systemd, or -1 */
	/* A connection that cannot get a tunnel (memory ran out) is still
	 * taken off the queue, or libuv would stop watching the server: into
	 * this spare handle, closed at once. */
	uv_tcp_t spare;
	bool spare_busy;
	uv_timer_t retry; /* accepts again once the spare is free */
	char where[INET6_ADDRSTRLEN + 16]; /* the bound address */
	char remote[300];
	char name[400]; /* how logs name it when there are several */
};

struct listener {
	struct tunnel_owner owner; /* how tunnels say they are gone */
	struct tunnel_list tunnels;
	uv_loop_t *loop;
	struct forward *forwards;
	size_t n_forwards;
	bool stdio;
	unsigned max_connections; /* process-wide */
	uv_signal_t sigint, sigterm, sighup, sigusr1;
	uv_timer_t grace;
	uv_timer_t keepalive; /* one timer checks every tunnel; runs only while tunnels exist */
	uv_timer_t log_drain; /* runs only while log lines wait for standard error */
	uv_timer_t watchdog;  /* WATCHDOG=1 for systemd, when it asks */
	uv_timer_t status;    /* STATUS= for systemd, a little after a change */
	bool notify;          /* NOTIFY_SOCKET names a service manager */
	bool handles_started;
	size_t count;
	size_t peak; /* most tunnels at once since memory was last handed back */
	bool stopping;
	int exit_status; /* with --stdio: 0 when the tunnel ended cleanly */
	uint64_t refused; /* connections refused by --max-connections */
	unsigned fd_limit; /* RLIMIT_NOFILE at start, 0: none */
	unsigned fd_cap;   /* tunnels the descriptor limit leaves room for */
	uint64_t refused_logged_at, accept_error_logged_at;
	/* Since the start: tunnels carried and the bytes of those that ended. */
	uint64_t carried, ended_sent, ended_received;
	uint64_t next_id; /* tunnel numbers, one sequence for every forward */
};

/* Binds every forward of the sources (or takes the sockets systemd passed)
 * and starts serving on loop: 0, or a negative uv error (logged, naming
 * the forward), after which nothing listens and the loop must still run
 * to close what was opened. The loop runs the tunnels; listener_stop, or a
 * signal, ends it all gracefully, and once the loop has nothing left to
 * run, listener_finish frees the forwards. */
int listener_open_set(struct listener *l, uv_loop_t *loop, const struct listener_source *srcs, size_t n_srcs);
/* Sets the listener and its forwards up without opening anything: for a
 * run that does not listen (--check). 0, or UV_ENOMEM; listener_finish
 * frees. */
int listener_prepare(struct listener *l, uv_loop_t *loop, const struct listener_source *srcs, size_t n_srcs);
/* The same for one source. */
int listener_open(struct listener *l, uv_loop_t *loop, const struct tunnel_config *cfg, const struct proxy *proxy,
		  struct tls_setup *tls, struct tls_setup *proxy_tls);
/* No more connections; the open tunnels finish what they carry (for
 * LISTENER_STOP_GRACE_MS at most), then the listener's handles close. */
void listener_stop(struct listener *l);
/* Logs one line per open tunnel and the totals (SIGUSR1 does it). */
void listener_report(struct listener *l);
void listener_finish(struct listener *l);

/* Serves the sources on the default loop until a signal (or, with
 * --stdio, for the one tunnel), and returns the process's exit status. */
int listener_run(const struct listener_source *srcs, size_t n_srcs);

#endif

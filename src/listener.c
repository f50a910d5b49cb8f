/* listener: bind, accept, signals and the graceful stop; see listener.h. */
#include "listener.h"

#include <fcntl.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netdb.h>
#include <sys/resource.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "tunnel.h"
#include "url.h"

#define FOR_EACH_TUNNEL(l, n, next)                                                              \
	for (struct tunnel_node *n = TAILQ_FIRST(&(l)->tunnels), *next = n ? TAILQ_NEXT(n, entry) : NULL; \
	     n != NULL; n = next, next = n ? TAILQ_NEXT(n, entry) : NULL)

static void on_keepalive_tick(uv_timer_t *timer)
{
	struct listener *l = timer->data;
	uint64_t now = uv_now(l->loop);
	uint64_t interval = (uint64_t)l->cfg->keepalive * 1000;
	FOR_EACH_TUNNEL(l, n, next)
		tunnel_check_alive(tunnel_of(n), now, interval);
}

/* Four checks per interval: a silent gateway is caught between two and
 * two and a quarter intervals after its last word. */
static void keepalive_start(struct listener *l)
{
	if (l->cfg->keepalive == 0 || uv_is_active((uv_handle_t *)&l->keepalive))
		return;
	uint64_t period = (uint64_t)l->cfg->keepalive * 1000 / 4;
	if (period == 0)
		period = 1;
	uv_timer_start(&l->keepalive, on_keepalive_tick, period, period);
}

static void tunnel_added(struct listener *l, struct tunnel *t)
{
	TAILQ_INSERT_TAIL(&l->tunnels, tunnel_node(t), entry);
	l->count++;
	if (l->count > l->peak)
		l->peak = l->count;
	keepalive_start(l);
}

static void close_lifetime_handles(struct listener *l)
{
	log_set_backlog_hook(NULL, NULL);
	uv_close((uv_handle_t *)&l->log_drain, NULL);
	uv_close((uv_handle_t *)&l->retry, NULL);
	uv_close((uv_handle_t *)&l->sigint, NULL);
	uv_close((uv_handle_t *)&l->sigterm, NULL);
	uv_close((uv_handle_t *)&l->sighup, NULL);
	uv_close((uv_handle_t *)&l->grace, NULL);
	uv_close((uv_handle_t *)&l->keepalive, NULL);
}

/* After a busy spell, hand the freed memory back to the system: glibc
 * keeps what tunnels freed in its arenas, so the resident size would stay
 * at its peak. Done when the tunnels have fallen to a quarter of their
 * peak, or to none, so that it costs nothing while traffic goes on. */
static void give_back_memory(struct listener *l)
{
	if (l->count > l->peak)
		l->peak = l->count;
	bool fell = l->peak >= 16 && l->count <= l->peak / 4;
	if (!fell && !(l->count == 0 && l->peak > 0))
		return;
	bufq_pool_drain();
#ifdef __GLIBC__
	malloc_trim(0);
#endif
	log_trace("memory handed back after %zu tunnels fell to %zu", l->peak, l->count);
	l->peak = l->count;
}

static void tunnel_gone(struct tunnel_owner *owner, struct tunnel *t, bool failed)
{
	struct listener *l = (struct listener *)((char *)owner - offsetof(struct listener, owner));
	if (l->cfg->stdio) {
		/* The one tunnel is the whole run. */
		l->exit_status = failed ? 1 : 0;
		l->stopping = true;
	}
	TAILQ_REMOVE(&l->tunnels, tunnel_node(t), entry);
	l->count--;
	give_back_memory(l);
	if (l->count == 0 && !l->stopping)
		uv_timer_stop(&l->keepalive);
	if (l->stopping && l->count == 0)
		close_lifetime_handles(l);
}

/* How many tunnels the open file limit leaves room for: each holds two
 * descriptors, and the loop, the resolver's threads and a refusal need a
 * few more. Refusing past this point keeps accept() from ever running
 * out of descriptors, where it could only fail again and again. */
#define FD_RESERVE 32

/* The limit can change under a running process (prlimit), so it is read
 * again at each connection: one system call next to accept's. */
static void compute_fd_cap(struct listener *l, bool say)
{
	struct rlimit rl;
	l->fd_limit = 0;
	l->fd_cap = UINT32_MAX;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return;
	l->fd_limit = rl.rlim_cur > UINT32_MAX ? UINT32_MAX : (unsigned)rl.rlim_cur;
	l->fd_cap = l->fd_limit > FD_RESERVE + 2 ? (l->fd_limit - FD_RESERVE) / 2 : 1;
	if (say && l->fd_cap < l->cfg->max_connections)
		log_warn("the open file limit (%u, 'ulimit -n') leaves room for %u tunnels, fewer than "
			 "--max-connections %u: more are refused", l->fd_limit, l->fd_cap, l->cfg->max_connections);
}

static void free_handle(uv_handle_t *handle)
{
	free(handle);
}

static void on_spare_closed(uv_handle_t *handle)
{
	struct listener *l = handle->data;
	l->spare_busy = false;
}

/* Takes one connection off the queue into the spare handle and closes it:
 * for when memory runs out. Returns false when the spare is still
 * closing the last one. */
static bool drop_connection(struct listener *l, uv_stream_t *server)
{
	if (l->spare_busy)
		return false;
	l->spare_busy = true;
	uv_tcp_init(l->loop, &l->spare);
	l->spare.data = l;
	uv_accept(server, (uv_stream_t *)&l->spare);
	uv_close((uv_handle_t *)&l->spare, on_spare_closed);
	return true;
}

static void on_connection(uv_stream_t *server, int status);

/* libuv stops watching a server whose connection was not accepted: once
 * the spare is free, the one waiting is taken and watching goes on. */
static void on_retry(uv_timer_t *timer)
{
	struct listener *l = timer->data;
	if (l->stopping)
		return;
	on_connection((uv_stream_t *)&l->server, 0);
}

static void cannot_take(struct listener *l, uv_stream_t *server, int rc)
{
	uint64_t now = uv_now(l->loop);
	if (now - l->accept_error_logged_at >= 1000) {
		log_error("cannot accept a connection: %s", uv_strerror(rc));
		l->accept_error_logged_at = now;
	}
	if (!drop_connection(l, server))
		uv_timer_start(&l->retry, on_retry, 10, 0);
}

/* Takes the connection off the queue and closes it at once, so that the
 * client learns now rather than after a timeout. */
static void refuse(struct listener *l, uv_stream_t *server)
{
	uv_tcp_t *c = malloc(sizeof(*c));
	if (c == NULL || uv_tcp_init(l->loop, c) != 0) {
		free(c);
		cannot_take(l, server, UV_ENOMEM);
		return;
	}
	if (uv_accept(server, (uv_stream_t *)c) == 0) {
		l->refused++;
		/* One line per second at most: a flood must not flood the log. */
		uint64_t now = uv_now(l->loop);
		if (now - l->refused_logged_at >= 1000) {
			if (l->fd_cap < l->cfg->max_connections)
				log_warn("refusing new connections: %zu tunnels are open, as many as the open file "
					 "limit (%u, 'ulimit -n') leaves room for; %" PRIu64 " refused so far",
					 l->count, l->fd_limit, l->refused);
			else
				log_warn("refusing new connections: %zu tunnels are open (--max-connections %u); %" PRIu64
					 " refused so far", l->count, l->cfg->max_connections, l->refused);
			l->refused_logged_at = now;
		}
	}
	uv_close((uv_handle_t *)c, free_handle);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct listener *l = server->data;
	if (status < 0) {
		/* libuv already accepted and closed what it could to get a
		 * descriptor back (EMFILE); say so once a second at most. */
		uint64_t now = uv_now(l->loop);
		if (now - l->accept_error_logged_at >= 1000) {
			log_error("cannot accept a connection: %s%s", uv_strerror(status),
				  status == UV_EMFILE || status == UV_ENFILE
					  ? " (out of file descriptors: raise 'ulimit -n' or lower --max-connections)"
					  : "");
			l->accept_error_logged_at = now;
		}
		return;
	}
	compute_fd_cap(l, false);
	if (l->count >= l->cfg->max_connections || l->count >= l->fd_cap) {
		refuse(l, server);
		return;
	}
	struct tunnel *t;
	int rc = tunnel_start(&l->env, &l->owner, server, &t);
	if (t != NULL)
		tunnel_added(l, t);
	else
		cannot_take(l, server, rc);
}

static void on_grace_over(uv_timer_t *timer)
{
	struct listener *l = timer->data;
	log_debug("%zu tunnel(s) still open after %d s: closing them", l->count, LISTENER_STOP_GRACE_MS / 1000);
	FOR_EACH_TUNNEL(l, n, next)
		tunnel_abort(tunnel_of(n));
}

static const char *signal_name(int signum)
{
	return signum == SIGINT ? "SIGINT" : signum == SIGHUP ? "SIGHUP" : "SIGTERM";
}

void listener_stop(struct listener *l)
{
	if (l->stopping)
		return;
	l->stopping = true;
	if (!l->cfg->stdio)
		uv_close((uv_handle_t *)&l->server, NULL);
	FOR_EACH_TUNNEL(l, n, next)
		tunnel_shutdown(tunnel_of(n));
	if (l->count == 0) {
		close_lifetime_handles(l);
		return;
	}
	uv_timer_start(&l->grace, on_grace_over, LISTENER_STOP_GRACE_MS, 0);
}

static void on_signal(uv_signal_t *sig, int signum)
{
	struct listener *l = sig->data;
	if (l->stopping) {
		/* At once means at once: no exit handlers, no flushing. */
		log_warn("second %s: exiting at once", signal_name(signum));
		_exit(128 + signum);
	}
	log_info("%s received: closing %zu open tunnel(s) and exiting", signal_name(signum),
		 l->count);
	listener_stop(l);
}

/* The address to bind: an IP literal, or a name resolved once at start. */
static int resolve_local(const struct tunnel_config *cfg, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (uv_ip4_addr(cfg->local_host, cfg->local_port, (struct sockaddr_in *)ss) == 0)
		return 0;
	const char *h = cfg->local_host;
	char unbracketed[INET6_ADDRSTRLEN + 2];
	size_t hl = strlen(h);
	if (h[0] == '[' && hl > 2 && hl < sizeof(unbracketed) && h[hl - 1] == ']') {
		memcpy(unbracketed, h + 1, hl - 2);
		unbracketed[hl - 2] = '\0';
		h = unbracketed;
	}
	if (uv_ip6_addr(h, cfg->local_port, (struct sockaddr_in6 *)ss) == 0)
		return 0;
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	int rc = getaddrinfo(h, NULL, &hints, &res);
	if (rc != 0)
		return rc == EAI_NONAME ? UV_EAI_NONAME : UV_EAI_FAIL;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons(cfg->local_port);
	else
		((struct sockaddr_in *)ss)->sin_port = htons(cfg->local_port);
	freeaddrinfo(res);
	return 0;
}

/* The remote as the reference client shows it: HOST:PORT, or what it has of
 * them (HOST, or :PORT), or the route's own target. */
static void format_remote(const struct tunnel_config *cfg, char *out, size_t outlen)
{
	if (cfg->remote_host == NULL && cfg->remote_port == 0) {
		snprintf(out, outlen, "(defined in otoroshi target)");
		return;
	}
	const char *h = cfg->remote_host ? cfg->remote_host : "";
	bool v6 = strchr(h, ':') != NULL && h[0] != '[';
	if (cfg->remote_port != 0)
		snprintf(out, outlen, "%s%s%s:%u", v6 ? "[" : "", h, v6 ? "]" : "", (unsigned)cfg->remote_port);
	else
		snprintf(out, outlen, "%s", h);
}

/* Otoroshi splits the target on ':' (PROTOCOL.md section 6): an IPv6
 * literal cannot reach it. */
static void warn_ipv6_remote(const struct tunnel_config *cfg)
{
	if (cfg->remote_host != NULL && strchr(cfg->remote_host, ':') != NULL)
		log_warn("--remote-host %s is an IPv6 address: Otoroshi splits the route's target on ':' and "
			 "cannot reach it; use a host name that resolves to it", cfg->remote_host);
}

static bool bound_to_loopback(struct listener *l)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	if (uv_tcp_getsockname(&l->server, (struct sockaddr *)&ss, &len) != 0)
		return false;
	if (ss.ss_family == AF_INET)
		return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
	const struct in6_addr *a6 = &((struct sockaddr_in6 *)&ss)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a6))
		return a6->s6_addr[12] == 127;
	return IN6_IS_ADDR_LOOPBACK(a6);
}

static int bind_and_listen(struct listener *l, char *where, size_t wherelen)
{
	const struct tunnel_config *cfg = l->cfg;
	struct sockaddr_storage ss;
	bool v6 = strchr(cfg->local_host, ':') != NULL;
	snprintf(where, wherelen, "%s%s%s:%u", v6 && cfg->local_host[0] != '[' ? "[" : "", cfg->local_host,
		 v6 && cfg->local_host[0] != '[' ? "]" : "", (unsigned)cfg->local_port);
	int rc = resolve_local(cfg, &ss);
	if (rc < 0)
		return rc;
	rc = uv_tcp_init(l->loop, &l->server);
	if (rc < 0)
		return rc;
	l->server.data = l;
	/* libuv reports some bind errors only at listen time: both go to the
	 * same message. */
	rc = uv_tcp_bind(&l->server, (const struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&l->server, 511, on_connection);
	if (rc < 0)
		return rc;
	int len = sizeof(ss);
	if (uv_tcp_getsockname(&l->server, (struct sockaddr *)&ss, &len) == 0)
		url_format_sockaddr((const struct sockaddr *)&ss, where, wherelen);
	return 0;
}

static void on_log_drain(uv_timer_t *timer)
{
	if (log_flush())
		uv_timer_stop(timer);
}

static void on_log_backlog(void *data)
{
	struct listener *l = data;
	if (!uv_is_active((uv_handle_t *)&l->log_drain))
		uv_timer_start(&l->log_drain, on_log_drain, 50, 50);
}

static void start_lifetime_handles(struct listener *l)
{
	uv_timer_init(l->loop, &l->log_drain);
	l->log_drain.data = l;
	uv_timer_init(l->loop, &l->retry);
	l->retry.data = l;
	log_set_backlog_hook(on_log_backlog, l);
	uv_signal_init(l->loop, &l->sigint);
	uv_signal_init(l->loop, &l->sigterm);
	uv_signal_init(l->loop, &l->sighup);
	uv_timer_init(l->loop, &l->grace);
	uv_timer_init(l->loop, &l->keepalive);
	l->sigint.data = l->sigterm.data = l->sighup.data = l->grace.data = l->keepalive.data = l;
	uv_signal_start(&l->sigint, on_signal, SIGINT);
	uv_signal_start(&l->sigterm, on_signal, SIGTERM);
	/* ssh sends SIGHUP to its ProxyCommand when it is done, and a closing
	 * terminal sends it too: both ask for the same graceful stop. */
	uv_signal_start(&l->sighup, on_signal, SIGHUP);
}

/* The loop is over: a last try for the log lines still waiting. */
static int finish_loop(struct listener *l, int status)
{
	uv_loop_close(l->loop);
	log_flush();
	return status;
}

/* --stdio: no listener, one tunnel, and its end is the process's. libuv
 * makes standard input and output non-blocking, and a pipe's description
 * is shared with the commands around us: their flags are put back at the
 * end. */
static int run_stdio(struct listener *l)
{
	int in_flags = fcntl(STDIN_FILENO, F_GETFL), out_flags = fcntl(STDOUT_FILENO, F_GETFL);
	const struct tunnel_config *cfg = l->cfg;
	start_lifetime_handles(l);
	struct tunnel *t = NULL;
	int rc = (cfg->std_closed & 3) ? UV_EBADF : tunnel_start_stdio(&l->env, &l->owner, &t);
	if (t != NULL)
		tunnel_added(l, t);
	if (rc < 0) {
		if (cfg->std_closed & 3)
			log_error("--stdio needs standard input and output, and standard %s closed (as with %s): give the "
				  "tunnel a pipe, a socket or a terminal", (cfg->std_closed & 1) ? "input is" : "output is",
				  (cfg->std_closed & 1) ? "<&-" : ">&-");
		else
			log_error("--stdio needs pipes, sockets or a terminal on standard input and output: %s",
				  rc == UV_EINVAL ? "one of them is a file or a device that cannot be watched (use a pipe: cat FILE | otoroshictl ...)" : uv_strerror(rc));
		l->stopping = true;
		close_lifetime_handles(l);
		uv_run(l->loop, UV_RUN_DEFAULT);
		return finish_loop(l, 1);
	}
	uv_run(l->loop, UV_RUN_DEFAULT);
	if (in_flags >= 0)
		fcntl(STDIN_FILENO, F_SETFL, in_flags);
	if (out_flags >= 0)
		fcntl(STDOUT_FILENO, F_SETFL, out_flags);
	return finish_loop(l, l->exit_status);
}

static void listener_init(struct listener *l, uv_loop_t *loop, const struct tunnel_config *cfg,
			  const struct proxy *proxy, struct tls_setup *tls, struct tls_setup *proxy_tls)
{
	memset(l, 0, sizeof(*l));
	l->loop = loop;
	l->cfg = cfg;
	l->env = (struct tunnel_env){.loop = loop, .cfg = cfg, .proxy = proxy, .tls = tls, .proxy_tls = proxy_tls};
	l->owner.gone = tunnel_gone;
	TAILQ_INIT(&l->tunnels);
}

int listener_open(struct listener *l, uv_loop_t *loop, const struct tunnel_config *cfg, const struct proxy *proxy,
		  struct tls_setup *tls, struct tls_setup *proxy_tls)
{
	listener_init(l, loop, cfg, proxy, tls, proxy_tls);
	warn_ipv6_remote(cfg);
	char where[INET6_ADDRSTRLEN + 16];
	compute_fd_cap(l, true);
	int rc = bind_and_listen(l, where, sizeof(where));
	if (rc < 0) {
		log_error("Failed to bind to %s: %s", where, uv_strerror(rc));
		if (l->server.loop != NULL)
			uv_close((uv_handle_t *)&l->server, NULL);
		return rc;
	}
	char remote[300];
	format_remote(cfg, remote, sizeof(remote));
	log_info("TCP tunnel listening on %s → %s via Otoroshi (%s)", where, remote, cfg->host);
	if (proxy != NULL)
		log_info("Reaching Otoroshi through the HTTP%s proxy %s:%u (from %s)", proxy->tls ? "S" : "", proxy->host,
			 (unsigned)proxy->port, proxy->source);
	if (!bound_to_loopback(l))
		log_warn("listening on %s: anyone who can reach this address uses your credential for %s",
			 where, cfg->host);
	start_lifetime_handles(l);
	log_info("TCP tunnel ready, waiting for connections ...");
	return 0;
}

int listener_run(const struct tunnel_config *cfg, const struct proxy *proxy, struct tls_setup *tls,
		 struct tls_setup *proxy_tls)
{
	struct listener l;
	signal(SIGPIPE, SIG_IGN);
	if (cfg->stdio) {
		listener_init(&l, uv_default_loop(), cfg, proxy, tls, proxy_tls);
		warn_ipv6_remote(cfg);
		return run_stdio(&l);
	}
	int rc = listener_open(&l, uv_default_loop(), cfg, proxy, tls, proxy_tls);
	uv_run(l.loop, UV_RUN_DEFAULT);
	return finish_loop(&l, rc < 0 ? 1 : 0);
}

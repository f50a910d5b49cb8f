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
#include "systemd.h"
#include "tunnel.h"
#include "url.h"

#define FOR_EACH_TUNNEL(l, n, next)                                                              \
	for (struct tunnel_node *n = TAILQ_FIRST(&(l)->tunnels), *next = n ? TAILQ_NEXT(n, entry) : NULL; \
	     n != NULL; n = next, next = n ? TAILQ_NEXT(n, entry) : NULL)

static void on_keepalive_tick(uv_timer_t *timer)
{
	struct listener *l = timer->data;
	uint64_t now = uv_now(l->loop);
	FOR_EACH_TUNNEL(l, n, next)
		tunnel_check_alive(tunnel_of(n), now);
}

/* Four checks per shortest interval: a silent gateway is caught between
 * two and two and a quarter intervals after its last word. */
static void keepalive_start(struct listener *l)
{
	unsigned shortest = 0;
	for (size_t i = 0; i < l->n_forwards; i++) {
		unsigned k = l->forwards[i].cfg.keepalive;
		if (k != 0 && (shortest == 0 || k < shortest))
			shortest = k;
	}
	if (shortest == 0 || uv_is_active((uv_handle_t *)&l->keepalive))
		return;
	uint64_t period = (uint64_t)shortest * 1000 / 4;
	if (period == 0)
		period = 1;
	uv_timer_start(&l->keepalive, on_keepalive_tick, period, period);
}

/* The totals of SIGUSR1's report and of systemd's STATUS=. */
struct totals {
	uint64_t sent, received;
};

static struct totals totals_now(struct listener *l)
{
	struct totals t = {l->ended_sent, l->ended_received};
	uint64_t now = uv_now(l->loop);
	FOR_EACH_TUNNEL(l, n, next) {
		struct tunnel_status st;
		tunnel_get_status(tunnel_of(n), now, &st);
		t.sent += st.bytes_sent;
		t.received += st.bytes_received;
	}
	return t;
}

static void notify_status(struct listener *l)
{
	if (!l->notify)
		return;
	struct totals t = totals_now(l);
	char state[256];
	snprintf(state, sizeof(state), "STATUS=%zu tunnel%s open; %" PRIu64 " carried since start, %" PRIu64
		 " bytes sent, %" PRIu64 " bytes received", l->count, l->count == 1 ? "" : "s", l->carried, t.sent,
		 t.received);
	systemd_notify(state);
}

static void on_status_due(uv_timer_t *timer)
{
	notify_status(timer->data);
}

/* The status changed: systemd hears of it within STATUS_EVERY_MS, once for
 * all the changes in between, so that a burst of connections costs one
 * walk over the tunnels, not one each. */
#define STATUS_EVERY_MS 500

static void status_changed(struct listener *l)
{
	if (l->notify && l->handles_started && !uv_is_active((uv_handle_t *)&l->status))
		uv_timer_start(&l->status, on_status_due, STATUS_EVERY_MS, 0);
}

static void tunnel_added(struct listener *l, struct tunnel *t)
{
	TAILQ_INSERT_TAIL(&l->tunnels, tunnel_node(t), entry);
	l->count++;
	l->carried++;
	if (l->count > l->peak)
		l->peak = l->count;
	keepalive_start(l);
	status_changed(l);
}

static void close_lifetime_handles(struct listener *l)
{
	if (!l->handles_started)
		return;
	l->handles_started = false;
	log_set_backlog_hook(NULL, NULL);
	uv_close((uv_handle_t *)&l->log_drain, NULL);
	uv_close((uv_handle_t *)&l->sigint, NULL);
	uv_close((uv_handle_t *)&l->sigterm, NULL);
	uv_close((uv_handle_t *)&l->sighup, NULL);
	uv_close((uv_handle_t *)&l->sigusr1, NULL);
	uv_close((uv_handle_t *)&l->grace, NULL);
	uv_close((uv_handle_t *)&l->keepalive, NULL);
	uv_close((uv_handle_t *)&l->watchdog, NULL);
	uv_close((uv_handle_t *)&l->status, NULL);
	for (size_t i = 0; i < l->n_forwards; i++)
		uv_close((uv_handle_t *)&l->forwards[i].retry, NULL);
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
	if (l->stdio) {
		/* The one tunnel is the whole run. */
		l->exit_status = failed ? 1 : 0;
		l->stopping = true;
	}
	struct tunnel_status st;
	tunnel_get_status(t, uv_now(l->loop), &st);
	l->ended_sent += st.bytes_sent;
	l->ended_received += st.bytes_received;
	TAILQ_REMOVE(&l->tunnels, tunnel_node(t), entry);
	l->count--;
	give_back_memory(l);
	if (l->count == 0 && !l->stopping)
		uv_timer_stop(&l->keepalive);
	if (l->stopping && l->count == 0)
		close_lifetime_handles(l);
	else if (!l->stopping)
		status_changed(l);
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
	unsigned reserve = FD_RESERVE + (unsigned)l->n_forwards;
	l->fd_cap = l->fd_limit > reserve + 2 ? (l->fd_limit - reserve) / 2 : 1;
	if (say && l->fd_cap < l->max_connections)
		log_warn("the open file limit (%u, 'ulimit -n') leaves room for %u tunnels, fewer than "
			 "--max-connections %u: more are refused", l->fd_limit, l->fd_cap, l->max_connections);
}

static void free_handle(uv_handle_t *handle)
{
	free(handle);
}

static void on_spare_closed(uv_handle_t *handle)
{
	struct forward *f = handle->data;
	f->spare_busy = false;
}

/* Takes one connection off the queue into the spare handle and closes it:
 * for when memory runs out. Returns false when the spare is still
 * closing the last one. */
static bool drop_connection(struct forward *f)
{
	if (f->spare_busy)
		return false;
	f->spare_busy = true;
	uv_tcp_init(f->l->loop, &f->spare);
	f->spare.data = f;
	uv_accept((uv_stream_t *)&f->server, (uv_stream_t *)&f->spare);
	uv_close((uv_handle_t *)&f->spare, on_spare_closed);
	return true;
}

static void on_connection(uv_stream_t *server, int status);

/* libuv stops watching a server whose connection was not accepted: once
 * the spare is free, the one waiting is taken and watching goes on. */
static void on_retry(uv_timer_t *timer)
{
	struct forward *f = timer->data;
	if (f->l->stopping)
		return;
	on_connection((uv_stream_t *)&f->server, 0);
}

static void cannot_take(struct forward *f, int rc)
{
	struct listener *l = f->l;
	uint64_t now = uv_now(l->loop);
	if (now - l->accept_error_logged_at >= 1000) {
		log_error("cannot accept a connection%s%s: %s", f->env.name ? " on " : "", f->env.name ? f->env.name : "",
			  uv_strerror(rc));
		l->accept_error_logged_at = now;
	}
	if (!drop_connection(f))
		uv_timer_start(&f->retry, on_retry, 10, 0);
}

/* Takes the connection off the queue and closes it at once, so that the
 * client learns now rather than after a timeout. */
static void refuse(struct forward *f)
{
	struct listener *l = f->l;
	uv_tcp_t *c = malloc(sizeof(*c));
	if (c == NULL || uv_tcp_init(l->loop, c) != 0) {
		free(c);
		cannot_take(f, UV_ENOMEM);
		return;
	}
	if (uv_accept((uv_stream_t *)&f->server, (uv_stream_t *)c) == 0) {
		l->refused++;
		/* One line per second at most: a flood must not flood the log. */
		uint64_t now = uv_now(l->loop);
		if (now - l->refused_logged_at >= 1000) {
			if (l->fd_cap < l->max_connections)
				log_warn("refusing new connections: %zu tunnels are open, as many as the open file "
					 "limit (%u, 'ulimit -n') leaves room for; %" PRIu64 " refused so far",
					 l->count, l->fd_limit, l->refused);
			else
				log_warn("refusing new connections: %zu tunnels are open (--max-connections %u); %" PRIu64
					 " refused so far", l->count, l->max_connections, l->refused);
			l->refused_logged_at = now;
		}
	}
	uv_close((uv_handle_t *)c, free_handle);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct forward *f = server->data;
	struct listener *l = f->l;
	if (status < 0) {
		/* libuv already accepted and closed what it could to get a
		 * descriptor back (EMFILE); say so once a second at most. */
		uint64_t now = uv_now(l->loop);
		if (now - l->accept_error_logged_at >= 1000) {
			log_error("cannot accept a connection%s%s: %s%s", f->env.name ? " on " : "",
				  f->env.name ? f->env.name : "", uv_strerror(status),
				  status == UV_EMFILE || status == UV_ENFILE
					  ? " (out of file descriptors: raise 'ulimit -n' or lower --max-connections)"
					  : "");
			l->accept_error_logged_at = now;
		}
		return;
	}
	compute_fd_cap(l, false);
	if (l->count >= l->max_connections || l->count >= l->fd_cap) {
		refuse(f);
		return;
	}
	struct tunnel *t;
	int rc = tunnel_start(&f->env, &l->owner, server, &t);
	if (t != NULL)
		tunnel_added(l, t);
	else
		cannot_take(f, rc);
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

static void close_servers(struct listener *l)
{
	for (size_t i = 0; i < l->n_forwards; i++) {
		struct forward *f = &l->forwards[i];
		if (f->server_open && !uv_is_closing((uv_handle_t *)&f->server))
			uv_close((uv_handle_t *)&f->server, NULL);
	}
}

void listener_stop(struct listener *l)
{
	if (l->stopping)
		return;
	l->stopping = true;
	uv_timer_stop(&l->status);
	systemd_notify("STOPPING=1");
	close_servers(l);
	FOR_EACH_TUNNEL(l, n, next)
		tunnel_shutdown(tunnel_of(n));
	if (l->count == 0) {
		close_lifetime_handles(l);
		return;
	}
	uv_timer_start(&l->grace, on_grace_over, LISTENER_STOP_GRACE_MS, 0);
}

static void format_ms(uint64_t ms, char *out, size_t outlen)
{
	snprintf(out, outlen, "%" PRIu64 ".%03u s", ms / 1000, (unsigned)(ms % 1000));
}

void listener_report(struct listener *l)
{
	uint64_t now = uv_now(l->loop);
	FOR_EACH_TUNNEL(l, n, next) {
		struct tunnel_status st;
		tunnel_get_status(tunnel_of(n), now, &st);
		char age[32];
		format_ms(st.age_ms, age, sizeof(age));
		/* A NULL forward is left out of the JSON line. */
		struct log_field f[] = {
			LOG_STR("peer", st.addr), LOG_STR("forward", st.forward), LOG_STR("state", st.state),
			LOG_INT("age_ms", st.age_ms), LOG_INT("bytes_sent", st.bytes_sent),
			LOG_INT("bytes_received", st.bytes_received),
		};
		log_report(f, sizeof(f) / sizeof(f[0]),
			   "Tunnel from %s%s%s%s: %s, open for %s, %" PRIu64 " bytes sent, %" PRIu64 " bytes received",
			   st.addr, st.forward ? " [" : "", st.forward ? st.forward : "", st.forward ? "]" : "", st.state,
			   age, st.bytes_sent, st.bytes_received);
	}
	struct totals t = totals_now(l);
	struct log_field f[] = {
		LOG_INT("tunnels_open", l->count), LOG_INT("max_connections", l->max_connections),
		LOG_INT("tunnels_carried", l->carried), LOG_INT("bytes_sent", t.sent),
		LOG_INT("bytes_received", t.received),
	};
	log_report(f, sizeof(f) / sizeof(f[0]),
		   "Status: %zu tunnel%s open (--max-connections %u); %" PRIu64 " carried since start, %" PRIu64
		   " bytes sent, %" PRIu64 " bytes received",
		   l->count, l->count == 1 ? "" : "s", l->max_connections, l->carried, t.sent, t.received);
	notify_status(l);
}

static void on_signal(uv_signal_t *sig, int signum)
{
	struct listener *l = sig->data;
	if (signum == SIGUSR1) {
		listener_report(l);
		return;
	}
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
static int resolve_local(const char *host, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
		return 0;
	const char *h = host;
	char unbracketed[INET6_ADDRSTRLEN + 2];
	size_t hl = strlen(h);
	if (h[0] == '[' && hl > 2 && hl < sizeof(unbracketed) && h[hl - 1] == ']') {
		memcpy(unbracketed, h + 1, hl - 2);
		unbracketed[hl - 2] = '\0';
		h = unbracketed;
	}
	if (uv_ip6_addr(h, port, (struct sockaddr_in6 *)ss) == 0)
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
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)ss)->sin_port = htons(port);
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

static bool bound_to_loopback(struct forward *f)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	if (uv_tcp_getsockname(&f->server, (struct sockaddr *)&ss, &len) != 0)
		return false;
	if (ss.ss_family == AF_INET)
		return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
	const struct in6_addr *a6 = &((struct sockaddr_in6 *)&ss)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a6))
		return a6->s6_addr[12] == 127;
	return IN6_IS_ADDR_LOOPBACK(a6);
}

static void format_local(const struct tunnel_config *cfg, char *where, size_t wherelen)
{
	bool v6 = strchr(cfg->local_host, ':') != NULL && cfg->local_host[0] != '[';
	snprintf(where, wherelen, "%s%s%s:%u", v6 ? "[" : "", cfg->local_host, v6 ? "]" : "",
		 (unsigned)cfg->local_port);
}

/* Listens on the forward's address, or on the socket systemd passed. */
static int bind_and_listen(struct forward *f)
{
	const struct tunnel_config *cfg = &f->cfg;
	struct sockaddr_storage ss;
	int rc;
	if (f->passed_fd < 0 && (rc = resolve_local(cfg->local_host, cfg->local_port, &ss)) < 0)
		return rc;
	rc = uv_tcp_init(f->l->loop, &f->server);
	if (rc < 0)
		return rc;
	f->server_open = true;
	f->server.data = f;
	/* libuv reports some bind errors only at listen time: both go to the
	 * same message. */
	if (f->passed_fd >= 0) {
		rc = uv_tcp_open(&f->server, f->passed_fd);
		if (rc == 0)
			f->passed_fd = -1; /* the handle owns it now */
	} else {
		rc = uv_tcp_bind(&f->server, (const struct sockaddr *)&ss, 0);
	}
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&f->server, 511, on_connection);
	if (rc < 0)
		return rc;
	int len = sizeof(ss);
	if (uv_tcp_getsockname(&f->server, (struct sockaddr *)&ss, &len) == 0)
		url_format_sockaddr((const struct sockaddr *)&ss, f->where, sizeof(f->where));
	return 0;
}

static bool same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

/* Which forward a socket from systemd serves: the one its
 * FileDescriptorName= names (a profile with one forward; systemd allows no
 * ':' in a name, so a forward's spec cannot be one), else the one whose
 * address it is bound to, else the only one. */
static struct forward *match_socket(struct listener *l, const struct systemd_socket *s,
				    const struct sockaddr_storage *bound)
{
	for (size_t i = 0; i < l->n_forwards; i++) {
		struct forward *f = &l->forwards[i];
		if (f->passed_fd >= 0 || s->name[0] == '\0')
			continue;
		if (f->alone && f->cfg.profile != NULL && strcmp(s->name, f->cfg.profile) == 0)
			return f;
	}
	for (size_t i = 0; i < l->n_forwards; i++) {
		struct forward *f = &l->forwards[i];
		struct sockaddr_storage want;
		if (f->passed_fd < 0 && f->cfg.local_port != 0 &&
		    resolve_local(f->cfg.local_host, f->cfg.local_port, &want) == 0 && same_address(&want, bound))
			return f;
	}
	if (l->n_forwards == 1 && l->forwards[0].passed_fd < 0)
		return &l->forwards[0];
	return NULL;
}

/* Hands each socket systemd passed to its forward; a socket that serves
 * none is closed, with a warning. */
static int take_passed_sockets(struct listener *l)
{
	struct systemd_socket *socks;
	char err[300];
	int n = systemd_sockets(&socks, err, sizeof(err));
	if (n < 0) {
		log_error("%s", err);
		return UV_EINVAL;
	}
	for (int i = 0; i < n; i++) {
		struct sockaddr_storage bound;
		socklen_t len = sizeof(bound);
		char where[INET6_ADDRSTRLEN + 16] = "?";
		int listening = 0;
		socklen_t ll = sizeof(listening);
		memset(&bound, 0, sizeof(bound));
		if (getsockname(socks[i].fd, (struct sockaddr *)&bound, &len) != 0 ||
		    (bound.ss_family != AF_INET && bound.ss_family != AF_INET6) ||
		    getsockopt(socks[i].fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) != 0 || !listening) {
			log_warn("systemd passed descriptor %d (%s) that is not a listening TCP socket: closing it "
				 "(the socket unit wants ListenStream= with an address and a port)", socks[i].fd,
				 socks[i].name[0] ? socks[i].name : "unnamed");
			close(socks[i].fd);
			continue;
		}
		url_format_sockaddr((const struct sockaddr *)&bound, where, sizeof(where));
		struct forward *f = match_socket(l, &socks[i], &bound);
		if (f == NULL) {
			log_warn("systemd passed the socket %s (%s) that no forward listens on: closing it; name it "
				 "after a profile (FileDescriptorName=) or give it a forward's address", where,
				 socks[i].name[0] ? socks[i].name : "unnamed");
			close(socks[i].fd);
			continue;
		}
		f->passed_fd = socks[i].fd;
		log_debug("the socket %s from systemd (%s) serves %s", where, socks[i].name, f->remote);
	}
	free(socks);
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

static void on_watchdog(uv_timer_t *timer)
{
	(void)timer;
	systemd_notify("WATCHDOG=1");
}

static void start_lifetime_handles(struct listener *l)
{
	uv_timer_init(l->loop, &l->log_drain);
	l->log_drain.data = l;
	log_set_backlog_hook(on_log_backlog, l);
	uv_signal_t *sigs[] = {&l->sigint, &l->sigterm, &l->sighup, &l->sigusr1};
	/* ssh sends SIGHUP to its ProxyCommand when it is done, and a closing
	 * terminal sends it too: both ask for the same graceful stop. SIGUSR1
	 * asks for a report, as dd's does. */
	int signums[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1};
	for (int i = 0; i < 4; i++) {
		uv_signal_init(l->loop, sigs[i]);
		sigs[i]->data = l;
		uv_signal_start(sigs[i], on_signal, signums[i]);
	}
	uv_timer_init(l->loop, &l->grace);
	uv_timer_init(l->loop, &l->keepalive);
	uv_timer_init(l->loop, &l->watchdog);
	uv_timer_init(l->loop, &l->status);
	l->grace.data = l->keepalive.data = l->watchdog.data = l->status.data = l;
	l->notify = systemd_built_in() && getenv("NOTIFY_SOCKET") != NULL;
	uint64_t wd = systemd_watchdog_usec();
	if (wd > 0) {
		uint64_t every = wd / 2000 > 0 ? wd / 2000 : 1;
		uv_timer_start(&l->watchdog, on_watchdog, every, every);
	}
	for (size_t i = 0; i < l->n_forwards; i++) {
		uv_timer_init(l->loop, &l->forwards[i].retry);
		l->forwards[i].retry.data = &l->forwards[i];
	}
	l->handles_started = true;
}

/* The loop is over: a last try for the log lines still waiting. */
static int finish_loop(struct listener *l, int status)
{
	/* libuv put SIGUSR1's default action (the end of the process) back
	 * when its handle closed. */
	signal(SIGUSR1, SIG_IGN);
	uv_loop_close(l->loop);
	log_flush();
	listener_finish(l);
	return status;
}

/* --stdio: no listener, one tunnel, and its end is the process's. libuv
 * makes standard input and output non-blocking, and a pipe's description
 * is shared with the commands around us: their flags are put back at the
 * end. */
static int run_stdio(struct listener *l)
{
	int in_flags = fcntl(STDIN_FILENO, F_GETFL), out_flags = fcntl(STDOUT_FILENO, F_GETFL);
	struct forward *f = &l->forwards[0];
	const struct tunnel_config *cfg = &f->cfg;
	start_lifetime_handles(l);
	struct tunnel *t = NULL;
	int rc = (cfg->std_closed & 3) ? UV_EBADF : tunnel_start_stdio(&f->env, &l->owner, &t);
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

/* A config's forwards: its list, or the one its four options make. */
static size_t forwards_of(const struct tunnel_config *cfg, struct forward_spec *one, const struct forward_spec **out)
{
	if (cfg->n_forwards > 0) {
		*out = cfg->forwards;
		return cfg->n_forwards;
	}
	*one = (struct forward_spec){cfg->local_host, cfg->local_port, cfg->remote_host, cfg->remote_port, NULL};
	*out = one;
	return 1;
}

int listener_prepare(struct listener *l, uv_loop_t *loop, const struct listener_source *srcs, size_t n_srcs)
{
	memset(l, 0, sizeof(*l));
	l->loop = loop;
	l->owner.gone = tunnel_gone;
	TAILQ_INIT(&l->tunnels);
	l->stdio = srcs[0].cfg->stdio;
	l->max_connections = srcs[0].cfg->max_connections;
	size_t total = 0;
	for (size_t i = 0; i < n_srcs; i++) {
		struct forward_spec one;
		const struct forward_spec *specs;
		total += forwards_of(srcs[i].cfg, &one, &specs);
	}
	l->forwards = calloc(total, sizeof(*l->forwards));
	if (l->forwards == NULL)
		return UV_ENOMEM;
	for (size_t i = 0; i < n_srcs; i++) {
		struct forward_spec one;
		const struct forward_spec *specs;
		size_t n = forwards_of(srcs[i].cfg, &one, &specs);
		for (size_t k = 0; k < n; k++) {
			struct forward *f = &l->forwards[l->n_forwards++];
			f->l = l;
			f->alone = n == 1;
			f->passed_fd = -1;
			f->cfg = *srcs[i].cfg;
			f->cfg.n_owned = 0; /* the source keeps its strings */
			f->cfg.local_host = specs[k].local_host;
			f->cfg.local_port = specs[k].local_port;
			f->cfg.remote_host = specs[k].remote_host;
			f->cfg.remote_port = specs[k].remote_port;
			f->cfg.forwards[0] = specs[k];
			f->cfg.n_forwards = 1;
			f->env = (struct tunnel_env){.loop = loop, .cfg = &f->cfg, .proxy = srcs[i].proxy,
						     .tls = srcs[i].tls, .proxy_tls = srcs[i].proxy_tls,
						     .ids = &l->next_id};
			format_local(&f->cfg, f->where, sizeof(f->where));
			format_remote(&f->cfg, f->remote, sizeof(f->remote));
		}
	}
	return 0;
}

/* Names the forward once its address is known: a profile's own name when
 * it is the profile's only forward, else its addresses. */
static void name_forward(struct forward *f)
{
	if (f->l->n_forwards < 2)
		return;
	if (f->cfg.profile != NULL && f->alone)
		snprintf(f->name, sizeof(f->name), "%s", f->cfg.profile);
	else
		snprintf(f->name, sizeof(f->name), "%s \u2192 %s", f->where, f->remote);
	f->env.name = f->name;
}

/* The forward's place in the logs of a failure: its profile, its spec. */
static void describe_forward(const struct forward *f, char *out, size_t outlen)
{
	out[0] = '\0';
	if (f->l->n_forwards < 2)
		return;
	const char *spec = f->cfg.forwards[0].spec;
	snprintf(out, outlen, " (forward %zu of %zu%s%s%s%s)", (size_t)(f - f->l->forwards) + 1, f->l->n_forwards,
		 f->cfg.profile ? ", profile " : "", f->cfg.profile ? f->cfg.profile : "", spec ? ", " : "",
		 spec ? spec : "");
}

int listener_open_set(struct listener *l, uv_loop_t *loop, const struct listener_source *srcs, size_t n_srcs)
{
	int rc = listener_prepare(l, loop, srcs, n_srcs);
	if (rc < 0) {
		log_error("out of memory for the listeners");
		return rc;
	}
	compute_fd_cap(l, true);
	if ((rc = take_passed_sockets(l)) < 0)
		return rc;
	for (size_t i = 0; i < l->n_forwards; i++) {
		struct forward *f = &l->forwards[i];
		rc = bind_and_listen(f);
		if (rc < 0) {
			char which[600];
			describe_forward(f, which, sizeof(which));
			log_error("Failed to bind to %s%s: %s", f->where, which, uv_strerror(rc));
			/* Nothing listens unless everything does. */
			close_servers(l);
			for (size_t k = 0; k < l->n_forwards; k++)
				if (l->forwards[k].passed_fd >= 0)
					close(l->forwards[k].passed_fd);
			return rc;
		}
		name_forward(f);
	}
	for (size_t i = 0; i < l->n_forwards; i++) {
		struct forward *f = &l->forwards[i];
		bool profile_name = f->env.name != NULL && f->cfg.profile != NULL && strcmp(f->name, f->cfg.profile) == 0;
		warn_ipv6_remote(&f->cfg);
		log_info("TCP tunnel listening on %s \u2192 %s via Otoroshi (%s)%s%s%s", f->where, f->remote, f->cfg.host,
			 profile_name ? " [" : "", profile_name ? f->name : "", profile_name ? "]" : "");
		if (!bound_to_loopback(f))
			log_warn("listening on %s: anyone who can reach this address uses your credential for %s",
				 f->where, f->cfg.host);
	}
	for (size_t i = 0; i < n_srcs; i++) {
		const struct tunnel_config *cfg = srcs[i].cfg;
		if (cfg->connect_name[0] != '\0') {
			bool v6 = strchr(cfg->connect_name, ':') != NULL;
			log_info("Connecting to %s%s%s:%u for Otoroshi (%s)%s%s (--connect-to)", v6 ? "[" : "",
				 cfg->connect_name, v6 ? "]" : "", (unsigned)cfg->connect_port, cfg->host,
				 n_srcs > 1 ? " for profile " : "", n_srcs > 1 ? cfg->profile : "");
		}
		const struct proxy *proxy = srcs[i].proxy;
		if (proxy != NULL)
			log_info("Reaching Otoroshi%s%s through the HTTP%s proxy %s:%u (from %s)",
				 n_srcs > 1 ? " for profile " : "", n_srcs > 1 ? srcs[i].cfg->profile : "",
				 proxy->tls ? "S" : "", proxy->host, (unsigned)proxy->port, proxy->source);
	}
	start_lifetime_handles(l);
	log_info("TCP tunnel ready, waiting for connections ...");
	char ready[128];
	snprintf(ready, sizeof(ready), "READY=1\nSTATUS=listening on %zu address%s, no tunnel open", l->n_forwards,
		 l->n_forwards == 1 ? "" : "es");
	systemd_notify(ready);
	return 0;
}

int listener_open(struct listener *l, uv_loop_t *loop, const struct tunnel_config *cfg, const struct proxy *proxy,
		  struct tls_setup *tls, struct tls_setup *proxy_tls)
{
	struct listener_source src = {cfg, proxy, tls, proxy_tls};
	return listener_open_set(l, loop, &src, 1);
}

void listener_finish(struct listener *l)
{
	free(l->forwards);
	l->forwards = NULL;
	l->n_forwards = 0;
}

int listener_run(const struct listener_source *srcs, size_t n_srcs)
{
	struct listener l;
	signal(SIGPIPE, SIG_IGN);
	/* Until its handle is up, a report asked for must not end the process. */
	signal(SIGUSR1, SIG_IGN);
	if (srcs[0].cfg->stdio) {
		if (listener_prepare(&l, uv_default_loop(), srcs, 1) < 0) {
			log_error("out of memory for the tunnel");
			return 1;
		}
		warn_ipv6_remote(srcs[0].cfg);
		return run_stdio(&l);
	}
	int rc = listener_open_set(&l, uv_default_loop(), srcs, n_srcs);
	uv_run(l.loop, UV_RUN_DEFAULT);
	return finish_loop(&l, rc < 0 ? 1 : 0);
}

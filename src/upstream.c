/* upstream: resolve, connect (every address in turn), read, write, close;
 * see upstream.h. */
#include "upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "tcpinfo.h"
#include "url.h"

static void try_next(struct upstream *u);

void upstream_init(struct upstream *u, uv_loop_t *loop, const struct upstream_callbacks *cb, void *user)
{
	memset(u, 0, sizeof(*u));
	u->loop = loop;
	u->cb = *cb;
	u->user = user;
	u->state = UPSTREAM_IDLE;
	u->gai.data = u;
	u->creq.data = u;
	u->tcp.data = u;
}

void upstream_use_tls(struct upstream *u, const char *name)
{
	u->use_tls = true;
	u->tls_name = name;
}

void upstream_use_proxy(struct upstream *u, const struct proxy *proxy)
{
	u->proxy = proxy;
}

void upstream_use_probes(struct upstream *u, unsigned seconds)
{
	u->probe_every = seconds;
}

void upstream_sample(const struct upstream *u, struct liveness_sample *s)
{
	*s = (struct liveness_sample){0};
	if (u->state != UPSTREAM_CONNECTED)
		return;
	s->written = writer_progress(&u->w);
	s->queued = upstream_pending(u);
	uv_os_fd_t fd;
	if (uv_fileno((const uv_handle_t *)&u->tcp, &fd) == 0)
		tcpinfo_sample(fd, s);
}

bool upstream_tls_resumed(const struct upstream *u)
{
	return u->tls != NULL && tls_conn_resumed(u->tls);
}

static void finish_close(struct upstream *u)
{
	if (u->state != UPSTREAM_CLOSING || u->tcp_live || u->addrs != NULL)
		return;
	writer_finish(&u->w);
	bufq_finish(&u->plain);
	tls_conn_destroy(u->tls);
	u->tls = NULL;
	free(u->answer);
	u->answer = NULL;
	u->state = UPSTREAM_CLOSED;
	u->cb.on_closed(u->user);
}

static void on_write_done(struct writer *w, int status)
{
	struct upstream *u = (struct upstream *)((char *)w - offsetof(struct upstream, w));
	if (u->state == UPSTREAM_CONNECTED)
		u->cb.on_written(u->user, status);
}

static void ended(struct upstream *u, int status)
{
	uv_read_stop((uv_stream_t *)&u->tcp);
	u->reading = false;
	u->cb.on_end(u->user, status);
}

/* Decrypts what has been fed and hands the plaintext on. */
static void tls_deliver(struct upstream *u)
{
	static uint8_t plain[16384 + 256];
	while (u->state == UPSTREAM_CONNECTED) {
		int n = tls_conn_read(u->tls, plain, sizeof(plain));
		if (n > 0) {
			u->cb.on_read(u->user, plain, (size_t)n);
			continue;
		}
		if (n == TLS_CLOSED) {
			ended(u, UV_EOF);
		} else if (n == TLS_ERR) {
			char why[320];
			tls_conn_describe_error(u->tls, why, sizeof(why));
			log_warn("TLS error from Otoroshi at %s: %s", u->peer, why);
			ended(u, UV_EPROTO);
		}
		return;
	}
}

static void tls_progress(struct upstream *u)
{
	int rc = tls_conn_handshake(u->tls);
	if (rc == TLS_WANT_READ) {
		writer_flush(&u->w);
		return;
	}
	if (rc == TLS_ERR) {
		char why[320];
		tls_conn_describe_error(u->tls, why, sizeof(why));
		uv_read_stop((uv_stream_t *)&u->tcp);
		u->reading = false;
		u->state = UPSTREAM_IDLE;
		u->cb.on_connect(u->user, UV_EPROTO, "tls", why);
		return;
	}
	u->state = UPSTREAM_CONNECTED;
	uv_read_stop((uv_stream_t *)&u->tcp);
	u->reading = false;
	log_debug("TLS to %s established%s", u->peer, tls_conn_resumed(u->tls) ? " (session resumed)" : "");
	u->cb.on_connect(u->user, 0, "tls", NULL);
	/* Records that came with the end of the handshake. */
	if (u->state == UPSTREAM_CONNECTED)
		tls_deliver(u);
}

static void through_proxy(struct upstream *u, const uint8_t *data, size_t len);

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct upstream *u = stream->data;
	if (nread < 0) {
		if (u->state == UPSTREAM_PROXYING) {
			uv_read_stop(stream);
			u->reading = false;
			u->state = UPSTREAM_IDLE;
			u->cb.on_connect(u->user, (int)nread, "proxy", "the proxy closed the connection before answering CONNECT");
			return;
		}
		if (u->state == UPSTREAM_SECURING) {
			uv_read_stop(stream);
			u->reading = false;
			u->state = UPSTREAM_IDLE;
			u->cb.on_connect(u->user, (int)nread, "tls",
					 tls_setup_has_identity()
						 ? "the gateway closed the connection during the TLS handshake "
						   "(does it accept --client-cert?)"
						 : "the gateway closed the connection during the TLS handshake; if it "
						   "wants a client certificate, give --client-cert and --client-key (or, if "
						   "the port does not speak TLS, leave out --tls)");
			return;
		}
		ended(u, (int)nread);
		return;
	}
	if (nread == 0)
		return;
	if (u->state == UPSTREAM_PROXYING) {
		through_proxy(u, (const uint8_t *)buf->base, (size_t)nread);
		return;
	}
	if (u->tls == NULL) {
		u->cb.on_read(u->user, (const uint8_t *)buf->base, (size_t)nread);
		return;
	}
	tls_conn_feed(u->tls, (const uint8_t *)buf->base, (size_t)nread);
	if (u->state == UPSTREAM_SECURING)
		tls_progress(u);
	else
		tls_deliver(u);
	tls_conn_feed(u->tls, NULL, 0);
}

static int tls_out(void *user, const uint8_t *data, size_t len)
{
	struct upstream *u = user;
	return writer_push(&u->w, data, len) == 0 ? 0 : -1;
}

static void start_tls(struct upstream *u)
{
	u->tls = tls_conn_create(u->tls_name, tls_out, u);
	if (u->tls == NULL) {
		u->state = UPSTREAM_IDLE;
		u->cb.on_connect(u->user, UV_ENOMEM, "tls", "out of memory");
		return;
	}
	u->state = UPSTREAM_SECURING;
	int rc = uv_read_start((uv_stream_t *)&u->tcp, writer_alloc_read_buffer, on_read);
	if (rc < 0) {
		u->state = UPSTREAM_IDLE;
		u->cb.on_connect(u->user, rc, "tls", NULL);
		return;
	}
	u->reading = true;
	tls_progress(u);
}

/* After TCP (and CONNECT): TLS when asked for, else ready. */
static void secure_or_ready(struct upstream *u)
{
	if (u->use_tls) {
		start_tls(u);
		return;
	}
	u->state = UPSTREAM_CONNECTED;
	u->cb.on_connect(u->user, 0, "connect", NULL);
}

static void send_connect(struct upstream *u)
{
	char head[600];
	int n = proxy_build_connect(head, sizeof(head), u->proxy, u->target_name, u->target_port);
	u->answer = calloc(1, sizeof(*u->answer));
	int rc = u->answer == NULL || n < 0 || (size_t)n >= sizeof(head) ? UV_ENOMEM
		 : writer_push(&u->w, head, (size_t)n);
	memset(head, 0, sizeof(head)); /* it held the proxy credential */
	if (rc == 0)
		rc = writer_flush(&u->w);
	if (rc == 0)
		rc = uv_read_start((uv_stream_t *)&u->tcp, writer_alloc_read_buffer, on_read);
	if (rc < 0) {
		u->state = UPSTREAM_IDLE;
		u->cb.on_connect(u->user, rc, "proxy", NULL);
		return;
	}
	u->reading = true;
	u->state = UPSTREAM_PROXYING;
	log_debug("asking the proxy %s for a tunnel to %s:%u", u->peer, u->target_name, (unsigned)u->target_port);
}

static void through_proxy(struct upstream *u, const uint8_t *data, size_t len)
{
	size_t used = 0;
	int status = 0;
	char reason[96] = "";
	int rc = proxy_answer_feed(u->answer, data, len, &used, &status, reason, sizeof(reason));
	if (rc == 0)
		return;
	uv_read_stop((uv_stream_t *)&u->tcp);
	u->reading = false;
	free(u->answer);
	u->answer = NULL;
	if (rc < 0 || status < 200 || status > 299) {
		char why[400];
		const char *hint = rc < 0 ? NULL : proxy_refusal_hint(status);
		if (rc < 0)
			snprintf(why, sizeof(why), "the proxy's answer to CONNECT is not HTTP");
		else
			snprintf(why, sizeof(why), "the proxy answered %d%s%s to CONNECT%s%s", status, reason[0] ? " " : "",
				 reason, hint ? " — " : "", hint ? hint : "");
		u->state = UPSTREAM_IDLE;
		u->cb.on_connect(u->user, UV_ECONNREFUSED, "proxy", why);
		return;
	}
	log_debug("the proxy %s opened a tunnel to %s:%u", u->peer, u->target_name, (unsigned)u->target_port);
	/* The gateway cannot speak before this side does (TLS and the
	 * upgrade both start with the client), so bytes after the answer
	 * are the proxy's own and are not passed on. */
	if (used < len)
		log_debug("ignoring %zu bytes the proxy sent after its answer", len - used);
	secure_or_ready(u);
}

static void on_connected(uv_connect_t *req, int status)
{
	struct upstream *u = req->data;
	if (u->state != UPSTREAM_CONNECTING)
		return; /* closed meanwhile: the close callback finishes up */
	if (status < 0) {
		u->last_error = status;
		log_debug("connecting to %s failed: %s", u->peer, uv_strerror(status));
		try_next(u);
		return;
	}
	uv_freeaddrinfo(u->addrs);
	u->addrs = u->next = NULL;
	uv_tcp_nodelay(&u->tcp, 1);
	uv_os_fd_t fd;
	if (u->probe_every > 0 && uv_fileno((const uv_handle_t *)&u->tcp, &fd) == 0 &&
	    tcpinfo_keepalive(fd, u->probe_every) != 0)
		log_debug("cannot turn TCP keepalive probes on for %s", u->peer);
	writer_init(&u->w, (uv_stream_t *)&u->tcp, on_write_done);
	if (u->proxy != NULL) {
		send_connect(u);
		return;
	}
	secure_or_ready(u);
}

static void on_attempt_closed(uv_handle_t *handle)
{
	struct upstream *u = handle->data;
	u->tcp_live = false;
	if (u->state == UPSTREAM_CLOSING) {
		if (u->addrs != NULL) {
			uv_freeaddrinfo(u->addrs);
			u->addrs = u->next = NULL;
		}
		finish_close(u);
		return;
	}
	try_next(u);
}

/* Connects to the next address, or reports the last failure. */
static void try_next(struct upstream *u)
{
	if (u->tcp_live) {
		/* A handle whose connect failed cannot be reused: close it and
		 * come back here from its close callback. */
		uv_close((uv_handle_t *)&u->tcp, on_attempt_closed);
		return;
	}
	while (u->next != NULL) {
		struct addrinfo *ai = u->next;
		u->next = ai->ai_next;
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		url_format_sockaddr(ai->ai_addr, u->peer, sizeof(u->peer));
		int rc = uv_tcp_init(u->loop, &u->tcp);
		if (rc < 0) {
			u->last_error = rc;
			continue;
		}
		u->tcp_live = true;
		u->tcp.data = u;
		log_trace("connecting to %s", u->peer);
		rc = uv_tcp_connect(&u->creq, &u->tcp, ai->ai_addr, on_connected);
		if (rc == 0)
			return;
		u->last_error = rc;
		uv_close((uv_handle_t *)&u->tcp, on_attempt_closed);
		return;
	}
	uv_freeaddrinfo(u->addrs);
	u->addrs = NULL;
	u->state = UPSTREAM_IDLE;
	u->cb.on_connect(u->user, u->last_error ? u->last_error : UV_ECONNREFUSED, "connect", NULL);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct upstream *u = req->data;
	if (u->state == UPSTREAM_CLOSING) {
		if (res != NULL)
			uv_freeaddrinfo(res);
		finish_close(u);
		return;
	}
	if (status < 0) {
		u->state = UPSTREAM_IDLE;
		u->cb.on_connect(u->user, status, "resolve", NULL);
		return;
	}
	u->addrs = u->next = res;
	u->state = UPSTREAM_CONNECTING;
	u->last_error = 0;
	try_next(u);
}

int upstream_connect(struct upstream *u, const char *name, uint16_t port)
{
	if (u->proxy != NULL) {
		u->target_name = name;
		u->target_port = port;
		name = u->proxy->host;
		port = u->proxy->port;
	}
	char service[8];
	snprintf(service, sizeof(service), "%u", (unsigned)port);
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	u->port = port;
	int rc = uv_getaddrinfo(u->loop, &u->gai, on_resolved, name, service, &hints);
	if (rc == 0)
		u->state = UPSTREAM_RESOLVING;
	return rc;
}

int upstream_write(struct upstream *u, const uint8_t *data, size_t len)
{
	if (u->state != UPSTREAM_CONNECTED)
		return UV_ENOTCONN;
	if (u->tls != NULL)
		return bufq_append(&u->plain, data, len) == 0 ? 0 : UV_ENOMEM;
	return writer_push(&u->w, data, len);
}

int upstream_write_masked(struct upstream *u, const uint8_t *data, size_t len, const uint8_t key[4])
{
	if (u->state != UPSTREAM_CONNECTED)
		return UV_ENOTCONN;
	if (u->tls != NULL)
		return bufq_append_masked(&u->plain, data, len, key) == 0 ? 0 : UV_ENOMEM;
	return writer_push_masked(&u->w, data, len, key);
}

/* Seals the staged plaintext into records, as large as the data allows. */
static int seal(struct upstream *u)
{
	struct bufq_view views[8];
	while (u->plain.len > 0) {
		size_t n = bufq_peek(&u->plain, 0, views, 8);
		for (size_t i = 0; i < n; i++) {
			if (tls_conn_write(u->tls, views[i].base, views[i].len) != TLS_OK)
				return UV_EPROTO;
			bufq_consume(&u->plain, views[i].len);
		}
	}
	return 0;
}

int upstream_flush(struct upstream *u)
{
	if (u->state != UPSTREAM_CONNECTED)
		return 0;
	if (u->tls != NULL && seal(u) != 0)
		return UV_EPROTO;
	return writer_flush(&u->w);
}

size_t upstream_pending(const struct upstream *u)
{
	return u->state == UPSTREAM_CONNECTED ? writer_pending(&u->w) + u->plain.len : 0;
}

int upstream_read(struct upstream *u, bool on)
{
	if (u->state != UPSTREAM_CONNECTED || u->reading == on)
		return 0;
	int rc = on ? uv_read_start((uv_stream_t *)&u->tcp, writer_alloc_read_buffer, on_read)
		    : uv_read_stop((uv_stream_t *)&u->tcp);
	if (rc == 0)
		u->reading = on;
	return rc;
}

/* Writes what is queued (a TLS alert, a close_notify) if the socket can
 * take it at once: a peer that is not reading does not hold the close up. */
static void write_now(struct upstream *u)
{
	struct bufq_view views[4];
	uv_buf_t bufs[4];
	size_t n = bufq_peek(&u->w.q, 0, views, 4);
	for (size_t i = 0; i < n; i++)
		bufs[i] = uv_buf_init((char *)views[i].base, (unsigned)views[i].len);
	if (n > 0)
		uv_try_write((uv_stream_t *)&u->tcp, bufs, (unsigned)n);
}

void upstream_close(struct upstream *u)
{
	enum upstream_state was = u->state;
	if (was == UPSTREAM_CLOSING || was == UPSTREAM_CLOSED)
		return;
	u->state = UPSTREAM_CLOSING;
	if (was == UPSTREAM_RESOLVING) {
		/* The resolver's callback runs either way (with UV_ECANCELED
		 * when the cancel wins) and finishes the close. */
		uv_cancel((uv_req_t *)&u->gai);
		return;
	}
	if (was == UPSTREAM_CONNECTED && u->tls != NULL && u->w.inflight == 0)
		tls_conn_close_notify(u->tls);
	/* Say goodbye the TLS way, or why the handshake failed (mbedTLS
	 * queued the alert). */
	if (u->tls != NULL && u->tcp_live && u->w.inflight == 0)
		write_now(u);
	if (u->tcp_live)
		uv_close((uv_handle_t *)&u->tcp, on_attempt_closed);
	else {
		if (u->addrs != NULL) {
			uv_freeaddrinfo(u->addrs);
			u->addrs = u->next = NULL;
		}
		finish_close(u);
	}
}

/* upstream: resolve, connect (every address in turn), read, write, close;
 * see upstream.h. */
#include "upstream.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

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

static void finish_close(struct upstream *u)
{
	if (u->state != UPSTREAM_CLOSING || u->tcp_live || u->addrs != NULL)
		return;
	writer_finish(&u->w);
	u->state = UPSTREAM_CLOSED;
	u->cb.on_closed(u->user);
}

static void on_write_done(struct writer *w, int status)
{
	struct upstream *u = (struct upstream *)((char *)w - offsetof(struct upstream, w));
	if (u->state == UPSTREAM_CONNECTED)
		u->cb.on_written(u->user, status);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct upstream *u = stream->data;
	if (nread > 0)
		u->cb.on_read(u->user, (const uint8_t *)buf->base, (size_t)nread);
	else if (nread < 0) {
		uv_read_stop(stream);
		u->reading = false;
		u->cb.on_end(u->user, (int)nread);
	}
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
	writer_init(&u->w, (uv_stream_t *)&u->tcp, on_write_done);
	u->state = UPSTREAM_CONNECTED;
	u->cb.on_connect(u->user, 0, "connect");
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

static void format_addr(const struct sockaddr *sa, char *out, size_t outlen)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		uv_ip6_name(s6, ip, sizeof(ip));
		snprintf(out, outlen, "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		uv_ip4_name(s4, ip, sizeof(ip));
		snprintf(out, outlen, "%s:%u", ip, ntohs(s4->sin_port));
	}
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
		format_addr(ai->ai_addr, u->peer, sizeof(u->peer));
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
	u->cb.on_connect(u->user, u->last_error ? u->last_error : UV_ECONNREFUSED, "connect");
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
		u->cb.on_connect(u->user, status, "resolve");
		return;
	}
	u->addrs = u->next = res;
	u->state = UPSTREAM_CONNECTING;
	u->last_error = 0;
	try_next(u);
}

int upstream_connect(struct upstream *u, const char *name, uint16_t port)
{
	char service[8];
	snprintf(service, sizeof(service), "%u", (unsigned)port);
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_ADDRCONFIG;
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
	return writer_push(&u->w, data, len);
}

int upstream_flush(struct upstream *u)
{
	if (u->state != UPSTREAM_CONNECTED)
		return 0;
	return writer_flush(&u->w);
}

size_t upstream_pending(const struct upstream *u)
{
	return u->state == UPSTREAM_CONNECTED ? writer_pending(&u->w) : 0;
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

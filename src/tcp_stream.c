/* tcp_stream: resolve, connect (every address in turn), read, write,
 * close; see tcp_stream.h. */
#include "tcp_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "tcpinfo.h"
#include "url.h"

#define TCP(s) ((struct tcp_stream *)(s))

static void try_next(struct tcp_stream *t);

static void opened(struct tcp_stream *t, int status, enum stream_stage stage)
{
	t->base.events->opened(t->base.user, status, stage, NULL);
}

static void on_write_done(struct writer *w, int status)
{
	struct tcp_stream *t = (struct tcp_stream *)((char *)w - offsetof(struct tcp_stream, w));
	if (t->state == TS_OPEN)
		t->base.events->written(t->base.user, status);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct tcp_stream *t = stream->data;
	if (nread == 0)
		return;
	if (nread < 0) {
		uv_read_stop(stream);
		t->reading = false;
		t->base.events->ended(t->base.user, (int)nread);
		return;
	}
	t->base.events->read(t->base.user, (const uint8_t *)buf->base, (size_t)nread);
}

/* The last close callback of the stream: what opened it is released, and
 * the layer above hears that everything below is closed. */
static void on_closed(uv_handle_t *handle)
{
	struct tcp_stream *t = handle->data;
	t->tcp_live = false;
	if (t->state == TS_CLOSING) {
		t->state = TS_CLOSED;
		t->base.events->closed(t->base.user);
		return;
	}
	try_next(t); /* a failed attempt is closed: on to the next address */
}

static void on_connected(uv_connect_t *req, int status)
{
	struct tcp_stream *t = req->data;
	if (t->state != TS_CONNECTING)
		return; /* closed meanwhile: the close callback finishes up */
	if (status < 0) {
		t->last_error = status;
		log_debug("connecting to %s failed: %s", t->peer, uv_strerror(status));
		uv_close((uv_handle_t *)&t->tcp, on_closed);
		return;
	}
	uv_freeaddrinfo(t->addrs);
	t->addrs = t->next = NULL;
	uv_tcp_nodelay(&t->tcp, 1);
	uv_os_fd_t fd;
	if (t->probe_every > 0 && uv_fileno((const uv_handle_t *)&t->tcp, &fd) == 0 &&
	    tcpinfo_keepalive(fd, t->probe_every) != 0)
		log_debug("cannot turn TCP keepalive probes on for %s", t->peer);
	writer_init(&t->w, (uv_stream_t *)&t->tcp, on_write_done);
	t->state = TS_OPEN;
	opened(t, 0, STAGE_OPEN);
}

/* Connects to the next address, or reports the last failure. */
static void try_next(struct tcp_stream *t)
{
	while (t->next != NULL) {
		struct addrinfo *ai = t->next;
		t->next = ai->ai_next;
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		url_format_sockaddr(ai->ai_addr, t->peer, sizeof(t->peer));
		int rc = uv_tcp_init(t->loop, &t->tcp);
		if (rc < 0) {
			t->last_error = rc;
			continue;
		}
		t->tcp_live = true;
		t->tcp.data = t;
		log_trace("connecting to %s", t->peer);
		rc = uv_tcp_connect(&t->creq, &t->tcp, ai->ai_addr, on_connected);
		if (rc == 0)
			return;
		t->last_error = rc;
		uv_close((uv_handle_t *)&t->tcp, on_closed);
		return;
	}
	uv_freeaddrinfo(t->addrs);
	t->addrs = NULL;
	t->state = TS_FAILED;
	opened(t, t->last_error ? t->last_error : UV_ECONNREFUSED, STAGE_CONNECT);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct tcp_stream *t = req->data;
	if (t->state == TS_CLOSING) {
		if (res != NULL)
			uv_freeaddrinfo(res);
		/* Nothing else is open: close the (bare) handle to say so. */
		uv_tcp_init(t->loop, &t->tcp);
		t->tcp_live = true;
		t->tcp.data = t;
		uv_close((uv_handle_t *)&t->tcp, on_closed);
		return;
	}
	if (status < 0) {
		t->state = TS_FAILED;
		opened(t, status, STAGE_RESOLVE);
		return;
	}
	t->addrs = t->next = res;
	t->state = TS_CONNECTING;
	t->last_error = 0;
	try_next(t);
}

static void tcp_open(struct stream *s)
{
	struct tcp_stream *t = TCP(s);
	char service[8];
	snprintf(service, sizeof(service), "%u", (unsigned)t->port);
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	t->state = TS_RESOLVING;
	int rc = uv_getaddrinfo(t->loop, &t->gai, on_resolved, t->name, service, &hints);
	if (rc < 0) {
		t->state = TS_FAILED;
		opened(t, rc, STAGE_RESOLVE);
	}
}

static int tcp_write(struct stream *s, const uint8_t *data, size_t len, bool secret)
{
	struct tcp_stream *t = TCP(s);
	if (t->state != TS_OPEN)
		return UV_ENOTCONN;
	return secret ? writer_push_secret(&t->w, data, len) : writer_push(&t->w, data, len);
}

static int tcp_write_masked(struct stream *s, const uint8_t *data, size_t len, const uint8_t key[4])
{
	struct tcp_stream *t = TCP(s);
	if (t->state != TS_OPEN)
		return UV_ENOTCONN;
	return writer_push_masked(&t->w, data, len, key);
}

static int tcp_flush(struct stream *s)
{
	struct tcp_stream *t = TCP(s);
	return t->state == TS_OPEN ? writer_flush(&t->w) : 0;
}

static size_t tcp_pending(const struct stream *s)
{
	const struct tcp_stream *t = (const struct tcp_stream *)s;
	return t->state == TS_OPEN ? writer_pending(&t->w) : 0;
}

static int tcp_read(struct stream *s, bool on)
{
	struct tcp_stream *t = TCP(s);
	if (t->state != TS_OPEN || t->reading == on)
		return 0;
	int rc = on ? uv_read_start((uv_stream_t *)&t->tcp, writer_alloc_read_buffer, on_read)
		    : uv_read_stop((uv_stream_t *)&t->tcp);
	if (rc == 0)
		t->reading = on;
	return rc;
}

/* Writes what is queued (a TLS alert, a close_notify, a last frame) if the
 * socket takes it at once: a peer that is not reading does not hold the
 * close up. */
static void write_now(struct tcp_stream *t)
{
	if (t->w.inflight > 0)
		return;
	struct bufq_view views[4];
	uv_buf_t bufs[4];
	size_t n = bufq_peek(&t->w.q, 0, views, 4);
	for (size_t i = 0; i < n; i++)
		bufs[i] = uv_buf_init((char *)views[i].base, (unsigned)views[i].len);
	if (n > 0)
		uv_try_write((uv_stream_t *)&t->tcp, bufs, (unsigned)n);
}

static void tcp_close(struct stream *s)
{
	struct tcp_stream *t = TCP(s);
	enum tcp_state was = t->state;
	if (was == TS_CLOSING || was == TS_CLOSED)
		return;
	t->state = TS_CLOSING;
	if (was == TS_RESOLVING) {
		/* The resolver's callback runs either way (with UV_ECANCELED
		 * when the cancel wins) and finishes the close. */
		uv_cancel((uv_req_t *)&t->gai);
		return;
	}
	if (was == TS_OPEN)
		write_now(t);
	if (!t->tcp_live) {
		/* Nothing is open (it failed, or never started): a bare handle
		 * is closed so that `closed` comes from the loop, as always. */
		uv_tcp_init(t->loop, &t->tcp);
		t->tcp_live = true;
		t->tcp.data = t;
	} else if (uv_is_closing((uv_handle_t *)&t->tcp)) {
		return; /* a failed attempt closing: its callback finishes */
	}
	uv_close((uv_handle_t *)&t->tcp, on_closed);
}

static const struct stream_ops tcp_ops = {
	.open = tcp_open,
	.write = tcp_write,
	.write_masked = tcp_write_masked,
	.flush = tcp_flush,
	.pending = tcp_pending,
	.read = tcp_read,
	.close = tcp_close,
};

void tcp_stream_init(struct tcp_stream *t, uv_loop_t *loop, const char *name, uint16_t port, unsigned probe_every)
{
	memset(t, 0, sizeof(*t));
	t->base.ops = &tcp_ops;
	t->loop = loop;
	t->name = name;
	t->port = port;
	t->probe_every = probe_every;
	t->state = TS_IDLE;
	t->gai.data = t;
	t->creq.data = t;
	t->tcp.data = t;
	writer_init(&t->w, NULL, on_write_done);
}

void tcp_stream_finish(struct tcp_stream *t)
{
	if (t->addrs != NULL)
		uv_freeaddrinfo(t->addrs);
	t->addrs = t->next = NULL;
	writer_finish(&t->w);
}

void tcp_stream_sample(const struct tcp_stream *t, struct liveness_sample *s)
{
	if (t->state != TS_OPEN)
		return;
	s->written = writer_progress(&t->w);
	uv_os_fd_t fd;
	if (uv_fileno((const uv_handle_t *)&t->tcp, &fd) == 0)
		tcpinfo_sample(fd, s);
}

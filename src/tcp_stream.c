/* tcp_stream: resolve, connect (Happy Eyeballs), read, write, close; see
 * tcp_stream.h. */
#include "tcp_stream.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "tcpinfo.h"
#include "url.h"

#define TCP(s) ((struct tcp_stream *)(s))

struct tcp_racer {
	uv_tcp_t tcp;
	uv_connect_t req;
	struct tcp_stream *owner;
	size_t slot;
	char peer[64];
};

static void opened(struct tcp_stream *t, int status, enum stream_stage stage, const char *detail)
{
	t->base.events->opened(t->base.user, status, stage, detail);
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

/* The last of the stream's handles is closed: the layer above hears it. */
static void handle_closed(struct tcp_stream *t)
{
	if (--t->pending == 0 && t->state == TS_CLOSING) {
		t->state = TS_CLOSED;
		t->base.events->closed(t->base.user);
	}
}

static void on_closed(uv_handle_t *handle)
{
	struct tcp_stream *t = handle->data;
	t->tcp_live = false;
	handle_closed(t);
}

static void on_stagger_closed(uv_handle_t *handle)
{
	struct tcp_stream *t = handle->data;
	t->stagger_live = false;
	handle_closed(t);
}

static void on_racer_closed(uv_handle_t *handle)
{
	struct tcp_racer *r = handle->data;
	struct tcp_stream *t = r->owner;
	t->racers[r->slot] = NULL;
	free(r);
	handle_closed(t);
}

static void close_racer(struct tcp_racer *r)
{
	if (!uv_is_closing((uv_handle_t *)&r->tcp))
		uv_close((uv_handle_t *)&r->tcp, on_racer_closed);
}

static void stop_stagger(struct tcp_stream *t)
{
	if (t->stagger_live && !uv_is_closing((uv_handle_t *)&t->stagger))
		uv_close((uv_handle_t *)&t->stagger, on_stagger_closed);
}

/* Notes an address's failure for the message, "ADDR: why; ...". */
#define TCP_ERRORS_MAX 320

static void note_failure(struct tcp_stream *t, const char *peer, int status)
{
	t->last_error = status;
	if (t->errors == NULL && (t->errors = calloc(1, TCP_ERRORS_MAX)) == NULL)
		return; /* the message goes without the list */
	size_t used = strlen(t->errors);
	snprintf(t->errors + used, TCP_ERRORS_MAX - used, "%s%s: %s", used ? "; " : "", peer, uv_strerror(status));
}

/* Every address failed: the last failure, and each address's when there
 * were several. */
static void all_failed(struct tcp_stream *t)
{
	stop_stagger(t);
	uv_freeaddrinfo(t->addrs);
	t->addrs = NULL;
	t->state = TS_FAILED;
	int status = t->last_error ? t->last_error : UV_ECONNREFUSED;
	opened(t, status, STAGE_CONNECT, t->next_try > 1 ? t->errors : NULL);
}

static void start_next(struct tcp_stream *t);

static void on_stagger(uv_timer_t *timer)
{
	start_next(timer->data);
}

static void on_racer_connected(uv_connect_t *req, int status)
{
	struct tcp_racer *r = req->data;
	struct tcp_stream *t = r->owner;
	t->in_flight--;
	if (t->state != TS_CONNECTING) {
		close_racer(r); /* another won, or the stream is closing */
		return;
	}
	if (status < 0) {
		log_debug("connecting to %s failed: %s", r->peer, uv_strerror(status));
		note_failure(t, r->peer, status);
		close_racer(r);
		if (t->next_try < t->n_order)
			start_next(t); /* at once: no reason to wait any more */
		else if (t->in_flight == 0)
			all_failed(t);
		return;
	}
	/* The winner: its socket becomes the stream's own handle, and every
	 * other attempt is closed. */
	uv_os_fd_t fd;
	int own = -1;
	if (uv_fileno((const uv_handle_t *)&r->tcp, &fd) == 0)
		own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	int rc = own < 0 ? UV_EMFILE : uv_tcp_init(t->loop, &t->tcp);
	if (rc == 0) {
		t->tcp.data = t;
		t->tcp_live = true;
		t->pending++;
		rc = uv_tcp_open(&t->tcp, own);
		if (rc != 0)
			close(own);
	} else if (own >= 0) {
		close(own);
	}
	snprintf(t->peer, sizeof(t->peer), "%s", r->peer);
	for (size_t i = 0; i < TCP_MAX_TRIES; i++)
		if (t->racers[i] != NULL)
			close_racer(t->racers[i]);
	stop_stagger(t);
	uv_freeaddrinfo(t->addrs);
	t->addrs = NULL;
	if (rc != 0) {
		t->state = TS_FAILED;
		opened(t, rc, STAGE_CONNECT, NULL);
		return;
	}
	uv_tcp_nodelay(&t->tcp, 1);
	if (t->probe_every > 0 && uv_fileno((const uv_handle_t *)&t->tcp, &fd) == 0 &&
	    tcpinfo_keepalive(fd, t->probe_every) != 0)
		log_debug("cannot turn TCP keepalive probes on for %s", t->peer);
	writer_init(&t->w, (uv_stream_t *)&t->tcp, on_write_done);
	t->state = TS_OPEN;
	opened(t, 0, STAGE_OPEN, NULL);
}

/* Starts an attempt on the next address; with more to come, the next one
 * follows after TCP_STAGGER_MS unless this one fails first. */
static void start_next(struct tcp_stream *t)
{
	while (t->next_try < t->n_order) {
		const struct addrinfo *ai = t->order[t->next_try];
		size_t slot = t->next_try++;
		char peer[64];
		url_format_sockaddr(ai->ai_addr, peer, sizeof(peer));
		snprintf(t->peer, sizeof(t->peer), "%s", peer);
		struct tcp_racer *r = calloc(1, sizeof(*r));
		int rc = r == NULL ? UV_ENOMEM : uv_tcp_init(t->loop, &r->tcp);
		if (rc < 0) {
			free(r);
			note_failure(t, peer, rc);
			continue;
		}
		r->owner = t;
		r->slot = slot;
		r->tcp.data = r;
		r->req.data = r;
		snprintf(r->peer, sizeof(r->peer), "%s", peer);
		t->racers[slot] = r;
		t->pending++;
		log_trace("connecting to %s", peer);
		rc = uv_tcp_connect(&r->req, &r->tcp, ai->ai_addr, on_racer_connected);
		if (rc < 0) {
			note_failure(t, peer, rc);
			close_racer(r);
			continue;
		}
		t->in_flight++;
		if (t->next_try < t->n_order && t->stagger_live)
			uv_timer_start(&t->stagger, on_stagger, TCP_STAGGER_MS, 0);
		else
			stop_stagger(t);
		return;
	}
	if (t->in_flight == 0)
		all_failed(t);
}

/* RFC 8305 section 4: the resolver's order, the families taking turns,
 * starting with the family of its first answer. */
static void order_addresses(struct tcp_stream *t)
{
	const struct addrinfo *fam[2][TCP_MAX_TRIES];
	size_t n[2] = {0, 0};
	int first = -1;
	for (const struct addrinfo *ai = t->addrs; ai != NULL; ai = ai->ai_next) {
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		int f = ai->ai_family == AF_INET6;
		if (first < 0)
			first = f;
		if (n[f] < TCP_MAX_TRIES)
			fam[f][n[f]++] = ai;
	}
	t->n_order = 0;
	for (size_t i = 0; t->n_order < TCP_MAX_TRIES && (i < n[0] || i < n[1]); i++) {
		for (int k = 0; k < 2 && t->n_order < TCP_MAX_TRIES; k++) {
			int f = k == 0 ? first : !first;
			if (i < n[f])
				t->order[t->n_order++] = fam[f][i];
		}
	}
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
		t->pending++;
		uv_close((uv_handle_t *)&t->tcp, on_closed);
		return;
	}
	if (status < 0) {
		t->state = TS_FAILED;
		opened(t, status, STAGE_RESOLVE, NULL);
		return;
	}
	t->addrs = res;
	t->state = TS_CONNECTING;
	t->last_error = 0;
	order_addresses(t);
	if (t->n_order > 1 && uv_timer_init(t->loop, &t->stagger) == 0) {
		t->stagger.data = t;
		t->stagger_live = true;
		t->pending++;
	}
	start_next(t);
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
		opened(t, rc, STAGE_RESOLVE, NULL);
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
	for (size_t i = 0; i < TCP_MAX_TRIES; i++)
		if (t->racers[i] != NULL)
			close_racer(t->racers[i]);
	stop_stagger(t);
	if (t->tcp_live) {
		if (!uv_is_closing((uv_handle_t *)&t->tcp))
			uv_close((uv_handle_t *)&t->tcp, on_closed);
		return;
	}
	if (t->pending == 0) {
		/* Nothing is open (it failed, or never started): a bare handle
		 * is closed so that `closed` comes from the loop, as always. */
		uv_tcp_init(t->loop, &t->tcp);
		t->tcp_live = true;
		t->tcp.data = t;
		t->pending++;
		uv_close((uv_handle_t *)&t->tcp, on_closed);
	}
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
	t->tcp.data = t;
	writer_init(&t->w, NULL, on_write_done);
}

void tcp_stream_finish(struct tcp_stream *t)
{
	if (t->addrs != NULL)
		uv_freeaddrinfo(t->addrs);
	t->addrs = NULL;
	free(t->errors);
	t->errors = NULL;
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

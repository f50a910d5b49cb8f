/* tls_stream: mbedTLS over the layer below; see tls_stream.h. */
#include "tls_stream.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "log.h"

#define TLSS(s) ((struct tls_stream *)(s))

static void failed(struct tls_stream *t, int status, const char *detail)
{
	t->state = TLSS_FAILED;
	t->base.events->opened(t->base.user, status, t->stage, detail);
}

/* Decrypts what has been fed and hands the plaintext up. One buffer per
 * place in the stack: with an https:// proxy the inner layer decrypts
 * while the outer one's plaintext is its input. */
static void deliver(struct tls_stream *t)
{
	static uint8_t plain[2][16384 + 256];
	uint8_t *out = plain[t->stage == STAGE_PROXY_TLS];
	while (t->state == TLSS_OPEN) {
		int n = tls_conn_read(t->tls, out, sizeof(plain[0]));
		if (n > 0) {
			t->base.events->read(t->base.user, out, (size_t)n);
			continue;
		}
		if (n == TLS_CLOSED) {
			t->base.events->ended(t->base.user, UV_EOF);
		} else if (n == TLS_ERR && tls_conn_refused_late(t->tls)) {
			/* Reported as the handshake failure it is (upstream_refusal). */
			t->state = TLSS_FAILED;
			t->refused = true;
			t->base.events->ended(t->base.user, UV_EPROTO);
		} else if (n == TLS_ERR) {
			char why[320];
			tls_conn_describe_error(t->tls, why, sizeof(why));
			log_warn("TLS error from %s: %s", t->name, why);
			t->base.events->ended(t->base.user, UV_EPROTO);
		}
		return;
	}
}

static void progress(struct tls_stream *t)
{
	struct stream *below = t->base.below;
	int rc = tls_conn_handshake(t->tls);
	if (rc == TLS_WANT_READ) {
		below->ops->flush(below);
		return;
	}
	if (rc == TLS_ERR) {
		char why[320];
		tls_conn_describe_error(t->tls, why, sizeof(why));
		below->ops->read(below, false);
		/* the alert mbedTLS queued goes out at the close */
		bool news;
		bool again = tls_conn_try_again(t->tls, &news);
		if (news) /* once per gateway: its connections change for good */
			log_warn("%s", why);
		failed(t, again ? UV_EAGAIN : UV_EPROTO, why);
		return;
	}
	t->state = TLSS_OPEN;
	t->resumed = tls_conn_resumed(t->tls);
	t->version = tls_conn_version(t->tls);
	t->suite = tls_conn_suite(t->tls);
	below->ops->read(below, false); /* from now on, as the layer above asks */
	log_debug("TLS to %s established: %s, %s%s", t->name, t->version, t->suite,
		  t->resumed ? " (session resumed)" : "");
	t->base.events->opened(t->base.user, 0, STAGE_OPEN, NULL);
	deliver(t); /* records that came with the end of the handshake */
}

static int send_below(void *user, const uint8_t *data, size_t len)
{
	struct tls_stream *t = user;
	int rc = t->base.below->ops->write(t->base.below, data, len, false);
	if (rc != 0)
		t->below_error = rc;
	return rc == 0 ? 0 : -1;
}

static void on_opened(void *user, int status, enum stream_stage stage, const char *detail)
{
	struct tls_stream *t = user;
	if (status < 0) {
		t->state = TLSS_FAILED;
		t->base.events->opened(t->base.user, status, stage, detail);
		return;
	}
	t->tls = tls_conn_create(t->setup, t->name, send_below, t);
	if (t->tls == NULL) {
		failed(t, UV_ENOMEM, "out of memory");
		return;
	}
	t->state = TLSS_HANDSHAKE;
	int rc = t->base.below->ops->read(t->base.below, true);
	if (rc < 0) {
		failed(t, rc, NULL);
		return;
	}
	progress(t);
}

static void on_read(void *user, const uint8_t *data, size_t len)
{
	struct tls_stream *t = user;
	if (t->state != TLSS_HANDSHAKE && t->state != TLSS_OPEN)
		return;
	tls_conn_feed(t->tls, data, len);
	if (t->state == TLSS_HANDSHAKE)
		progress(t);
	else
		deliver(t);
	tls_conn_feed(t->tls, NULL, 0);
}

static void on_ended(void *user, int status)
{
	struct tls_stream *t = user;
	if (t->state == TLSS_HANDSHAKE) {
		const char *who = t->stage == STAGE_PROXY_TLS ? "the proxy" : "the gateway";
		char why[300];
		if (t->stage == STAGE_TLS && tls_setup_has_identity(t->setup))
			snprintf(why, sizeof(why), "%s closed the connection during the TLS handshake (does it accept "
				 "--client-cert?)", who);
		else if (t->stage == STAGE_TLS)
			snprintf(why, sizeof(why), "%s closed the connection during the TLS handshake; if it wants a "
				 "client certificate, give --client-cert and --client-key (or, if the port does not "
				 "speak TLS, leave out --tls)", who);
		else
			snprintf(why, sizeof(why), "%s closed the connection during the TLS handshake (does it speak "
				 "TLS on that port? an http:// proxy is given as such)", who);
		failed(t, status, why);
		return;
	}
	if (t->state == TLSS_OPEN)
		t->base.events->ended(t->base.user, status);
}

static void on_written(void *user, int status)
{
	struct tls_stream *t = user;
	if (t->state == TLSS_OPEN)
		t->base.events->written(t->base.user, status);
}

static void on_closed(void *user)
{
	struct tls_stream *t = user;
	t->base.events->closed(t->base.user);
}

static const struct stream_events below_events = {
	.opened = on_opened,
	.read = on_read,
	.ended = on_ended,
	.written = on_written,
	.closed = on_closed,
};

static void tlss_open(struct stream *s)
{
	s->below->ops->open(s->below);
}

static int tlss_write(struct stream *s, const uint8_t *data, size_t len, bool secret)
{
	struct tls_stream *t = TLSS(s);
	if (t->state != TLSS_OPEN)
		return UV_ENOTCONN;
	int rc = secret ? bufq_append_secret(&t->plain, data, len) : bufq_append(&t->plain, data, len);
	return rc == 0 ? 0 : UV_ENOMEM;
}

static int tlss_write_masked(struct stream *s, const uint8_t *data, size_t len, const uint8_t key[4])
{
	struct tls_stream *t = TLSS(s);
	if (t->state != TLSS_OPEN)
		return UV_ENOTCONN;
	return bufq_append_masked(&t->plain, data, len, key) == 0 ? 0 : UV_ENOMEM;
}

/* Seals the staged plaintext into records, as large as the data allows,
 * then writes them below. */
static int tlss_flush(struct stream *s)
{
	struct tls_stream *t = TLSS(s);
	if (t->state != TLSS_OPEN)
		return 0;
	struct bufq_view views[8];
	while (t->plain.len > 0) {
		size_t n = bufq_peek(&t->plain, 0, views, 8);
		for (size_t i = 0; i < n; i++) {
			if (tls_conn_write(t->tls, views[i].base, views[i].len) != TLS_OK) {
				/* A record half written cannot be taken back: the
				 * connection is of no more use. */
				t->state = TLSS_FAILED;
				return t->below_error != 0 ? t->below_error : UV_EPROTO;
			}
			bufq_consume(&t->plain, views[i].len);
		}
	}
	return s->below->ops->flush(s->below);
}

static size_t tlss_pending(const struct stream *s)
{
	const struct tls_stream *t = (const struct tls_stream *)s;
	return t->plain.len + s->below->ops->pending(s->below);
}

static int tlss_read(struct stream *s, bool on)
{
	if (TLSS(s)->state != TLSS_OPEN)
		return 0; /* the handshake reads either way */
	return s->below->ops->read(s->below, on);
}

static void tlss_close(struct stream *s)
{
	struct tls_stream *t = TLSS(s);
	if (t->state == TLSS_OPEN) {
		/* Say goodbye the TLS way; it goes with what is queued below. */
		tls_conn_close_notify(t->tls);
		t->state = TLSS_FAILED;
	}
	s->below->ops->close(s->below);
}

static const struct stream_ops tlss_ops = {
	.open = tlss_open,
	.write = tlss_write,
	.write_masked = tlss_write_masked,
	.flush = tlss_flush,
	.pending = tlss_pending,
	.read = tlss_read,
	.close = tlss_close,
};

void tls_stream_init(struct tls_stream *t, struct stream *below, struct tls_setup *setup, const char *name,
		     enum stream_stage stage)
{
	memset(t, 0, sizeof(*t));
	t->base.ops = &tlss_ops;
	t->base.below = below;
	t->setup = setup;
	t->name = name;
	t->stage = stage;
	bufq_init(&t->plain);
	stream_stack(below, &below_events, t);
}

void tls_stream_finish(struct tls_stream *t)
{
	bufq_finish(&t->plain);
	tls_conn_destroy(t->tls);
	t->tls = NULL;
}

/* proxy_stream: CONNECT, then bytes through; see proxy_stream.h. */
#include "proxy_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <mbedtls/platform_util.h>

#include "log.h"

#define PROXY(s) ((struct proxy_stream *)(s))

static void failed(struct proxy_stream *p, int status, const char *detail)
{
	p->state = PROXY_FAILED;
	p->base.events->opened(p->base.user, status, STAGE_PROXY, detail);
}

static void ask(struct proxy_stream *p)
{
	char head[PROXY_MAX_HEAD];
	int n = proxy_build_connect(head, sizeof(head), p->proxy, p->target_name, p->target_port);
	struct stream *below = p->base.below;
	p->answer = calloc(1, sizeof(*p->answer));
	int rc = p->answer == NULL || n < 0 || (size_t)n >= sizeof(head)
			 ? UV_ENOMEM
			 : below->ops->write(below, (const uint8_t *)head, (size_t)n, true);
	mbedtls_platform_zeroize(head, sizeof(head)); /* it held the proxy credential */
	if (rc == 0)
		rc = below->ops->flush(below);
	if (rc == 0)
		rc = below->ops->read(below, true);
	if (rc < 0) {
		failed(p, rc, rc == UV_ENOMEM ? "out of memory" : NULL);
		return;
	}
	p->state = PROXY_ASKING;
	log_debug("asking the proxy %s:%u for a tunnel to %s:%u", p->proxy->host, (unsigned)p->proxy->port,
		  p->target_name, (unsigned)p->target_port);
}

static void on_opened(void *user, int status, enum stream_stage stage, const char *detail)
{
	struct proxy_stream *p = user;
	if (status < 0) {
		p->state = PROXY_FAILED;
		p->base.events->opened(p->base.user, status, stage, detail);
		return;
	}
	ask(p);
}

static void answered(struct proxy_stream *p, const uint8_t *data, size_t len)
{
	size_t used = 0;
	int status = 0;
	char reason[96] = "";
	int rc = proxy_answer_feed(p->answer, data, len, &used, &status, reason, sizeof(reason));
	if (rc == 0)
		return;
	/* The answer is whole: its buffer, ours alone, goes now. */
	free(p->answer);
	p->answer = NULL;
	struct stream *below = p->base.below;
	below->ops->read(below, false);
	if (rc < 0 || status < 200 || status > 299) {
		char why[400];
		const char *hint = rc < 0 ? NULL : proxy_refusal_hint(status);
		if (rc < 0)
			snprintf(why, sizeof(why), "the proxy's answer to CONNECT is not HTTP");
		else
			snprintf(why, sizeof(why), "the proxy answered %d%s%s to CONNECT%s%s", status, reason[0] ? " " : "",
				 reason, hint ? " — " : "", hint ? hint : "");
		failed(p, UV_ECONNREFUSED, why);
		return;
	}
	log_debug("the proxy %s:%u opened a tunnel to %s:%u", p->proxy->host, (unsigned)p->proxy->port,
		  p->target_name, (unsigned)p->target_port);
	/* The gateway cannot speak before this side does (TLS and the
	 * upgrade both start with the client), so bytes after the answer
	 * are the proxy's own and are not passed on. */
	if (used < len)
		log_debug("ignoring %zu bytes the proxy sent after its answer", len - used);
	p->state = PROXY_OPEN;
	p->base.events->opened(p->base.user, 0, STAGE_OPEN, NULL);
}

static void on_read(void *user, const uint8_t *data, size_t len)
{
	struct proxy_stream *p = user;
	if (p->state == PROXY_ASKING)
		answered(p, data, len);
	else if (p->state == PROXY_OPEN)
		p->base.events->read(p->base.user, data, len);
}

static void on_ended(void *user, int status)
{
	struct proxy_stream *p = user;
	if (p->state == PROXY_ASKING)
		failed(p, status, "the proxy closed the connection before answering CONNECT");
	else if (p->state == PROXY_OPEN)
		p->base.events->ended(p->base.user, status);
}

static void on_written(void *user, int status)
{
	struct proxy_stream *p = user;
	if (p->state == PROXY_OPEN)
		p->base.events->written(p->base.user, status);
	else if (status < 0 && p->state == PROXY_ASKING)
		failed(p, status, NULL);
}

static void on_closed(void *user)
{
	struct proxy_stream *p = user;
	p->base.events->closed(p->base.user);
}

static const struct stream_events below_events = {
	.opened = on_opened,
	.read = on_read,
	.ended = on_ended,
	.written = on_written,
	.closed = on_closed,
};

static void proxy_open(struct stream *s)
{
	s->below->ops->open(s->below);
}

static int proxy_write(struct stream *s, const uint8_t *data, size_t len, bool secret)
{
	if (PROXY(s)->state != PROXY_OPEN)
		return UV_ENOTCONN;
	return s->below->ops->write(s->below, data, len, secret);
}

static int proxy_write_masked(struct stream *s, const uint8_t *data, size_t len, const uint8_t key[4])
{
	if (PROXY(s)->state != PROXY_OPEN)
		return UV_ENOTCONN;
	return s->below->ops->write_masked(s->below, data, len, key);
}

static int proxy_flush(struct stream *s)
{
	return s->below->ops->flush(s->below);
}

static size_t proxy_pending(const struct stream *s)
{
	return s->below->ops->pending(s->below);
}

static int proxy_read(struct stream *s, bool on)
{
	if (PROXY(s)->state != PROXY_OPEN)
		return 0; /* the answer is read either way */
	return s->below->ops->read(s->below, on);
}

static void proxy_close(struct stream *s)
{
	s->below->ops->close(s->below);
}

static const struct stream_ops proxy_ops = {
	.open = proxy_open,
	.write = proxy_write,
	.write_masked = proxy_write_masked,
	.flush = proxy_flush,
	.pending = proxy_pending,
	.read = proxy_read,
	.close = proxy_close,
};

void proxy_stream_init(struct proxy_stream *p, struct stream *below, const struct proxy *proxy,
		       const char *target_name, uint16_t target_port)
{
	memset(p, 0, sizeof(*p));
	p->base.ops = &proxy_ops;
	p->base.below = below;
	p->proxy = proxy;
	p->target_name = target_name;
	p->target_port = target_port;
	stream_stack(below, &below_events, p);
}

void proxy_stream_finish(struct proxy_stream *p)
{
	free(p->answer);
	p->answer = NULL;
}

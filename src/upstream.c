/* upstream: the stack of streams to the gateway; see upstream.h. */
#include "upstream.h"

#include <string.h>

const char *stream_stage_name(enum stream_stage stage)
{
	switch (stage) {
	case STAGE_RESOLVE: return "the name lookup";
	case STAGE_CONNECT: return "the TCP connection";
	case STAGE_PROXY_TLS: return "the TLS handshake with the proxy";
	case STAGE_PROXY: return "the proxy's CONNECT";
	case STAGE_TLS: return "the TLS handshake";
	case STAGE_OPEN: return "the WebSocket upgrade";
	}
	return "?";
}

void upstream_init(struct upstream *u, uv_loop_t *loop, const struct upstream_params *p,
		   const struct stream_events *events, void *user)
{
	memset(u, 0, sizeof(*u));
	const char *dest = p->connect_name != NULL ? p->connect_name : p->gw_name;
	uint16_t dest_port = p->connect_name != NULL ? p->connect_port : p->gw_port;
	const char *first = p->proxy != NULL ? p->proxy->host : dest;
	uint16_t first_port = p->proxy != NULL ? p->proxy->port : dest_port;
	tcp_stream_init(&u->tcp, loop, first, first_port, p->probe_every);
	struct stream *top = &u->tcp.base;
	if (p->proxy != NULL && p->proxy_tls != NULL) {
		tls_stream_init(&u->proxy_tls, top, p->proxy_tls, p->proxy->host, STAGE_PROXY_TLS);
		u->has_proxy_tls = true;
		top = &u->proxy_tls.base;
	}
	if (p->proxy != NULL) {
		proxy_stream_init(&u->proxy, top, p->proxy, dest, dest_port);
		u->has_proxy = true;
		top = &u->proxy.base;
	}
	if (p->tls != NULL) {
		tls_stream_init(&u->tls, top, p->tls, p->gw_name, STAGE_TLS);
		u->has_tls = true;
		top = &u->tls.base;
	}
	u->top = top;
	stream_stack(top, events, user);
}

void upstream_connect(struct upstream *u)
{
	u->top->ops->open(u->top);
}

struct stream *upstream_stream(struct upstream *u)
{
	return u->top;
}

int upstream_flush(struct upstream *u)
{
	return u->top->ops->flush(u->top);
}

size_t upstream_pending(const struct upstream *u)
{
	return u->top->ops->pending(u->top);
}

int upstream_read(struct upstream *u, bool on)
{
	return u->top->ops->read(u->top, on);
}

void upstream_close(struct upstream *u)
{
	u->top->ops->close(u->top);
}

void upstream_finish(struct upstream *u)
{
	if (u->has_tls)
		tls_stream_finish(&u->tls);
	if (u->has_proxy)
		proxy_stream_finish(&u->proxy);
	if (u->has_proxy_tls)
		tls_stream_finish(&u->proxy_tls);
	tcp_stream_finish(&u->tcp);
}

enum stream_stage upstream_stage(const struct upstream *u)
{
	switch (u->tcp.state) {
	case TS_IDLE:
	case TS_RESOLVING:
		return STAGE_RESOLVE;
	case TS_CONNECTING:
		return STAGE_CONNECT;
	default:
		break;
	}
	if (u->has_proxy_tls && u->proxy_tls.state != TLSS_OPEN)
		return STAGE_PROXY_TLS;
	if (u->has_proxy && u->proxy.state != PROXY_OPEN)
		return STAGE_PROXY;
	if (u->has_tls && u->tls.state != TLSS_OPEN)
		return STAGE_TLS;
	return STAGE_OPEN;
}

const struct tls_conn *upstream_tls(const struct upstream *u)
{
	return u->has_tls && u->tls.state == TLSS_OPEN ? u->tls.tls : NULL;
}

bool upstream_tls_protocol(const struct upstream *u, const char **version, const char **suite)
{
	if (!u->has_tls || u->tls.version == NULL)
		return false;
	*version = u->tls.version;
	*suite = u->tls.suite;
	return true;
}

bool upstream_refusal(const struct upstream *u, char *why, size_t len)
{
	if (!u->has_tls || !u->tls.refused)
		return false;
	tls_conn_describe_error(u->tls.tls, why, len);
	return true;
}

const char *upstream_tried(const struct upstream *u)
{
	return u->tcp.errors != NULL ? u->tcp.errors : "";
}

const char *upstream_peer(const struct upstream *u)
{
	return u->tcp.peer[0] ? u->tcp.peer : "?";
}

void upstream_sample(const struct upstream *u, struct liveness_sample *s)
{
	*s = (struct liveness_sample){0};
	if (upstream_stage(u) != STAGE_OPEN)
		return;
	tcp_stream_sample(&u->tcp, s);
	s->queued = upstream_pending(u);
}

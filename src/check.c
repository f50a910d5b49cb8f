/* check: --check, one diagnosed tunnel per forward; see check.h. */
#include "check.h"

#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "handshake.h"
#include "log.h"
#include "tls.h"
#include "tunnel.h"
#include "upstream.h"
#include "url.h"
#include "ws.h"

/* How long the gateway has to answer our Close. */
#define CHECK_CLOSE_WAIT_MS 3000

enum check_phase { C_RESOLVE, C_STACK, C_UPGRADE, C_TARGET, C_CLOSING, C_DONE };

struct check {
	uv_loop_t *loop;
	const struct forward *f;
	bool json;
	FILE *out;
	enum check_phase phase;
	bool failed;
	uint64_t start, step_start;
	enum stream_stage stage; /* the stack's step under way */
	uv_getaddrinfo_t gai;
	uv_timer_t timer; /* the handshake's limit, the target's wait, then the Close's */
	uv_check_t watch; /* sees the stack's steps complete */
	struct upstream up;
	bool up_started, up_closed;
	struct handshake *hs;
	struct ws *ws;
	uint64_t data_bytes;
	uint16_t close_code;
};

static uint64_t now_ms(const struct check *c)
{
	return uv_now(c->loop);
}

/* One step: its line, or its JSON object. */
static void step(struct check *c, const char *name, bool ok, const char *detail, json_t *extra)
{
	uint64_t ms = now_ms(c) - c->step_start;
	c->step_start = now_ms(c);
	if (!ok)
		c->failed = true;
	if (c->json) {
		json_t *o = json_object();
		if (o != NULL) {
			json_object_set_new(o, "forward", json_string(c->f->name));
			json_object_set_new(o, "step", json_string(name));
			json_object_set_new(o, "ok", json_boolean(ok));
			json_object_set_new(o, "ms", json_integer((json_int_t)ms));
			json_object_set_new(o, "detail", json_string(detail));
			if (extra != NULL)
				json_object_update(o, extra);
			char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
			if (text != NULL) {
				fprintf(c->out, "%s\n", text);
				free(text);
			}
			json_decref(o);
		}
	} else {
		fprintf(c->out, "  %-4s  %-16s %6" PRIu64 " ms  %s\n", ok ? "ok" : "FAIL", name, ms, detail);
	}
	json_decref(extra);
	fflush(c->out);
}

/* A failed step carries what the tunnel would have logged. */
static void step_failed(struct check *c, const char *name)
{
	const char *why = log_last_problem();
	step(c, name, false, why[0] ? why : "failed", NULL);
}

/* The loop ends once every handle is closed: nothing to count here. */
static void on_handle_closed(uv_handle_t *handle)
{
	(void)handle;
}

static void finish(struct check *c)
{
	if (c->phase == C_DONE)
		return;
	c->phase = C_DONE;
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->watch, on_handle_closed);
	if (c->up_started && !c->up_closed) {
		c->up_closed = true;
		upstream_close(&c->up);
	}
}

static struct handshake_who who_of(const struct check *c)
{
	return (struct handshake_who){c->f->env.cfg, c->f->env.proxy, "--check", 0, "--check", c->f->name};
}

static const char *stage_step(enum stream_stage s)
{
	switch (s) {
	case STAGE_RESOLVE: return "name lookup";
	case STAGE_CONNECT: return "TCP connection";
	case STAGE_PROXY_TLS: return "proxy TLS";
	case STAGE_PROXY: return "proxy CONNECT";
	case STAGE_TLS: return "TLS";
	case STAGE_OPEN: return "upgrade";
	}
	return "?";
}

static void describe_tls(const struct check *c, const struct tls_conn *conn, char *out, size_t outlen,
			 json_t **extra)
{
	struct tls_info i;
	tls_conn_info(conn, &i);
	char expiry[64] = "expiry unknown";
	if (i.days_left != LONG_MIN)
	{
		long d = i.days_left >= 0 ? i.days_left : -i.days_left;
		snprintf(expiry, sizeof(expiry), i.days_left >= 0 ? "expires in %ld day%s" : "expired %ld day%s ago", d,
			 d == 1 ? "" : "s");
	}
	if (i.have_cert)
		snprintf(out, outlen, "%s, %s; subject %s, issuer %s, %s; %s %s; %s", i.version, i.suite, i.subject,
			 i.issuer, expiry, i.verified ? "verified for" : "NOT verified (--insecure), sent", i.name,
			 i.resumed ? "session resumed" : "new session");
	else
		snprintf(out, outlen, "%s, %s; %s %s; %s", i.version, i.suite,
			 i.verified ? "verified for" : "NOT verified (--insecure), sent", i.name,
			 i.resumed ? "session resumed (no certificate sent again)" : "new session");
	(void)c;
	*extra = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:b}", "version", i.version, "cipher_suite", i.suite,
			   "subject", i.subject, "issuer", i.issuer, "name", i.name, "verified", i.verified, "resumed",
			   i.resumed);
	if (*extra != NULL && i.days_left != LONG_MIN)
		json_object_set_new(*extra, "days_left", json_integer(i.days_left));
}

/* Reports each step of the stack that is over, up to `now_at`. */
static void advance(struct check *c, enum stream_stage now_at)
{
	while (c->stage < now_at) {
		enum stream_stage done = c->stage;
		c->stage = (enum stream_stage)(c->stage + 1);
		char detail[900];
		json_t *extra = NULL;
		switch (done) {
		case STAGE_RESOLVE:
			continue; /* reported by the check's own lookup */
		case STAGE_CONNECT: {
			const char *tried = upstream_tried(&c->up);
			snprintf(detail, sizeof(detail), "%s%s%s%s", upstream_peer(&c->up), tried[0] ? " (before it: " : "",
				 tried, tried[0] ? ")" : "");
			extra = json_pack("{s:s, s:s}", "address", upstream_peer(&c->up), "tried", tried);
			break;
		}
		case STAGE_PROXY_TLS:
			if (c->f->env.proxy == NULL || !c->f->env.proxy->tls)
				continue;
			snprintf(detail, sizeof(detail), "to the proxy %s:%u", c->f->env.proxy->host,
				 (unsigned)c->f->env.proxy->port);
			break;
		case STAGE_PROXY:
			if (c->f->env.proxy == NULL)
				continue;
			snprintf(detail, sizeof(detail), "the proxy %s:%u (%s) opened the way", c->f->env.proxy->host,
				 (unsigned)c->f->env.proxy->port, c->f->env.proxy->source);
			break;
		case STAGE_TLS: {
			const struct tls_conn *conn = upstream_tls(&c->up);
			if (conn == NULL)
				continue;
			describe_tls(c, conn, detail, sizeof(detail), &extra);
			break;
		}
		case STAGE_OPEN:
			continue;
		}
		step(c, stage_step(done), true, detail, extra);
	}
}

static void on_watch(uv_check_t *h)
{
	struct check *c = h->data;
	if (c->phase == C_STACK)
		advance(c, upstream_stage(&c->up));
}

/* ---- the WebSocket and the target ------------------------------------- */

static void on_close_wait(uv_timer_t *timer)
{
	finish(timer->data); /* the gateway did not answer our Close: closed anyway */
}

static void target_verdict(struct check *c, bool timed_out)
{
	char detail[300];
	if (c->data_bytes > 0) {
		/* Whatever followed, the target answered: Otoroshi had reached it. */
		snprintf(detail, sizeof(detail), "reached: it spoke first (%" PRIu64 " bytes, read and dropped)",
			 c->data_bytes);
		step(c, "target", true, detail, json_pack("{s:I}", "bytes_received", (json_int_t)c->data_bytes));
	} else if (c->close_code == 1011) {
		snprintf(detail, sizeof(detail), "Otoroshi could not reach the remote service (Close 1011 after %" PRIu64
			 " ms): check the route's target%s", now_ms(c) - c->step_start,
			 c->f->env.cfg->remote_host == NULL && c->f->env.cfg->remote_port == 0
				 ? " (a target of ${req.query.remoteHost} needs --remote-host and --remote-port)" : "");
		step(c, "target", false, detail, json_pack("{s:i}", "close_code", 1011));
	} else if (c->close_code != 0) {
		snprintf(detail, sizeof(detail), "Otoroshi closed the tunnel with code %u (%s)", c->close_code,
			 ws_describe_code(c->close_code));
		step(c, "target", false, detail, json_pack("{s:i}", "close_code", c->close_code));
	} else if (timed_out) {
		snprintf(detail, sizeof(detail), "reached: no Close within %u.%03u s (Otoroshi closes at once when it "
			 "cannot connect; this service waits for its client to speak)", c->f->env.cfg->check_wait_ms / 1000,
			 c->f->env.cfg->check_wait_ms % 1000);
		step(c, "target", true, detail, NULL);
	}
	if (c->close_code != 0 || ws_close_received(c->ws)) {
		/* Answer a Close the gateway sent, then it is over. */
		ws_queue_close(c->ws, 1000);
		ws_flush(c->ws);
		upstream_flush(&c->up);
		finish(c);
		return;
	}
	c->phase = C_CLOSING;
	if (ws_queue_close(c->ws, 1000) != WS_OK || ws_flush(c->ws) != WS_OK || upstream_flush(&c->up) != 0) {
		finish(c);
		return;
	}
	uv_timer_start(&c->timer, on_close_wait, CHECK_CLOSE_WAIT_MS, 0);
}

static void ws_data(void *user, const uint8_t *data, size_t len)
{
	struct check *c = user;
	(void)data;
	c->data_bytes += len;
}

static void ws_closed(void *user, uint16_t code, const uint8_t *reason, size_t reason_len)
{
	struct check *c = user;
	(void)reason;
	(void)reason_len;
	if (c->phase == C_TARGET)
		c->close_code = code == 0 ? 1005 : code;
}

static const struct ws_callbacks ws_cbs = {.on_data = ws_data, .on_close = ws_closed};

static void on_target_wait(uv_timer_t *timer)
{
	struct check *c = timer->data;
	if (c->phase == C_TARGET)
		target_verdict(c, true);
}

/* What came in the target's phase decides at once when it is a Close or
 * data; silence decides when the wait is over. */
static void target_input(struct check *c, const uint8_t *data, size_t len)
{
	if (len > 0 && ws_feed(c->ws, data, len) != WS_OK && c->phase == C_TARGET) {
		step(c, "target", false, "Otoroshi sent an invalid WebSocket frame", NULL);
		finish(c);
		return;
	}
	if (c->phase == C_TARGET && (c->close_code != 0 || c->data_bytes > 0))
		target_verdict(c, false);
	else if (c->phase == C_CLOSING && ws_close_received(c->ws))
		finish(c);
}

/* ---- the stack's events ------------------------------------------------ */

static void ev_opened(void *user, int status, enum stream_stage stage, const char *detail)
{
	struct check *c = user;
	if (c->phase != C_STACK)
		return;
	struct handshake_who who = who_of(c);
	if (status < 0) {
		advance(c, stage);
		handshake_report_open_failure(&who, status, stage, detail, now_ms(c));
		step_failed(c, stage_step(stage));
		finish(c);
		return;
	}
	advance(c, STAGE_OPEN);
	enum end_reason why;
	c->hs = handshake_start(&who, upstream_stream(&c->up), upstream_peer(&c->up), &why);
	if (c->hs == NULL || upstream_flush(&c->up) != 0 || upstream_read(&c->up, true) != 0) {
		step_failed(c, "upgrade");
		finish(c);
		return;
	}
	c->phase = C_UPGRADE;
}

static void ev_read(void *user, const uint8_t *data, size_t len)
{
	struct check *c = user;
	if (c->phase == C_TARGET || c->phase == C_CLOSING) {
		target_input(c, data, len);
		return;
	}
	if (c->phase != C_UPGRADE)
		return;
	size_t used = 0;
	int rc = handshake_feed(c->hs, data, len, &used);
	if (rc == UPGRADE_NEED_MORE)
		return;
	struct handshake_who who = who_of(c);
	if (rc != UPGRADE_SWITCHED) {
		int http = 0;
		handshake_report(&who, c->hs, rc, &http);
		const char *why = log_last_problem();
		step(c, "upgrade", false, why, http ? json_pack("{s:i}", "http_status", http) : NULL);
		finish(c);
		return;
	}
	step(c, "upgrade", true, "HTTP 101: the route took the tunnel", json_pack("{s:i}", "http_status", 101));
	c->ws = ws_create(&ws_cbs, c, upstream_stream(&c->up));
	if (c->ws == NULL) {
		step(c, "target", false, "out of memory", NULL);
		finish(c);
		return;
	}
	c->phase = C_TARGET;
	uv_timer_start(&c->timer, on_target_wait, c->f->env.cfg->check_wait_ms, 0);
	target_input(c, data + used, len - used);
}

static void ev_ended(void *user, int status)
{
	struct check *c = user;
	struct handshake_who who = who_of(c);
	if (c->phase == C_UPGRADE) {
		int http = 0;
		handshake_report_eof(&who, c->hs, status, &http);
		step_failed(c, "upgrade");
	} else if (c->phase == C_TARGET) {
		step(c, "target", false, "Otoroshi ended the connection without a WebSocket Close", NULL);
	}
	finish(c);
}

static void ev_written(void *user, int status)
{
	if (status < 0)
		ev_ended(user, status);
}

static void ev_closed(void *user)
{
	(void)user; /* the stack is finished by check_one once the loop is over */
}

static const struct stream_events events = {
	.opened = ev_opened, .read = ev_read, .ended = ev_ended, .written = ev_written, .closed = ev_closed,
};

static void on_deadline(uv_timer_t *timer)
{
	struct check *c = timer->data;
	if (c->phase != C_STACK && c->phase != C_UPGRADE && c->phase != C_RESOLVE)
		return;
	struct handshake_who who = who_of(c);
	enum stream_stage at = c->phase == C_RESOLVE ? STAGE_RESOLVE : upstream_stage(&c->up);
	if (c->phase == C_STACK)
		advance(c, at);
	handshake_report_timeout(&who, at, TUNNEL_HANDSHAKE_TIMEOUT_MS / 1000);
	step_failed(c, stage_step(at));
	if (c->phase == C_RESOLVE) {
		uv_cancel((uv_req_t *)&c->gai);
		c->phase = C_DONE;
		uv_close((uv_handle_t *)&c->timer, on_handle_closed);
		uv_close((uv_handle_t *)&c->watch, on_handle_closed);
		return;
	}
	finish(c);
}

static void start_stack(struct check *c)
{
	const struct tunnel_config *cfg = c->f->env.cfg;
	struct upstream_params p = {
		.gw_name = cfg->gw_name,
		.gw_port = cfg->gw_port,
		.connect_name = cfg->connect_name[0] ? cfg->connect_name : NULL,
		.connect_port = cfg->connect_port,
		.tls = c->f->env.tls,
		.proxy = c->f->env.proxy,
		.proxy_tls = c->f->env.proxy_tls,
	};
	upstream_init(&c->up, c->loop, &p, &events, c);
	c->up_started = true;
	c->phase = C_STACK;
	c->stage = STAGE_RESOLVE;
	upstream_connect(&c->up);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct check *c = req->data;
	if (c->phase != C_RESOLVE) {
		if (res != NULL)
			uv_freeaddrinfo(res);
		return;
	}
	const struct tunnel_config *cfg = c->f->env.cfg;
	const char *name = c->f->env.proxy ? c->f->env.proxy->host
			 : cfg->connect_name[0] ? cfg->connect_name : cfg->gw_name;
	if (status < 0) {
		struct handshake_who who = who_of(c);
		handshake_report_open_failure(&who, status, STAGE_RESOLVE, NULL, now_ms(c));
		step_failed(c, "name lookup");
		c->phase = C_DONE;
		uv_close((uv_handle_t *)&c->timer, on_handle_closed);
		uv_close((uv_handle_t *)&c->watch, on_handle_closed);
		return;
	}
	char detail[600];
	int n = snprintf(detail, sizeof(detail), "%s:", name);
	json_t *list = json_array();
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		char a[64];
		url_format_sockaddr(ai->ai_addr, a, sizeof(a));
		/* The port is the one asked for: show the addresses alone. */
		char *colon = a[0] == '[' ? strstr(a, "]:") : strrchr(a, ':');
		if (colon != NULL)
			*(a[0] == '[' ? colon + 1 : colon) = '\0';
		if (n > 0 && (size_t)n < sizeof(detail))
			n += snprintf(detail + n, sizeof(detail) - (size_t)n, " %s", a);
		json_array_append_new(list, json_string(a));
	}
	uv_freeaddrinfo(res);
	step(c, "name lookup", true, detail, json_pack("{s:o}", "addresses", list));
	start_stack(c);
}

static void describe_forward(const struct forward *f, char *out, size_t outlen)
{
	const struct tunnel_config *cfg = &f->cfg;
	char local[300];
	bool v6 = strchr(cfg->local_host, ':') != NULL && cfg->local_host[0] != '[';
	snprintf(local, sizeof(local), "%s%s%s:%u", v6 ? "[" : "", cfg->local_host, v6 ? "]" : "",
		 (unsigned)cfg->local_port);
	snprintf(out, outlen, "%s \u2192 %s via Otoroshi (%s)%s%s%s", local, f->remote, cfg->host,
		 cfg->profile ? " [" : "", cfg->profile ? cfg->profile : "", cfg->profile ? "]" : "");
}

static bool check_one(uv_loop_t *loop, struct forward *f, bool json, FILE *out)
{
	struct check c = {.loop = loop, .f = f, .json = json, .out = out};
	log_forget_problem(); /* a failure here names its own message, not an earlier one */
	char what[800];
	describe_forward(f, what, sizeof(what));
	if (f->env.name == NULL) {
		snprintf(f->name, sizeof(f->name), "%.*s", (int)(sizeof(f->name) - 1), what);
		f->env.name = f->name;
	}
	if (!json)
		fprintf(out, "Checking %s\n", what);
	c.start = c.step_start = uv_now(loop);
	uv_timer_init(loop, &c.timer);
	uv_check_init(loop, &c.watch);
	c.timer.data = c.watch.data = &c;
	c.gai.data = &c;
	uv_check_start(&c.watch, on_watch);
	uv_timer_start(&c.timer, on_deadline, TUNNEL_HANDSHAKE_TIMEOUT_MS, 0);
	const struct tunnel_config *cfg = &f->cfg;
	const char *name = f->env.proxy ? f->env.proxy->host : cfg->connect_name[0] ? cfg->connect_name : cfg->gw_name;
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	int rc = uv_getaddrinfo(loop, &c.gai, on_resolved, name, NULL, &hints);
	if (rc < 0)
		on_resolved(&c.gai, rc, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	if (c.up_started)
		upstream_finish(&c.up);
	ws_destroy(c.ws);
	handshake_destroy(c.hs);
	if (!json)
		fprintf(out, "%s\n", c.failed ? "  => FAILED" : "  => every step passed");
	fflush(out);
	return !c.failed;
}

int check_run(const struct listener_source *srcs, size_t n_srcs, bool json, FILE *out)
{
	struct listener l;
	uv_loop_t *loop = uv_default_loop();
	if (listener_prepare(&l, loop, srcs, n_srcs) < 0) {
		log_error("out of memory for the checks");
		return 1;
	}
	for (size_t i = 0; i < n_srcs; i++)
		if (srcs[i].tls != NULL)
			tls_setup_keep_peer_chain(srcs[i].tls);
	size_t failed = 0;
	for (size_t i = 0; i < l.n_forwards; i++)
		if (!check_one(loop, &l.forwards[i], json, out))
			failed++;
	if (!json && l.n_forwards > 1)
		fprintf(out, "%zu of %zu forwards passed\n", l.n_forwards - failed, l.n_forwards);
	listener_finish(&l);
	uv_loop_close(loop);
	log_flush();
	return failed == 0 ? 0 : 1;
}

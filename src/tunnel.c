/* tunnel: one local connection carried over one WebSocket; see tunnel.h.
 *
 * Events and actions, as OpenSSH's channels have them: what happens (a
 * read, an end of input, the gateway's Close, a timer) is an event, which
 * only changes states, each through its setter and that setter's table of
 * the transitions it allows. What the tunnel does about its states (read
 * or not, write, send the Close or the FIN, arm the timer, close the
 * handles) is done in one place, proceed(), which runs after every event
 * and loops until nothing moves. Two copies are made at the event itself,
 * because the bytes are valid only during the callback: a local read is
 * framed into the connection's queue at once, and the gateway's data is
 * queued for the local client as wslay hands it over.
 *
 * States:
 *   phase     CONNECTING -> HANDSHAKE -> OPEN -> ENDED (the handles close)
 *   local_in  OPEN -> EOF (the local client finished sending, or a stop)
 *                  -> GONE (a reset, or a write to it failed)
 *   up        (local -> gateway) OPEN -> LINGER -> CLOSE_QUEUED -> CLOSED
 *             LINGER: the local input ended and is all on the wire; the
 *             WebSocket stays open while the gateway still sends: a
 *             WebSocket has no half-close, and Otoroshi drops what the
 *             target sends after a Close (PROTOCOL.md section 5), so the
 *             Close waits for --linger of the gateway's silence.
 *             CLOSE_QUEUED: our Close, or our answer to the gateway's, is
 *             queued; CLOSED: it is on the wire, or nothing more can go.
 *   down      (gateway -> local) OPEN -> DRAIN -> FIN_SENT -> CLOSED
 *             DRAIN: the gateway is done; what it sent is written out.
 *   gateway   OPEN -> CLOSED (its Close came, or it broke the protocol)
 *                  -> GONE (its connection ended, or it stopped answering) */
#include "tunnel.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "buf.h"
#include "ending.h"
#include "handshake.h"
#include "liveness.h"
#include "rng.h"
#include "log.h"
#include "upstream.h"
#include "url.h"
#include "writer.h"
#include "ws.h"

enum phase { PHASE_CONNECTING, PHASE_HANDSHAKE, PHASE_OPEN, PHASE_ENDED };
enum local_in { LIN_OPEN, LIN_EOF, LIN_GONE };
enum up_state { UP_OPEN, UP_LINGER, UP_CLOSE_QUEUED, UP_CLOSED };
enum down_state { DOWN_OPEN, DOWN_DRAIN, DOWN_FIN_SENT, DOWN_CLOSED };
enum gw_state { GW_OPEN, GW_CLOSED, GW_GONE };
/* What the tunnel's one timer is counting down. */
enum timer_use { TIMER_NONE, TIMER_HANDSHAKE, TIMER_RETRY, TIMER_LINGER, TIMER_DRAIN };

#define B(s) (1u << (s))

/* The transitions each setter allows, from each state. */
static const unsigned phase_next[] = {
	[PHASE_CONNECTING] = B(PHASE_HANDSHAKE) | B(PHASE_ENDED),
	/* Back to connecting: a retry after a 502, 503 or 504. */
	[PHASE_HANDSHAKE] = B(PHASE_CONNECTING) | B(PHASE_OPEN) | B(PHASE_ENDED),
	[PHASE_OPEN] = B(PHASE_ENDED),
	[PHASE_ENDED] = 0,
};
static const unsigned local_in_next[] = {
	[LIN_OPEN] = B(LIN_EOF) | B(LIN_GONE),
	[LIN_EOF] = B(LIN_GONE),
	[LIN_GONE] = 0,
};
static const unsigned up_next[] = {
	[UP_OPEN] = B(UP_LINGER) | B(UP_CLOSE_QUEUED) | B(UP_CLOSED),
	[UP_LINGER] = B(UP_CLOSE_QUEUED) | B(UP_CLOSED),
	[UP_CLOSE_QUEUED] = B(UP_CLOSED),
	[UP_CLOSED] = 0,
};
static const unsigned down_next[] = {
	[DOWN_OPEN] = B(DOWN_DRAIN) | B(DOWN_CLOSED),
	[DOWN_DRAIN] = B(DOWN_FIN_SENT) | B(DOWN_CLOSED),
	[DOWN_FIN_SENT] = B(DOWN_CLOSED),
	[DOWN_CLOSED] = 0,
};
static const unsigned gw_next[] = {
	[GW_OPEN] = B(GW_CLOSED) | B(GW_GONE),
	[GW_CLOSED] = B(GW_GONE),
	[GW_GONE] = 0,
};

static const char *const phase_names[] = {"connecting", "handshake", "open", "ended"};
static const char *const local_in_names[] = {"open", "eof", "gone"};
static const char *const up_names[] = {"open", "linger", "close queued", "closed"};
static const char *const down_names[] = {"open", "drain", "fin sent", "closed"};
static const char *const gw_names[] = {"open", "closed", "gone"};

union any_stream {
	uv_tcp_t tcp;
	uv_pipe_t pipe;
	uv_tty_t tty;
};

struct stdio_pair {
	union any_stream in, out;
};

struct tunnel {
	struct tunnel_node node;
	struct tunnel_env *env;
	struct tunnel_owner *owner;
	uint64_t id;
	char addr[64];   /* the local client's address */
	/* How logs name it: addr, or (when the run has several forwards) an
	 * allocated "addr [forward]". */
	const char *label;
	char *label_buf;
	uint64_t started_ms;

	enum phase phase;
	enum local_in local_in;
	enum up_state up;
	enum down_state down;
	enum gw_state gateway;
	enum end_reason reason; /* the first cause of the end (ending.h) */
	enum end_reason end_now; /* an event that ends everything at once */
	bool close_now;          /* a local reset: the Close jumps the queue */
	bool stop_now;           /* a graceful stop: Close as soon as the data is out */
	bool fin_wait_over;      /* gave up waiting for the local client's FIN */

	/* The local side: an accepted TCP connection, or (with --stdio)
	 * standard input and output, each its own handle. */
	uv_tcp_t local;
	struct stdio_pair *stdio;
	uv_stream_t *in, *out;
	struct writer lw;
	uv_shutdown_t shutdown_req;
	bool local_reading;
	bool local_paused; /* reading stopped by the high-water mark */

	struct upstream upstream;
	bool upstream_paused;
	bool upstream_closing;
	uint64_t control_mark; /* ws_control_bytes when nothing was queued for the gateway */

	struct ws *ws;
	struct handshake *hs; /* only while the handshake lasts */
	struct bufq hold;     /* local bytes read before the WebSocket is open */

	uv_timer_t timer; /* handshake timeout, linger, then the idle limit of the ending */
	enum timer_use timer_use;
	/* Retries before the first byte (see retry_later): the attempts so
	 * far, and whether the failed stack is closing for the next one. */
	unsigned attempts;
	bool retry_closing;
	bool upstream_down; /* closed for a retry, not built anew yet */

	struct liveness live;   /* the keepalive's view of the gateway */
	uint64_t opened_at;     /* loop time the WebSocket opened */
	uint64_t linger_since;  /* loop time the gateway's silence is counted from */
	uint64_t traffic_at;    /* loop time of the last frame either way (data or Ping) */

	uint64_t bytes_up;   /* payload bytes from the local client to the gateway */
	uint64_t bytes_down; /* payload bytes from the gateway to the local client */
	uint64_t discarded;  /* local bytes that arrived when nothing could carry them */
	uint16_t close_code; /* the gateway's Close code, 0 when none came */
	int http_status;     /* of a refused upgrade */

	int open_handles; /* local ones, the timer and the upstream: freed when all are closed */
};

static void proceed(struct tunnel *t);

struct tunnel_node *tunnel_node(struct tunnel *t)
{
	return &t->node;
}

struct tunnel *tunnel_of(struct tunnel_node *n)
{
	return (struct tunnel *)((char *)n - offsetof(struct tunnel, node));
}

static uint64_t now_ms(const struct tunnel *t)
{
	return uv_now(t->env->loop);
}

/* ---- the setters -------------------------------------------------------- */

/* One setter per state machine: each checks the transition against its
 * table, logs it at trace level, and asserts on an illegal one. */
#define SETTER(fn, field, type, table, names)                                                              \
	static void fn(struct tunnel *t, type s)                                                             \
	{                                                                                                    \
		bool legal = (table[t->field] & B(s)) != 0;                                                  \
		if (!legal)                                                                                  \
			log_error("tunnel %" PRIu64 ": illegal " #field " transition %s -> %s", t->id,        \
				  names[t->field], names[s]);                                                \
		assert(legal);                                                                               \
		log_trace("tunnel %" PRIu64 ": " #field " %s -> %s", t->id, names[t->field], names[s]);       \
		t->field = s;                                                                                \
	}

SETTER(set_phase, phase, enum phase, phase_next, phase_names)
SETTER(set_local_in, local_in, enum local_in, local_in_next, local_in_names)
SETTER(set_up, up, enum up_state, up_next, up_names)
SETTER(set_down, down, enum down_state, down_next, down_names)
SETTER(set_gateway, gateway, enum gw_state, gw_next, gw_names)

/* Forward moves only, and none where the state is already there or past. */
static void advance_local_in(struct tunnel *t, enum local_in s)
{
	if (t->local_in < s)
		set_local_in(t, s);
}

static void advance_up(struct tunnel *t, enum up_state s)
{
	if (t->up < s)
		set_up(t, s);
}

static void advance_down(struct tunnel *t, enum down_state s)
{
	if (t->down < s)
		set_down(t, s);
}

static void advance_gateway(struct tunnel *t, enum gw_state s)
{
	if (t->gateway < s)
		set_gateway(t, s);
}

static void say(struct tunnel *t, enum end_reason r)
{
	t->reason = end_reason_merge(t->reason, r);
}

/* ---- events: the gateway -------------------------------------------------- */

static void ev_gateway_data(void *user, const uint8_t *data, size_t len)
{
	struct tunnel *t = user;
	if (t->down != DOWN_OPEN)
		return; /* the local side is gone: read and dropped */
	if (writer_push(&t->lw, data, len) != 0) {
		t->end_now = END_NO_MEMORY;
		return;
	}
	t->bytes_down += len;
	/* Data, not Pongs, holds the Close back while lingering. */
	t->traffic_at = t->linger_since = now_ms(t);
}

/* Without --remote-host and --remote-port, a route whose target is made of
 * the query parameters gets Otoroshi's literal no-query-remoteHost. */
static const char *dynamic_target_hint(const struct tunnel *t)
{
	const struct tunnel_config *cfg = t->env->cfg;
	if (cfg->remote_host != NULL || cfg->remote_port != 0)
		return "";
	return "; if the route's target uses ${req.query.remoteHost}:${req.query.remotePort}, pass --remote-host "
	       "and --remote-port";
}

/* Says why the gateway closed, from the code and from what came before. */
static enum end_reason explain_close(struct tunnel *t, uint16_t code)
{
	uint64_t now = now_ms(t);
	uint64_t silence = now - t->traffic_at;
	bool early = t->bytes_down == 0 && now - t->opened_at < TUNNEL_EARLY_CLOSE_MS;
	if (code == 1011 && silence >= TUNNEL_IDLE_SILENCE_MS) {
		log_warn("Otoroshi closed the idle tunnel for %s (Close 1011 after %" PRIu64 " s without traffic): the "
			 "route's backend idle timeout; a --keepalive below it keeps quiet tunnels open%s", t->label,
			 silence / 1000, t->bytes_down == 0 ? " (nothing ever came back: the target may also be unreachable)" : "");
		return END_GATEWAY_IDLE;
	}
	if (code == 1011 && t->bytes_down == 0) {
		log_error("Otoroshi could not reach the remote service for %s (Close 1011 %s): check "
			  "--remote-host/--remote-port and that the route's target is up%s", t->label,
			  early ? "right after the handshake" : "before any data", dynamic_target_hint(t));
		return END_TARGET_UNREACHABLE;
	}
	if (code == 1000 || code == 0) {
		log_debug("tunnel %" PRIu64 ": Otoroshi closed the WebSocket (%u)", t->id, code);
		return END_GATEWAY_CLOSED;
	}
	if (early)
		log_warn("Otoroshi closed the tunnel for %s with code %u (%s) right after the handshake, before any "
			 "data: the route may lack the TCP tunnel plugin (Otoroshi then hands the WebSocket to the "
			 "route's backend)", t->label, code, ws_describe_code(code));
	else
		log_warn("Otoroshi closed the tunnel for %s with code %u (%s)", t->label, code, ws_describe_code(code));
	return END_GATEWAY_ERROR;
}

static void ev_gateway_close(void *user, uint16_t code, const uint8_t *reason, size_t reason_len)
{
	struct tunnel *t = user;
	(void)reason;
	(void)reason_len;
	t->close_code = code;
	say(t, explain_close(t, code));
	advance_gateway(t, GW_CLOSED);
	/* wslay has queued its answering Close, which goes out at once (the
	 * gateway waits 3 s for it); nothing more goes up. */
	advance_up(t, UP_CLOSE_QUEUED);
	advance_down(t, DOWN_DRAIN);
}

static const struct ws_callbacks ws_cbs = {
	.on_data = ev_gateway_data,
	.on_close = ev_gateway_close,
};

/* The gateway's connection ended, or it stopped answering: nothing more
 * goes up, what came down is delivered, then FIN. */
static void gateway_gone(struct tunnel *t, enum end_reason r)
{
	say(t, r);
	advance_gateway(t, GW_GONE);
	advance_up(t, UP_CLOSED);
	advance_down(t, DOWN_DRAIN);
}

static void feed_frames(struct tunnel *t, const uint8_t *data, size_t len)
{
	int rc = len > 0 ? ws_feed(t->ws, data, len) : WS_OK;
	if (rc == WS_ERR_PROTOCOL) {
		log_error("Otoroshi sent an invalid WebSocket frame for %s: %s; closing the tunnel", t->label,
			  ws_error_detail(t->ws));
		say(t, END_PROTOCOL_ERROR);
		/* wslay queued a Close (1002) and reads no more. */
		advance_gateway(t, GW_CLOSED);
		advance_up(t, UP_CLOSE_QUEUED);
		advance_down(t, DOWN_DRAIN);
	} else if (rc != WS_OK) {
		t->end_now = rc == WS_ERR_NOMEM ? END_NO_MEMORY : END_INTERNAL;
	}
}

/* ---- retries before the first byte --------------------------------------- */

static void arm_timer(struct tunnel *t, enum timer_use use, uint64_t ms);

/* Failures that a gateway (or what stands in front of it) gives while it
 * restarts: worth another try, as long as nothing reached Otoroshi's
 * route. */
static bool retryable_status(int status, enum stream_stage stage)
{
	switch (stage) {
	case STAGE_RESOLVE:
		return status == UV_EAI_AGAIN;
	case STAGE_CONNECT:
		return status == UV_ECONNREFUSED || status == UV_ECONNRESET || status == UV_ENETUNREACH ||
		       status == UV_EHOSTUNREACH;
	case STAGE_TLS:
	case STAGE_PROXY_TLS:
		return status == UV_EAGAIN; /* a handshake the next one does otherwise (tls_conn_try_again) */
	default:
		/* Past the TCP connection something answered (a proxy's refusal
		 * comes as ECONNREFUSED at its stage): not retried. */
		return false;
	}
}

static bool retryable_http(int http_status)
{
	return http_status == 502 || http_status == 503 || http_status == 504;
}

/* 100 ms, doubling, each a random 75 % to 125 % of itself. */
static uint64_t backoff_ms(unsigned attempt)
{
	uint64_t base = 100u << (attempt > 6 ? 6 : attempt - 1);
	uint8_t r = 128;
	if (rng_bytes(&r, 1) != 0)
		r = 128;
	return base * (192 + (uint64_t)r / 2) / 256;
}

/* After a failed attempt: schedules the next one and returns true, or
 * returns false when the handshake's time would be over first. `what`
 * says what failed, for the debug line. */
static bool retry_later(struct tunnel *t, const char *what)
{
	uint64_t now = now_ms(t), deadline = t->started_ms + TUNNEL_HANDSHAKE_TIMEOUT_MS;
	uint64_t wait = backoff_ms(t->attempts);
	if (now + wait >= deadline || t->stop_now || t->end_now != END_NONE)
		return false;
	log_debug("tunnel %" PRIu64 ": attempt %u failed (%s): trying again in %" PRIu64 " ms", t->id, t->attempts,
		  what, wait);
	if (t->phase == PHASE_HANDSHAKE) {
		handshake_destroy(t->hs);
		t->hs = NULL;
		set_phase(t, PHASE_CONNECTING);
	}
	/* The failed stack closes first; the next one starts once it has
	 * (ev_upstream_closed) and the wait is over (on_timer). */
	t->retry_closing = true;
	t->upstream_closing = true;
	arm_timer(t, TIMER_RETRY, wait);
	upstream_close(&t->upstream);
	return true;
}

static void connect_again(struct tunnel *t);

static void handshake_input(struct tunnel *t, const uint8_t *data, size_t len)
{
	struct handshake_who who = {t->env->cfg, t->env->proxy, t->label, t->id, t->addr, t->env->name};
	size_t used = 0;
	int rc = handshake_feed(t->hs, data, len, &used);
	if (rc == UPGRADE_NEED_MORE)
		return;
	if (rc == UPGRADE_REFUSED && retryable_http(handshake_status(t->hs))) {
		char what[32];
		snprintf(what, sizeof(what), "HTTP %d", handshake_status(t->hs));
		if (retry_later(t, what))
			return;
	}
	if (rc != UPGRADE_SWITCHED) {
		t->end_now = handshake_report(&who, t->hs, rc, &t->http_status);
		return;
	}
	set_phase(t, PHASE_OPEN);
	/* The handshake's limit is over: from now on the timer follows the
	 * states (steer_timer). */
	uv_timer_stop(&t->timer);
	t->timer_use = TIMER_NONE;
	t->opened_at = t->traffic_at = now_ms(t);
	liveness_init(&t->live, t->opened_at);
	log_debug("tunnel %" PRIu64 ": WebSocket open for %s", t->id, t->label);
	/* Frames that came in the same read as the head are the first data. */
	feed_frames(t, data + used, len - used);
}


static void ev_upstream_opened(void *user, int status, enum stream_stage stage, const char *detail)
{
	struct tunnel *t = user;
	if (t->phase != PHASE_CONNECTING || t->retry_closing)
		return;
	struct handshake_who who = {t->env->cfg, t->env->proxy, t->label, t->id, t->addr, t->env->name};
	if (status < 0) {
		if (retryable_status(status, stage) && retry_later(t, detail ? detail : uv_strerror(status)))
			return;
		t->end_now = handshake_report_open_failure(&who, status, stage, detail, now_ms(t));
		proceed(t);
		return;
	}
	log_debug("tunnel %" PRIu64 ": connected to Otoroshi at %s", t->id, upstream_peer(&t->upstream));
	enum end_reason why = END_NONE;
	t->hs = handshake_start(&who, upstream_stream(&t->upstream), upstream_peer(&t->upstream), &why);
	if (t->hs == NULL)
		t->end_now = why;
	else
		set_phase(t, PHASE_HANDSHAKE);
	proceed(t);
}

static void ev_upstream_read(void *user, const uint8_t *data, size_t len)
{
	struct tunnel *t = user;
	liveness_heard(&t->live, now_ms(t));
	if (t->phase == PHASE_HANDSHAKE)
		handshake_input(t, data, len);
	else if (t->phase == PHASE_OPEN)
		feed_frames(t, data, len);
	proceed(t);
}

static void ev_upstream_ended(void *user, int status)
{
	struct tunnel *t = user;
	struct handshake_who who = {t->env->cfg, t->env->proxy, t->label, t->id, t->addr, t->env->name};
	if (t->retry_closing)
		return;
	char why[320];
	if (t->phase == PHASE_HANDSHAKE && upstream_refusal(&t->upstream, why, sizeof(why))) {
		t->end_now = handshake_report_open_failure(&who, status, STAGE_TLS, why, now_ms(t));
	} else if (t->phase == PHASE_HANDSHAKE) {
		t->end_now = handshake_report_eof(&who, t->hs, status, &t->http_status);
	} else if (t->phase == PHASE_OPEN) {
		enum end_reason r = END_NONE;
		if (t->gateway == GW_OPEN && t->up < UP_CLOSED) {
			if (status == UV_EOF)
				log_warn("Otoroshi ended the connection for %s without a WebSocket Close", t->label);
			else
				log_warn("the connection to Otoroshi for %s failed: %s", t->label, uv_strerror(status));
			r = END_GATEWAY_LOST;
		}
		gateway_gone(t, r);
	}
	proceed(t);
}

/* While a tunnel ends, each sign of progress gives it more time: a reply
 * streaming after a local half-close is not cut while it flows. */
static void arm_timer(struct tunnel *t, enum timer_use use, uint64_t ms);

static void note_progress(struct tunnel *t)
{
	if (t->timer_use == TIMER_DRAIN)
		arm_timer(t, TIMER_DRAIN, TUNNEL_DRAIN_TIMEOUT_MS);
}

static void ev_upstream_written(void *user, int status)
{
	struct tunnel *t = user;
	if (status < 0) {
		ev_upstream_ended(user, status);
		return;
	}
	note_progress(t);
	proceed(t);
}

static void tunnel_free(struct tunnel *t);

static void handle_gone(struct tunnel *t)
{
	if (--t->open_handles == 0)
		tunnel_free(t);
}

static void ev_upstream_closed(void *user)
{
	struct tunnel *t = user;
	if (t->retry_closing && t->phase != PHASE_ENDED) {
		t->retry_closing = false;
		t->upstream_down = true;
		if (t->timer_use != TIMER_RETRY)
			connect_again(t); /* the wait is already over */
		return;
	}
	handle_gone(t);
}

static const struct stream_events upstream_events = {
	.opened = ev_upstream_opened,
	.read = ev_upstream_read,
	.ended = ev_upstream_ended,
	.written = ev_upstream_written,
	.closed = ev_upstream_closed,
};

/* ---- events: the local side ------------------------------------------------- */

static void local_gone(struct tunnel *t, int status)
{
	log_debug("tunnel %" PRIu64 ": local connection from %s failed: %s", t->id, t->label, uv_strerror(status));
	say(t, END_LOCAL_RESET);
	advance_local_in(t, LIN_GONE);
	advance_down(t, DOWN_CLOSED);
	if (t->phase == PHASE_OPEN)
		t->close_now = true; /* a reset ends the WebSocket at once */
	else
		t->end_now = END_LOCAL_RESET;
}

/* A reset that came with the last data: libuv reports the end that follows
 * a read cut short by a hang-up as EOF, and the socket still holds the
 * reset as its pending error. */
static bool reset_behind_eof(uv_stream_t *stream)
{
	uv_os_fd_t fd;
	int err = 0;
	socklen_t len = sizeof(err);
	return uv_fileno((uv_handle_t *)stream, &fd) == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
	       err == ECONNRESET;
}

static void on_local_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct tunnel *t = stream->data;
	if (nread == 0)
		return;
	if (nread == UV_EOF && reset_behind_eof(stream))
		nread = UV_ECONNRESET;
	if (nread == UV_EOF) {
		log_debug("tunnel %" PRIu64 ": local client %s finished sending", t->id, t->label);
		say(t, END_LOCAL_CLOSE);
		advance_local_in(t, LIN_EOF);
	} else if (nread < 0) {
		local_gone(t, (int)nread);
	} else if (t->up != UP_OPEN || t->local_in != LIN_OPEN) {
		t->discarded += (uint64_t)nread; /* nothing can carry them any more */
	} else if (t->phase == PHASE_OPEN && t->hold.len == 0) {
		/* One read is at most one frame (the read buffer is 64 KiB);
		 * framed now, as the buffer is reused after this call. */
		int rc = ws_send_binary(t->ws, (const uint8_t *)buf->base, (size_t)nread);
		if (rc == WS_OK) {
			t->bytes_up += (uint64_t)nread;
			t->traffic_at = now_ms(t);
		} else if (rc == WS_ERR_CLOSED) {
			t->discarded += (uint64_t)nread;
		} else {
			t->end_now = rc == WS_ERR_NOMEM ? END_NO_MEMORY : END_INTERNAL;
		}
	} else if (bufq_append(&t->hold, buf->base, (size_t)nread) != 0) {
		/* Until the WebSocket is open, the bytes wait here. */
		t->end_now = END_NO_MEMORY;
	}
	proceed(t);
}

static void on_local_written(struct writer *w, int status)
{
	struct tunnel *t = (struct tunnel *)((char *)w - offsetof(struct tunnel, lw));
	if (t->phase == PHASE_ENDED)
		return;
	if (status < 0)
		local_gone(t, status);
	else
		note_progress(t);
	proceed(t);
}

static void on_local_shutdown(uv_shutdown_t *req, int status)
{
	struct tunnel *t = req->data;
	if (t->phase == PHASE_ENDED)
		return;
	if (status < 0)
		advance_local_in(t, LIN_GONE);
	advance_down(t, DOWN_CLOSED);
	proceed(t);
}

/* ---- events: time --------------------------------------------------------- */

/* Lingering: the Close goes once the gateway has been silent for --linger
 * while its data was being read (a paused reader hears nothing by its own
 * choice), at once on a graceful stop. */
static bool linger_done(struct tunnel *t)
{
	uint64_t now = now_ms(t), linger = t->env->cfg->linger_ms;
	if (t->stop_now || linger == 0)
		return true;
	if (t->upstream_paused)
		t->linger_since = now;
	return now - t->linger_since >= linger;
}

static void drain_timed_out(struct tunnel *t)
{
	if (t->up == UP_OPEN && t->local_in != LIN_OPEN) {
		log_debug("tunnel %" PRIu64 ": the last %zu bytes for Otoroshi did not leave within %d s", t->id,
			  t->hold.len + upstream_pending(&t->upstream), TUNNEL_DRAIN_TIMEOUT_MS / 1000);
		t->end_now = END_ENDING_TIMEOUT;
	} else if (t->down == DOWN_OPEN) {
		log_debug("tunnel %" PRIu64 ": Otoroshi sent nothing and did not close within %d s of our Close",
			  t->id, TUNNEL_DRAIN_TIMEOUT_MS / 1000);
		say(t, END_DRAIN_TIMEOUT);
		gateway_gone(t, END_DRAIN_TIMEOUT);
	} else if (t->down == DOWN_CLOSED && t->up == UP_CLOSED) {
		/* Everything is delivered; the local client kept its side open,
		 * or the gateway never answered our Close. */
		t->fin_wait_over = true;
		advance_gateway(t, GW_GONE);
	} else {
		log_debug("tunnel %" PRIu64 ": no progress for %d s while ending (up %s, down %s)", t->id,
			  TUNNEL_DRAIN_TIMEOUT_MS / 1000, up_names[t->up], down_names[t->down]);
		t->end_now = END_ENDING_TIMEOUT;
	}
}

static void on_timer(uv_timer_t *timer)
{
	struct tunnel *t = timer->data;
	enum timer_use use = t->timer_use;
	t->timer_use = TIMER_NONE;
	if (use == TIMER_RETRY) {
		if (!t->retry_closing)
			connect_again(t);
		return;
	}
	if (use == TIMER_HANDSHAKE) {
		struct handshake_who who = {t->env->cfg, t->env->proxy, t->label, t->id, t->addr, t->env->name};
		handshake_report_timeout(&who, upstream_stage(&t->upstream), TUNNEL_HANDSHAKE_TIMEOUT_MS / 1000);
		t->end_now = END_HANDSHAKE_TIMEOUT;
	} else if (use == TIMER_DRAIN) {
		drain_timed_out(t);
	}
	/* TIMER_LINGER: proceed sends the Close if the silence lasted. */
	proceed(t);
}

static void arm_timer(struct tunnel *t, enum timer_use use, uint64_t ms)
{
	t->timer_use = use;
	uv_timer_start(&t->timer, on_timer, ms, 0);
}

/* ---- actions -------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *handle)
{
	handle_gone(handle->data);
}

static void close_handle(struct tunnel *t, uv_handle_t *h)
{
	if (h != NULL && !uv_is_closing(h))
		uv_close(h, on_handle_closed);
	(void)t;
}

/* The summary's fields for JSON log lines: what its message says, the
 * address without the forward's name, and no close code or HTTP status
 * when there was none. */
#define SUMMARY_FIELDS 11
static size_t summary_fields(const struct tunnel *t, uint64_t ms, struct log_field out[SUMMARY_FIELDS])
{
	const char *version, *suite;
	bool tls = upstream_tls_protocol(&t->upstream, &version, &suite);
	size_t n = 0;
	out[n++] = LOG_STR("peer", t->addr);
	out[n++] = LOG_STR("forward", t->env->name);
	out[n++] = LOG_INT("duration_ms", ms);
	out[n++] = LOG_INT("bytes_sent", t->bytes_up);
	out[n++] = LOG_INT("bytes_received", t->bytes_down);
	out[n++] = LOG_STR("reason", end_reason_text(t->reason));
	if (t->close_code != 0)
		out[n++] = LOG_INT("close_code", t->close_code);
	if (t->http_status != 0)
		out[n++] = LOG_INT("http_status", t->http_status);
	if (t->attempts > 1)
		out[n++] = LOG_INT("attempts", t->attempts);
	if (tls) {
		out[n++] = LOG_STR("tls_version", version);
		out[n++] = LOG_STR("tls_cipher_suite", suite);
	}
	return n;
}

/* Ends the tunnel: the summary line, then every handle is closed and the
 * connection to the gateway told to close. Nothing is freed here. */
static void end(struct tunnel *t, enum end_reason r)
{
	say(t, r);
	set_phase(t, PHASE_ENDED);
	uint64_t ms = now_ms(t) - t->started_ms;
	char extra[160] = "";
	if (t->http_status != 0)
		snprintf(extra, sizeof(extra), ", HTTP %d", t->http_status);
	else if (t->close_code != 0)
		snprintf(extra, sizeof(extra), ", Close %u", t->close_code);
	if (t->attempts > 1)
		snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra), ", after %u attempts", t->attempts);
	const char *version, *suite;
	if (upstream_tls_protocol(&t->upstream, &version, &suite))
		snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra), ", %s %s", version, suite);
	struct log_field fields[SUMMARY_FIELDS];
	log_fields(LOG_INFO, fields, summary_fields(t, ms, fields), "Tunnel from %s closed after %" PRIu64 ".%03u s: %"
		   PRIu64 " bytes sent, %" PRIu64 " bytes received (%s%s)", t->label, ms / 1000, (unsigned)(ms % 1000),
		   t->bytes_up, t->bytes_down, end_reason_text(t->reason), extra);
	if (t->discarded > 0)
		log_debug("tunnel %" PRIu64 ": %" PRIu64 " bytes from %s arrived after the gateway closed and were dropped",
			  t->id, t->discarded, t->label);
	uv_timer_stop(&t->timer);
	close_handle(t, (uv_handle_t *)&t->timer);
	close_handle(t, (uv_handle_t *)t->in);
	close_handle(t, (uv_handle_t *)t->out);
	if (t->upstream_down) {
		/* Closed for a retry that will not come: that was its close. */
		t->upstream_down = false;
		t->open_handles--;
	}
	if (!t->upstream_closing) {
		t->upstream_closing = true;
		upstream_close(&t->upstream);
	}
}

/* Frames what the local client sent before the WebSocket opened. */
static int release_hold(struct tunnel *t)
{
	struct bufq_view views[4];
	while (t->hold.len > 0) {
		size_t n = bufq_peek(&t->hold, 0, views, 4);
		for (size_t i = 0; i < n; i++) {
			size_t len = views[i].len < WS_MAX_FRAME ? views[i].len : WS_MAX_FRAME;
			int rc = ws_send_binary(t->ws, views[i].base, len);
			if (rc == WS_ERR_CLOSED) {
				t->discarded += t->hold.len;
				bufq_consume(&t->hold, t->hold.len);
				return WS_OK;
			}
			if (rc != WS_OK)
				return rc;
			t->bytes_up += len;
			t->traffic_at = now_ms(t);
			bufq_consume(&t->hold, len);
			if (len < views[i].len)
				break;
		}
	}
	return WS_OK;
}

static bool gateway_done(const struct tunnel *t)
{
	return t->gateway != GW_OPEN;
}

/* The local -> gateway direction: frames out, then the Close. */
static void push_up(struct tunnel *t)
{
	if (t->hold.len > 0 && t->up == UP_OPEN) {
		int rc = release_hold(t);
		if (rc != WS_OK) {
			t->end_now = rc == WS_ERR_NOMEM ? END_NO_MEMORY : END_INTERNAL;
			return;
		}
	}
	if (t->up == UP_OPEN && t->local_in != LIN_OPEN && t->hold.len == 0 && !gateway_done(t) &&
	    upstream_pending(&t->upstream) == 0) {
		set_up(t, UP_LINGER);
		t->linger_since = now_ms(t);
	}
	bool linger_over = t->up == UP_LINGER && linger_done(t);
	if ((t->close_now && t->up < UP_CLOSE_QUEUED) || linger_over) {
		if (linger_over)
			log_debug("tunnel %" PRIu64 ": %s: sending Close 1000", t->id,
				  t->stop_now || t->env->cfg->linger_ms == 0 ? "the local side ended"
									    : "Otoroshi sent nothing for the linger period");
		int rc = ws_queue_close(t->ws, 1000);
		if (rc == WS_ERR_NOMEM) {
			/* Without its Close the gateway would wait: end now. */
			t->end_now = END_NO_MEMORY;
			return;
		}
		set_up(t, rc == WS_OK ? UP_CLOSE_QUEUED : UP_CLOSED);
	}
	if (t->up <= UP_CLOSE_QUEUED) {
		int rc = ws_flush(t->ws);
		if (rc != WS_OK) {
			t->end_now = rc == WS_ERR_NOMEM ? END_NO_MEMORY : END_INTERNAL;
			return;
		}
	}
	if (t->up == UP_CLOSE_QUEUED && ws_close_sent(t->ws) && upstream_pending(&t->upstream) == 0) {
		uint16_t sent = ws_close_code_sent(t->ws);
		if (sent >= 1002 && sent <= 1011 && t->gateway == GW_OPEN)
			say(t, END_PROTOCOL_ERROR);
		set_up(t, UP_CLOSED);
	}
}

/* The gateway -> local direction: data out, then the FIN. */
static void push_down(struct tunnel *t)
{
	if (t->down == DOWN_DRAIN && writer_pending(&t->lw) == 0) {
		set_down(t, DOWN_FIN_SENT);
		t->shutdown_req.data = t;
		if (uv_shutdown(&t->shutdown_req, t->out, on_local_shutdown) != 0) {
			/* The local side is gone already: nothing more to tell it. */
			advance_local_in(t, LIN_GONE);
			set_down(t, DOWN_CLOSED);
		}
	}
	int rc = writer_flush(&t->lw);
	if (rc < 0 && t->down < DOWN_CLOSED)
		local_gone(t, rc);
	/* Standard output ends by being closed: a pipe has no FIN. */
	if (t->stdio != NULL && t->down == DOWN_CLOSED)
		close_handle(t, (uv_handle_t *)t->out);
}

/* Starts or stops reading the local client: it may send while the queue
 * towards the gateway is below the watermarks, and after the gateway has
 * gone its bytes are read and dropped so that closing never resets a
 * client that is still sending. */
static void steer_local(struct tunnel *t)
{
	bool want;
	if (t->local_in != LIN_OPEN || uv_is_closing((uv_handle_t *)t->in))
		want = false;
	else if (t->up != UP_OPEN)
		want = t->down != DOWN_OPEN;
	else {
		size_t queued = t->hold.len + upstream_pending(&t->upstream);
		if (queued >= TUNNEL_HIGH_WATER)
			t->local_paused = true;
		else if (queued < TUNNEL_LOW_WATER)
			t->local_paused = false;
		want = !t->local_paused;
	}
	if (want == t->local_reading)
		return;
	int rc = want ? uv_read_start(t->in, writer_alloc_read_buffer, on_local_read) : uv_read_stop(t->in);
	if (rc == 0)
		t->local_reading = want;
}

/* Bytes of control frames queued for the gateway since its queue was last
 * empty: answers to Pings that it sends and never reads. */
static uint64_t control_backlog(struct tunnel *t)
{
	uint64_t sent = ws_control_bytes(t->ws);
	if (upstream_pending(&t->upstream) == 0)
		t->control_mark = sent;
	return sent - t->control_mark;
}

/* Reads from the gateway while the local client keeps up with what came.
 * Once the local side is gone, what comes is read and dropped until the
 * gateway's answering Close: closing with its data unread would reset the
 * connection, and the reset can overtake our Close. */
static void steer_upstream(struct tunnel *t)
{
	bool want;
	if (t->phase == PHASE_HANDSHAKE)
		want = true;
	else if (t->phase != PHASE_OPEN || gateway_done(t) || !ws_want_read(t->ws))
		want = false;
	else if (control_backlog(t) >= TUNNEL_CONTROL_HIGH_WATER)
		want = false; /* Pongs pile up for a gateway that reads nothing: bounded */
	else if (t->down != DOWN_OPEN)
		want = true;
	else {
		size_t queued = writer_pending(&t->lw);
		if (queued >= TUNNEL_HIGH_WATER) {
			t->upstream_paused = true;
		} else if (queued < TUNNEL_LOW_WATER && t->upstream_paused) {
			t->upstream_paused = false;
			t->linger_since = now_ms(t); /* the gateway waited on us */
		}
		want = !t->upstream_paused;
	}
	upstream_read(&t->upstream, want);
}

/* Once the WebSocket is open, the timer follows the states: the linger
 * while the gateway may still answer a local end, then the limit on how
 * long the ending may stall. */
static void steer_timer(struct tunnel *t)
{
	if (t->up == UP_LINGER && t->down == DOWN_OPEN) {
		if (t->timer_use != TIMER_LINGER) {
			uint64_t waited = now_ms(t) - t->linger_since, linger = t->env->cfg->linger_ms;
			arm_timer(t, TIMER_LINGER, waited < linger ? linger - waited : 1);
		}
	} else if (t->up != UP_OPEN || t->down != DOWN_OPEN || t->local_in != LIN_OPEN) {
		if (t->timer_use != TIMER_DRAIN)
			arm_timer(t, TIMER_DRAIN, TUNNEL_DRAIN_TIMEOUT_MS);
	}
}

/* Everything is done: our Close is out, the gateway is done, the local
 * side has its FIN and has finished (or was given up on). */
static bool all_done(const struct tunnel *t)
{
	return t->up == UP_CLOSED && t->down == DOWN_CLOSED && gateway_done(t) &&
	       (t->local_in != LIN_OPEN || t->fin_wait_over);
}

/* Writing to the gateway failed: what is queued cannot go. */
static void flush_failed(struct tunnel *t, int rc)
{
	if (rc == UV_ENOMEM) {
		log_error("out of memory for the tunnel of %s", t->label);
		t->end_now = END_NO_MEMORY;
		return;
	}
	log_warn("the connection to Otoroshi for %s failed: %s", t->label, uv_strerror(rc));
	t->end_now = END_GATEWAY_LOST;
}

static void proceed(struct tunnel *t)
{
	for (int pass = 0; pass < 4; pass++) {
		if (t->phase == PHASE_ENDED)
			return;
		if (t->end_now != END_NONE) {
			end(t, t->end_now);
			return;
		}
		enum local_in li = t->local_in;
		enum up_state up = t->up;
		enum down_state down = t->down;
		enum gw_state gw = t->gateway;
		if (t->phase == PHASE_OPEN) {
			push_up(t);
			if (t->end_now != END_NONE)
				continue;
		}
		/* Once the connection has ended (and that was said), its writes
		 * fail as a matter of course. */
		int frc = upstream_flush(&t->upstream);
		if (frc < 0 && t->phase != PHASE_ENDED && !t->upstream_closing && t->gateway != GW_GONE) {
			flush_failed(t, frc);
			continue;
		}
		push_down(t);
		/* The connection to the gateway is of no more use once our Close
		 * is out and the gateway is done. */
		if (t->phase == PHASE_OPEN && t->up == UP_CLOSED && gateway_done(t) && t->down != DOWN_OPEN &&
		    !t->upstream_closing) {
			t->upstream_closing = true;
			upstream_close(&t->upstream);
		}
		if (t->phase == PHASE_OPEN && all_done(t)) {
			end(t, END_DONE);
			return;
		}
		if (t->local_in == li && t->up == up && t->down == down && t->gateway == gw && t->end_now == END_NONE)
			break;
	}
	if (t->phase == PHASE_ENDED)
		return;
	if (t->phase == PHASE_OPEN) {
		/* The answer's parser is used no more: its 30 KiB go now. */
		handshake_destroy(t->hs);
		t->hs = NULL;
		steer_timer(t);
	}
	steer_local(t);
	steer_upstream(t);
}

/* ---- life cycle ------------------------------------------------------------- */

static void tunnel_free(struct tunnel *t)
{
	ws_destroy(t->ws);
	handshake_destroy(t->hs);
	bufq_finish(&t->hold);
	writer_finish(&t->lw);
	upstream_finish(&t->upstream);
	free(t->stdio);
	free(t->label_buf);
	bool failed = !end_reason_clean(t->reason);
	t->owner->gone(t->owner, t, failed);
	free(t);
}

static struct tunnel *tunnel_new(struct tunnel_env *env, struct tunnel_owner *owner)
{
	struct tunnel *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	t->env = env;
	t->owner = owner;
	t->id = env->ids != NULL ? ++*env->ids : ++env->next_id;
	t->started_ms = uv_now(env->loop);
	t->label = t->addr;
	bufq_init(&t->hold);
	return t;
}

static void init_upstream(struct tunnel *t)
{
	const struct tunnel_config *cfg = t->env->cfg;
	struct upstream_params p = {
		.gw_name = cfg->gw_name,
		.gw_port = cfg->gw_port,
		.connect_name = cfg->connect_name[0] ? cfg->connect_name : NULL,
		.connect_port = cfg->connect_port,
		.tls = t->env->tls,
		.proxy = t->env->proxy,
		.proxy_tls = t->env->proxy_tls,
		.probe_every = cfg->keepalive > 0 ? (cfg->keepalive + 3) / 4 : 0,
	};
	upstream_init(&t->upstream, t->env->loop, &p, &upstream_events, t);
	t->attempts++;
}

/* The next attempt, on a stack built anew, within what is left of the
 * handshake's time. */
static void connect_again(struct tunnel *t)
{
	upstream_finish(&t->upstream);
	init_upstream(t);
	t->upstream_closing = false;
	t->upstream_down = false;
	uint64_t spent = now_ms(t) - t->started_ms;
	arm_timer(t, TIMER_HANDSHAKE, spent < TUNNEL_HANDSHAKE_TIMEOUT_MS ? TUNNEL_HANDSHAKE_TIMEOUT_MS - spent : 1);
	log_debug("tunnel %" PRIu64 ": attempt %u", t->id, t->attempts);
	upstream_connect(&t->upstream);
	proceed(t);
}

/* What both starts share, once the local handles exist: the timer, the
 * connection stack, the WebSocket, and the first steps. */
static void begin(struct tunnel *t, int local_handles)
{
	writer_init(&t->lw, t->out, on_local_written);
	uv_timer_init(t->env->loop, &t->timer);
	t->timer.data = t;
	init_upstream(t);
	t->open_handles = local_handles + 2;
	t->ws = ws_create(&ws_cbs, t, upstream_stream(&t->upstream));
	if (t->ws == NULL) {
		log_error("out of memory for the tunnel of %s", t->label);
		t->end_now = END_NO_MEMORY;
		proceed(t);
		return;
	}
	arm_timer(t, TIMER_HANDSHAKE, TUNNEL_HANDSHAKE_TIMEOUT_MS);
	upstream_connect(&t->upstream);
	/* Read the local client at once: what it sends before the upgrade
	 * completes is held (up to the high-water mark) and sent after. */
	proceed(t);
}

static void format_peer(const uv_tcp_t *tcp, char *out, size_t outlen)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	snprintf(out, outlen, "?");
	if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) == 0)
		url_format_sockaddr((const struct sockaddr *)&ss, out, outlen);
}

static void set_label(struct tunnel *t)
{
	t->label = t->addr;
	if (t->env->name != NULL) {
		size_t len = strlen(t->addr) + strlen(t->env->name) + 4;
		if ((t->label_buf = malloc(len)) != NULL) {
			snprintf(t->label_buf, len, "%s [%s]", t->addr, t->env->name);
			t->label = t->label_buf;
		}
	}
}

static void free_unstarted(uv_handle_t *handle)
{
	free(handle->data);
}

int tunnel_start(struct tunnel_env *env, struct tunnel_owner *owner, uv_stream_t *server, struct tunnel **out)
{
	*out = NULL;
	struct tunnel *t = tunnel_new(env, owner);
	if (t == NULL)
		return UV_ENOMEM;
	int rc = uv_tcp_init(env->loop, &t->local);
	if (rc < 0) {
		free(t);
		return rc;
	}
	t->local.data = t;
	rc = uv_accept(server, (uv_stream_t *)&t->local);
	if (rc < 0) {
		/* Nothing started: close the bare handle, free in its callback. */
		uv_close((uv_handle_t *)&t->local, free_unstarted);
		return rc;
	}
	t->in = t->out = (uv_stream_t *)&t->local;
	format_peer(&t->local, t->addr, sizeof(t->addr));
	set_label(t);
	log_info("New TCP connection from: %s", t->label);
	uv_tcp_nodelay(&t->local, 1);
	*out = t;
	begin(t, 1);
	return 0;
}

/* The kind of libuv stream a standard descriptor needs, or 0 when it has
 * none (a plain file or a device cannot be watched). */
static uv_handle_type std_kind(int fd)
{
	uv_handle_type k = uv_guess_handle(fd);
	return k == UV_NAMED_PIPE || k == UV_TCP || k == UV_TTY ? k : UV_UNKNOWN_HANDLE;
}

/* Wraps a standard descriptor in the libuv stream its kind calls for. */
static int open_std(uv_loop_t *loop, int fd, uv_handle_type kind, union any_stream *h, void *data)
{
	int rc;
	switch (kind) {
	case UV_NAMED_PIPE:
		rc = uv_pipe_init(loop, &h->pipe, 0);
		if (rc == 0)
			rc = uv_pipe_open(&h->pipe, fd);
		break;
	case UV_TCP:
		rc = uv_tcp_init(loop, &h->tcp);
		if (rc == 0)
			rc = uv_tcp_open(&h->tcp, fd);
		break;
	default:
		rc = uv_tty_init(loop, &h->tty, fd, 0);
		break;
	}
	h->tcp.data = data;
	return rc;
}

int tunnel_start_stdio(struct tunnel_env *env, struct tunnel_owner *owner, struct tunnel **out)
{
	*out = NULL;
	/* Both kinds are checked before anything is opened: a failure then
	 * leaves nothing to close. */
	uv_handle_type kin = std_kind(0), kout = std_kind(1);
	if (kin == UV_UNKNOWN_HANDLE || kout == UV_UNKNOWN_HANDLE)
		return UV_EINVAL;
	struct tunnel *t = tunnel_new(env, owner);
	struct stdio_pair *p = calloc(1, sizeof(*p));
	if (t == NULL || p == NULL) {
		free(t);
		free(p);
		return UV_ENOMEM;
	}
	t->stdio = p;
	t->in = (uv_stream_t *)&p->in;
	t->out = (uv_stream_t *)&p->out;
	snprintf(t->addr, sizeof(t->addr), "stdio");
	set_label(t);
	*out = t;
	int rc = open_std(env->loop, 0, kin, &p->in, t);
	if (rc == 0)
		rc = open_std(env->loop, 1, kout, &p->out, t);
	if (rc != 0) {
		/* Whatever was initialised closes through the one free path. */
		log_error("--stdio cannot use standard input and output: %s", uv_strerror(rc));
		t->phase = PHASE_ENDED;
		t->reason = END_INTERNAL;
		uv_handle_t *hs[] = {(uv_handle_t *)t->in, (uv_handle_t *)t->out};
		for (int i = 0; i < 2; i++) {
			if (hs[i]->loop != NULL && hs[i]->type != UV_UNKNOWN_HANDLE) {
				t->open_handles++;
				uv_close(hs[i], on_handle_closed);
			}
		}
		if (t->open_handles == 0) {
			/* Nothing to close: nothing started, and no one told. */
			free(p);
			free(t);
			*out = NULL;
			return rc;
		}
		return 0;
	}
	log_debug("tunnel over standard input and output");
	begin(t, 2);
	return 0;
}

void tunnel_get_status(const struct tunnel *t, uint64_t now, struct tunnel_status *out)
{
	out->addr = t->addr;
	out->forward = t->env->name;
	out->age_ms = now - t->started_ms;
	out->bytes_sent = t->bytes_up;
	out->bytes_received = t->bytes_down;
	switch (t->phase) {
	case PHASE_CONNECTING: out->state = "connecting"; break;
	case PHASE_HANDSHAKE: out->state = "upgrading"; break;
	case PHASE_OPEN:
		out->state = t->local_in == LIN_OPEN && t->up == UP_OPEN && t->gateway == GW_OPEN && t->down == DOWN_OPEN
				     ? "open" : "ending";
		break;
	default: out->state = "ended"; break;
	}
}

void tunnel_shutdown(struct tunnel *t)
{
	if (t->phase == PHASE_ENDED)
		return;
	say(t, END_STOPPED);
	if (t->phase != PHASE_OPEN) {
		t->end_now = END_STOPPED;
	} else {
		t->stop_now = true;
		advance_local_in(t, LIN_EOF); /* read no more from the local client */
	}
	proceed(t);
}

void tunnel_check_alive(struct tunnel *t, uint64_t now)
{
	uint64_t interval = (uint64_t)t->env->cfg->keepalive * 1000;
	if (interval == 0 || t->phase != PHASE_OPEN || t->down != DOWN_OPEN || gateway_done(t))
		return;
	/* A tunnel that stopped reading for backpressure hears nothing by its
	 * own choice: that is not the gateway's silence. */
	if (t->upstream_paused) {
		liveness_heard(&t->live, now);
		return;
	}
	struct liveness_sample sample;
	upstream_sample(&t->upstream, &sample);
	switch (liveness_check(&t->live, &sample, now, interval)) {
	case LIVENESS_DEAD:
		log_warn("Otoroshi stopped answering for %s: nothing received for %" PRIu64 " s, not even a Pong, and "
			 "nothing sent to it moved (--keepalive %" PRIu64 ")", t->label,
			 liveness_quiet(&t->live, now) / 1000, interval / 1000);
		gateway_gone(t, END_GATEWAY_SILENT);
		proceed(t);
		return;
	case LIVENESS_PING: {
		uint8_t payload[8];
		for (int i = 0; i < 8; i++)
			payload[i] = (uint8_t)(now >> (56 - 8 * i));
		if (ws_queue_ping(t->ws, payload, sizeof(payload)) == WS_OK) {
			liveness_pinged(&t->live, now);
			t->traffic_at = now;
			log_trace("tunnel %" PRIu64 ": Ping after %" PRIu64 " ms of silence", t->id,
				  liveness_quiet(&t->live, now));
			proceed(t);
		}
		return;
	}
	case LIVENESS_OK:
		return;
	}
}

void tunnel_abort(struct tunnel *t)
{
	if (t->phase == PHASE_ENDED)
		return;
	t->end_now = t->reason != END_NONE ? t->reason : END_STOPPED;
	proceed(t);
}

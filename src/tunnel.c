/* tunnel: one local connection carried over one WebSocket; see tunnel.h.
 *
 * Every event (a read, a finished write, a timer) updates the state and then
 * calls proceed(), which pushes each direction as far as it can go, decides
 * who may read, and ends the tunnel once both directions are done. Nothing
 * else starts or stops reading, so the watermarks are decided in one place.
 *
 * Directions:
 *   up   (local -> gateway): OPEN -> EOF -> LINGER -> CLOSING -> CLOSED
 *        EOF: the local client finished sending; what it sent is still
 *        going out. LINGER: all of it is on the wire, and the WebSocket
 *        stays open while the gateway keeps sending: a WebSocket has no
 *        half-close, and Otoroshi drops whatever the target sends after a
 *        Close (PROTOCOL.md section 5), so the Close waits for --linger of
 *        the gateway's silence. CLOSING: a Close frame is queued; CLOSED:
 *        it is on the wire, or nothing more can be sent.
 *   down (gateway -> local): OPEN -> ENDING -> SHUT -> CLOSED
 *        ENDING: the gateway is done (Close or end of socket): what it sent
 *        is still being written to the local client; SHUT: FIN requested;
 *        CLOSED: FIN sent, or the local side is gone. */
#include "tunnel.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "liveness.h"
#include "listener.h"
#include "log.h"
#include "rng.h"
#include "upgrade.h"
#include "upstream.h"
#include "url.h"
#include "writer.h"
#include "ws.h"

enum phase { PHASE_CONNECTING, PHASE_HANDSHAKE, PHASE_OPEN, PHASE_CLOSED };

union any_stream {
	uv_tcp_t tcp;
	uv_pipe_t pipe;
	uv_tty_t tty;
};

struct stdio_pair {
	union any_stream in, out;
};
enum up_state { UP_OPEN, UP_EOF, UP_LINGER, UP_CLOSING, UP_CLOSED };
enum down_state { DOWN_OPEN, DOWN_ENDING, DOWN_SHUT, DOWN_CLOSED };
/* What the tunnel's one timer is counting down. */
enum timer_use { TIMER_NONE, TIMER_HANDSHAKE, TIMER_LINGER, TIMER_DRAIN };

static const char *const phase_names[] = {"connecting", "handshake", "open", "closed"};
static const char *const up_names[] = {"open", "eof", "linger", "closing", "closed"};
static const char *const down_names[] = {"open", "ending", "shut", "closed"};

struct tunnel {
	struct tunnel *prev, *next; /* in the listener's list */
	struct listener *owner;
	uint64_t id;
	char peer[64]; /* the local client, for logs */
	uint64_t started_ms;

	enum phase phase;
	enum up_state up;
	enum down_state down;

	/* The local side: an accepted TCP connection, or (with --stdio)
	 * standard input and output, each its own handle. */
	uv_tcp_t local;
	struct stdio_pair *stdio;
	uv_stream_t *in, *out;
	struct writer lw;
	uv_shutdown_t shutdown_req;
	bool local_reading;
	bool local_paused; /* reading stopped by the high-water mark */
	bool local_eof;    /* the local client sent FIN, reset, or is gone */

	struct upstream upstream;
	bool upstream_paused;
	bool upstream_closing;
	bool gateway_gone; /* its connection ended, or it stopped answering */
	uint64_t control_mark; /* ws_control_bytes when nothing was queued for the gateway */

	struct ws *ws;
	struct upgrade_response *resp; /* only during the handshake */
	struct bufq hold; /* local bytes read before the WebSocket is open */

	uv_timer_t timer; /* handshake timeout, linger, then the idle limit of the ending */
	enum timer_use timer_use;
	bool fin_wait_over; /* gave up waiting for the local client's FIN */
	bool stop_now;      /* a graceful stop: Close as soon as the data is out */

	struct liveness live; /* the keepalive's view of the gateway */
	uint64_t opened_at;   /* loop time the WebSocket opened */
	uint64_t linger_since; /* loop time the gateway's silence is counted from */
	uint64_t traffic_at;  /* loop time of the last frame either way (data or Ping) */

	uint64_t bytes_up;   /* payload bytes from the local client to the gateway */
	uint64_t bytes_down; /* payload bytes from the gateway to the local client */
	uint64_t discarded;  /* local bytes that arrived when nothing could carry them */
	uint16_t close_code; /* the gateway's Close code, 0 when none came */
	const char *end_reason; /* the first cause of the end */
	bool failed;            /* ended by an error, not by either side closing */
	int http_status;        /* of a refused upgrade */

	int open_handles; /* local, timer and upstream: freed when all are closed */
};

static void proceed(struct tunnel *t);
static void close_all(struct tunnel *t, const char *reason);
static void on_handle_closed(uv_handle_t *handle);

/* Ends that are no one's fault: either side closing, or a stop asked for. */
static bool is_clean(const char *reason)
{
	static const char *const clean[] = {"local close", "gateway closed", "stopped", "done"};
	for (size_t i = 0; i < sizeof(clean) / sizeof(clean[0]); i++)
		if (strcmp(reason, clean[i]) == 0)
			return true;
	return false;
}

/* The summary gives the first cause of the end, except that a failure
 * outranks a clean end that came before it (a client that sent and closed
 * before the gateway refused was refused all the same). */
static void set_reason(struct tunnel *t, const char *reason)
{
	if (t->end_reason == NULL || (is_clean(t->end_reason) && !is_clean(reason)))
		t->end_reason = reason;
}

static void set_phase(struct tunnel *t, enum phase p)
{
	log_trace("tunnel %" PRIu64 ": phase %s -> %s", t->id, phase_names[t->phase], phase_names[p]);
	t->phase = p;
}

/* The only place the up state changes: it only moves forward. */
static void set_up(struct tunnel *t, enum up_state s)
{
	if (s <= t->up)
		return;
	log_trace("tunnel %" PRIu64 ": up %s -> %s", t->id, up_names[t->up], up_names[s]);
	t->up = s;
}

static void set_down(struct tunnel *t, enum down_state s)
{
	if (s <= t->down)
		return;
	log_trace("tunnel %" PRIu64 ": down %s -> %s", t->id, down_names[t->down], down_names[s]);
	t->down = s;
}

/* ---- gateway side: the WebSocket ---------------------------------------- */

static void arm_timer(struct tunnel *t, enum timer_use use, uint64_t ms);

/* While a tunnel ends, each sign of progress gives it more time: a reply
 * streaming after a local half-close is not cut while it flows. */
static void note_progress(struct tunnel *t)
{
	if (t->timer_use == TIMER_DRAIN)
		arm_timer(t, TIMER_DRAIN, TUNNEL_DRAIN_TIMEOUT_MS);
}

static uint64_t now_ms(const struct tunnel *t)
{
	return uv_now(t->owner->loop);
}

static void ws_on_data(void *user, const uint8_t *data, size_t len)
{
	struct tunnel *t = user;
	if (t->down != DOWN_OPEN)
		return;
	if (writer_push(&t->lw, data, len) != 0) {
		close_all(t, "out of memory");
		return;
	}
	t->bytes_down += len;
	/* Data, not Pongs, holds the Close back while lingering. */
	t->traffic_at = t->linger_since = now_ms(t);
	note_progress(t);
}

/* Without --remote-host and --remote-port, a route whose target is made of
 * the query parameters gets Otoroshi's literal no-query-remoteHost. */
static const char *dynamic_target_hint(const struct tunnel *t)
{
	const struct tunnel_config *cfg = t->owner->cfg;
	if (cfg->remote_host != NULL || cfg->remote_port != 0)
		return "";
	return "; if the route's target uses ${req.query.remoteHost}:${req.query.remotePort}, pass --remote-host "
	       "and --remote-port";
}

/* Says why the gateway closed, from the code and from what came before. */
static void explain_close(struct tunnel *t, uint16_t code)
{
	uint64_t now = now_ms(t);
	uint64_t silence = now - t->traffic_at;
	bool early = t->bytes_down == 0 && now - t->opened_at < TUNNEL_EARLY_CLOSE_MS;
	if (code == 1011 && silence >= TUNNEL_IDLE_SILENCE_MS) {
		log_warn("Otoroshi closed the idle tunnel for %s (Close 1011 after %" PRIu64 " s without traffic): the "
			 "route's backend idle timeout; a --keepalive below it keeps quiet tunnels open%s", t->peer,
			 silence / 1000, t->bytes_down == 0 ? " (nothing ever came back: the target may also be unreachable)" : "");
		set_reason(t, "gateway idle timeout");
	} else if (code == 1011 && t->bytes_down == 0) {
		log_error("Otoroshi could not reach the remote service for %s (Close 1011 %s): check "
			  "--remote-host/--remote-port and that the route's target is up%s", t->peer,
			  early ? "right after the handshake" : "before any data", dynamic_target_hint(t));
		set_reason(t, "gateway could not reach the remote service");
	} else if (code == 1000 || code == 0) {
		log_debug("tunnel %" PRIu64 ": Otoroshi closed the WebSocket (%u)", t->id, code);
		set_reason(t, "gateway closed");
	} else if (early) {
		log_warn("Otoroshi closed the tunnel for %s with code %u (%s) right after the handshake, before any "
			 "data: the route may lack the TCP tunnel plugin (Otoroshi then hands the WebSocket to the "
			 "route's backend)", t->peer, code, ws_describe_code(code));
		set_reason(t, "gateway closed with an error");
	} else {
		log_warn("Otoroshi closed the tunnel for %s with code %u (%s)", t->peer, code, ws_describe_code(code));
		set_reason(t, "gateway closed with an error");
	}
}

static void ws_on_close(void *user, uint16_t code, const uint8_t *reason, size_t reason_len)
{
	struct tunnel *t = user;
	(void)reason;
	(void)reason_len;
	t->close_code = code;
	explain_close(t, code);
	/* wslay has queued its answering Close, which goes out at once (the
	 * gateway waits 3 s for it); nothing more goes up. */
	set_up(t, UP_CLOSING);
	set_down(t, DOWN_ENDING);
}

/* Frames are taken whole, always: data frames bypass wslay's queue, so a
 * control frame must never be left half-written in between. The
 * watermarks bound what piles up, by stopping the local reads. */
static size_t ws_on_send(void *user, const uint8_t *data, size_t len)
{
	struct tunnel *t = user;
	return upstream_write(&t->upstream, data, len) == 0 ? len : 0;
}

static int ws_on_send_masked(void *user, const uint8_t *data, size_t len, const uint8_t key[4])
{
	struct tunnel *t = user;
	return upstream_write_masked(&t->upstream, data, len, key) == 0 ? 0 : -1;
}

static const struct ws_callbacks ws_cbs = {
	.on_data = ws_on_data,
	.on_close = ws_on_close,
	.send = ws_on_send,
	.send_masked = ws_on_send_masked,
};

/* ---- timers ------------------------------------------------------------- */

/* Lingering: the Close goes once the gateway has been silent for --linger
 * while its data was being read (a paused reader hears nothing by its own
 * choice), at once on a graceful stop. */
static bool linger_done(struct tunnel *t)
{
	uint64_t now = now_ms(t), linger = t->owner->cfg->linger_ms;
	if (t->stop_now || linger == 0)
		return true;
	if (t->upstream_paused)
		t->linger_since = now;
	return now - t->linger_since >= linger;
}

static void on_drain_timeout(struct tunnel *t)
{
	if (t->up == UP_EOF) {
		log_debug("tunnel %" PRIu64 ": the last %zu bytes for Otoroshi did not leave within %d s", t->id,
			  t->hold.len + upstream_pending(&t->upstream), TUNNEL_DRAIN_TIMEOUT_MS / 1000);
		close_all(t, "ending timed out");
		return;
	}
	if (t->down == DOWN_OPEN) {
		log_debug("tunnel %" PRIu64 ": Otoroshi sent nothing and did not close within %d s of our Close",
			  t->id, TUNNEL_DRAIN_TIMEOUT_MS / 1000);
		set_reason(t, "drain timed out");
		set_up(t, UP_CLOSED);
		set_down(t, DOWN_ENDING);
		arm_timer(t, TIMER_DRAIN, TUNNEL_DRAIN_TIMEOUT_MS);
		proceed(t);
		return;
	}
	if (t->down == DOWN_CLOSED && t->up == UP_CLOSED) {
		/* Everything is delivered; the local client kept its side open,
		 * or the gateway never answered our Close. */
		t->fin_wait_over = true;
		t->gateway_gone = true;
		proceed(t);
		return;
	}
	log_debug("tunnel %" PRIu64 ": no progress for %d s while ending (up %s, down %s)", t->id,
		  TUNNEL_DRAIN_TIMEOUT_MS / 1000, up_names[t->up], down_names[t->down]);
	close_all(t, "ending timed out");
}

static void on_timer(uv_timer_t *timer)
{
	struct tunnel *t = timer->data;
	enum timer_use use = t->timer_use;
	t->timer_use = TIMER_NONE;
	switch (use) {
	case TIMER_HANDSHAKE:
		log_error("Otoroshi at %s timed out: no answer to the WebSocket upgrade within %d s for %s",
			  t->owner->cfg->host, TUNNEL_HANDSHAKE_TIMEOUT_MS / 1000, t->peer);
		close_all(t, "handshake timed out");
		return;
	case TIMER_LINGER:
		proceed(t); /* sends the Close if the silence lasted, else waits on */
		return;
	case TIMER_DRAIN:
		on_drain_timeout(t);
		return;
	case TIMER_NONE:
		return;
	}
}

static void arm_timer(struct tunnel *t, enum timer_use use, uint64_t ms)
{
	t->timer_use = use;
	uv_timer_start(&t->timer, on_timer, ms, 0);
}

/* Once the WebSocket is open, the timer follows the states: the linger
 * while the gateway may still answer a local end, then the limit on how
 * long the ending may stall. */
static void steer_timer(struct tunnel *t)
{
	if (t->up == UP_LINGER && t->down == DOWN_OPEN) {
		if (t->timer_use != TIMER_LINGER) {
			uint64_t waited = now_ms(t) - t->linger_since, linger = t->owner->cfg->linger_ms;
			arm_timer(t, TIMER_LINGER, waited < linger ? linger - waited : 1);
		}
	} else if (t->up != UP_OPEN || t->down != DOWN_OPEN) {
		if (t->timer_use != TIMER_DRAIN)
			arm_timer(t, TIMER_DRAIN, TUNNEL_DRAIN_TIMEOUT_MS);
	}
}

/* ---- local side ---------------------------------------------------------- */

/* The local connection failed (a reset, a failed write): the event only;
 * the caller runs proceed. */
static void local_gone(struct tunnel *t, int status)
{
	log_debug("tunnel %" PRIu64 ": local connection from %s failed: %s", t->id, t->peer, uv_strerror(status));
	set_reason(t, "local reset");
	t->local_eof = true;
	set_down(t, DOWN_CLOSED);
	/* A reset ends the WebSocket at once: the Close jumps the queue. */
	if (t->phase == PHASE_OPEN && t->up < UP_CLOSING && ws_queue_close(t->ws, 1000) == WS_OK)
		set_up(t, UP_CLOSING);
}

static void local_failed(struct tunnel *t, int status)
{
	local_gone(t, status);
	if (t->phase != PHASE_OPEN) {
		close_all(t, "local reset");
		return;
	}
	proceed(t);
}

static void on_local_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct tunnel *t = stream->data;
	if (nread == UV_EOF) {
		log_debug("tunnel %" PRIu64 ": local client %s finished sending", t->id, t->peer);
		set_reason(t, "local close");
		t->local_eof = true;
		if (t->up == UP_OPEN)
			set_up(t, UP_EOF);
		proceed(t);
		return;
	}
	if (nread < 0) {
		local_failed(t, (int)nread);
		return;
	}
	if (nread == 0)
		return;
	if (t->up != UP_OPEN) {
		t->discarded += (uint64_t)nread;
		return;
	}
	/* One read is at most one frame (the read buffer is 64 KiB). Until
	 * the WebSocket is open, the bytes wait in the hold queue. */
	int rc;
	if (t->phase == PHASE_OPEN && t->hold.len == 0) {
		rc = ws_send_binary(t->ws, (const uint8_t *)buf->base, (size_t)nread);
		if (rc == WS_OK) {
			t->bytes_up += (uint64_t)nread;
			t->traffic_at = now_ms(t);
		}
	} else {
		rc = bufq_append(&t->hold, buf->base, (size_t)nread) == 0 ? WS_OK : WS_ERR_NOMEM;
	}
	if (rc == WS_ERR_CLOSED) {
		t->discarded += (uint64_t)nread;
		return;
	}
	if (rc != WS_OK) {
		close_all(t, "out of memory");
		return;
	}
	proceed(t);
}

static void on_local_written(struct writer *w, int status)
{
	struct tunnel *t = (struct tunnel *)((char *)w - offsetof(struct tunnel, lw));
	if (t->phase == PHASE_CLOSED)
		return;
	if (status < 0) {
		local_failed(t, status);
		return;
	}
	note_progress(t);
	proceed(t);
}

static void on_local_shutdown(uv_shutdown_t *req, int status)
{
	struct tunnel *t = req->data;
	if (t->phase == PHASE_CLOSED)
		return;
	/* Standard output ends by being closed: a pipe has no FIN, and a
	 * socket shared with standard input needs its FIN (sent above) as
	 * well as this. */
	if (t->stdio != NULL)
		uv_close((uv_handle_t *)t->out, on_handle_closed);
	if (status < 0)
		t->local_eof = true;
	set_down(t, DOWN_CLOSED);
	proceed(t);
}

/* ---- handshake ------------------------------------------------------------ */

static void send_upgrade(struct tunnel *t)
{
	const struct tunnel_config *cfg = t->owner->cfg;
	uint8_t raw[16];
	char key[UPGRADE_KEY_LEN + 1], accept[UPGRADE_ACCEPT_LEN + 1];
	if (rng_bytes(raw, sizeof(raw)) != 0 || upgrade_make_key(raw, key) != 0 ||
	    upgrade_accept_for_key(key, accept) != 0) {
		log_error("cannot make a Sec-WebSocket-Key: the random generator failed");
		close_all(t, "internal error");
		return;
	}
	t->resp = malloc(sizeof(*t->resp));
	int len = upgrade_build_request(NULL, 0, cfg, key);
	char *head = len > 0 ? malloc((size_t)len + 1) : NULL;
	if (t->resp == NULL || head == NULL) {
		free(head);
		close_all(t, "out of memory");
		return;
	}
	upgrade_response_init(t->resp, accept);
	upgrade_build_request(head, (size_t)len + 1, cfg, key);
	int rc = upstream_write(&t->upstream, (const uint8_t *)head, (size_t)len);
	/* The head carries the credential: wipe it before freeing. */
	memset(head, 0, (size_t)len);
	free(head);
	if (rc != 0) {
		close_all(t, "out of memory");
		return;
	}
	set_phase(t, PHASE_HANDSHAKE);
	if (log_enabled(LOG_DEBUG)) {
		char target[1024];
		url_build_target(target, sizeof(target), cfg, true);
		log_debug("tunnel %" PRIu64 ": upgrading %s://%s%s via %s", t->id, cfg->tls ? "wss" : "ws",
			  cfg->host, target, t->upstream.peer);
	}
	proceed(t);
}

static void report_refusal(struct tunnel *t)
{
	const struct upgrade_response *r = t->resp;
	t->http_status = r->status;
	char text[256];
	upgrade_refusal_text(r, text, sizeof(text));
	const char *hint = upgrade_refusal_hint(r->status, text, t->owner->cfg->access);
	if (r->error_cause[0] != '\0') {
		char cause[sizeof(r->error_cause)];
		snprintf(cause, sizeof(cause), "%s", r->error_cause);
		for (char *p = cause; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = ' ';
		log_debug("tunnel %" PRIu64 ": Otoroshi-Error-Cause: %s", t->id, cause);
	}
	char reason[128];
	snprintf(reason, sizeof(reason), "%s", r->reason);
	for (char *p = reason; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	log_error("Otoroshi refused the tunnel for %s: HTTP %d%s%s%s%s%s%s", t->peer, r->status,
		  reason[0] ? " " : "", reason, text[0] ? ": " : "", text, hint ? " — " : "", hint ? hint : "");
}

/* Hands bytes from the gateway to the WebSocket layer. */
static void feed_frames(struct tunnel *t, const uint8_t *data, size_t len)
{
	int rc = len > 0 ? ws_feed(t->ws, data, len) : WS_OK;
	if (rc == WS_ERR_PROTOCOL) {
		log_error("Otoroshi sent an invalid WebSocket frame for %s: %s; closing the tunnel", t->peer,
			  ws_error_detail(t->ws));
		set_reason(t, "protocol error");
		set_up(t, UP_CLOSING);
		set_down(t, DOWN_ENDING);
	} else if (rc != WS_OK) {
		close_all(t, "out of memory");
		return;
	}
	proceed(t);
}

static void handshake_input(struct tunnel *t, const uint8_t *data, size_t len)
{
	size_t used = 0;
	int rc = upgrade_response_feed(t->resp, data, len, &used);
	if (rc == UPGRADE_NEED_MORE)
		return;
	if (rc == UPGRADE_REFUSED) {
		report_refusal(t);
		close_all(t, "refused");
		return;
	}
	if (rc < 0) {
		log_error("Otoroshi's answer to the WebSocket upgrade for %s is not usable: %s", t->peer,
			  upgrade_strerror(rc));
		close_all(t, "bad upgrade answer");
		return;
	}
	free(t->resp);
	t->resp = NULL;
	uv_timer_stop(&t->timer);
	t->timer_use = TIMER_NONE;
	set_phase(t, PHASE_OPEN);
	t->opened_at = t->traffic_at = now_ms(t);
	liveness_init(&t->live, t->opened_at);
	log_debug("tunnel %" PRIu64 ": WebSocket open for %s", t->id, t->peer);
	/* Frames that came in the same read as the head are the first data. */
	feed_frames(t, data + used, len - used);
}

/* ---- upstream callbacks ----------------------------------------------------- */

static void up_on_connect(void *user, int status, const char *stage, const char *detail)
{
	struct tunnel *t = user;
	if (t->phase == PHASE_CLOSED)
		return;
	if (status == 0) {
		log_debug("tunnel %" PRIu64 ": connected to Otoroshi at %s", t->id, t->upstream.peer);
		send_upgrade(t);
		return;
	}
	const struct tunnel_config *cfg = t->owner->cfg;
	if (status == UV_EMFILE || status == UV_ENFILE) {
		/* Out of descriptors, every new tunnel fails the same way: say it
		 * once a second, not once a tunnel. */
		static uint64_t said_at, unsaid;
		uint64_t now = uv_now(t->owner->loop);
		if (said_at != 0 && now - said_at < 1000) {
			unsaid++;
		} else {
			log_error("cannot open a connection to Otoroshi for %s: %s (raise 'ulimit -n' or lower "
				  "--max-connections)%s", t->peer, uv_strerror(status), unsaid ? "; more tunnels failed so" : "");
			said_at = now;
			unsaid = 0;
		}
	} else if (strcmp(stage, "proxy") == 0 || (t->owner->proxy != NULL && strcmp(stage, "connect") == 0))
		log_error("cannot reach Otoroshi at %s through the proxy %s:%u (%s) for %s: %s", cfg->host,
			  t->owner->proxy->host, (unsigned)t->owner->proxy->port, t->owner->proxy->source, t->peer,
			  detail ? detail : uv_strerror(status));
	else if (strcmp(stage, "resolve") == 0 && t->owner->proxy != NULL)
		log_error("cannot resolve the proxy's host name '%s' (%s) for %s: %s", t->owner->proxy->host,
			  t->owner->proxy->source, t->peer, uv_strerror(status));
	else if (strcmp(stage, "tls") == 0)
		log_error("cannot open TLS to Otoroshi at %s for %s: %s", cfg->host, t->peer,
			  detail ? detail : uv_strerror(status));
	else if (strcmp(stage, "resolve") == 0)
		log_error("cannot resolve Otoroshi's host name '%s' for %s: %s — check --host", cfg->gw_name, t->peer,
			  uv_strerror(status));
	else if (status == UV_ECONNREFUSED)
		log_error("cannot connect to Otoroshi at %s for %s: connection refused — check --host and its port",
			  cfg->host, t->peer);
	else
		log_error("cannot connect to Otoroshi at %s for %s: %s", cfg->host, t->peer, uv_strerror(status));
	close_all(t, strcmp(stage, "tls") == 0     ? "TLS failed"
		     : strcmp(stage, "proxy") == 0 ? "proxy refused"
						   : "gateway unreachable");
}

static void up_on_read(void *user, const uint8_t *data, size_t len)
{
	struct tunnel *t = user;
	liveness_heard(&t->live, now_ms(t));
	if (t->phase == PHASE_HANDSHAKE) {
		handshake_input(t, data, len);
		return;
	}
	if (t->phase == PHASE_OPEN)
		feed_frames(t, data, len);
}

static void up_on_end(void *user, int status)
{
	struct tunnel *t = user;
	if (t->phase == PHASE_HANDSHAKE) {
		if (status == UV_EOF && upgrade_response_eof(t->resp) == UPGRADE_REFUSED) {
			report_refusal(t);
			close_all(t, "refused");
		} else {
			log_error("Otoroshi closed the connection during the WebSocket upgrade for %s: %s%s", t->peer,
				  status == UV_EOF ? "no complete answer" : uv_strerror(status),
				  t->resp->head_len == 0 && !t->owner->cfg->tls
					  ? " (nothing at all came back: if this port speaks TLS, add --tls)"
					  : "");
			close_all(t, "upgrade failed");
		}
		return;
	}
	if (t->phase != PHASE_OPEN)
		return;
	if (!ws_close_received(t->ws) && t->up < UP_CLOSED) {
		if (status == UV_EOF)
			log_warn("Otoroshi ended the connection for %s without a WebSocket Close", t->peer);
		else
			log_warn("the connection to Otoroshi for %s failed: %s", t->peer, uv_strerror(status));
		set_reason(t, "gateway connection lost");
	}
	/* Nothing more can go up; what came down is delivered, then FIN. */
	t->gateway_gone = true;
	set_up(t, UP_CLOSED);
	set_down(t, DOWN_ENDING);
	proceed(t);
}

static void up_on_written(void *user, int status)
{
	struct tunnel *t = user;
	if (t->phase == PHASE_CLOSED)
		return;
	if (status < 0) {
		up_on_end(user, status);
		return;
	}
	note_progress(t);
	proceed(t);
}

static void free_if_done(struct tunnel *t)
{
	if (--t->open_handles > 0)
		return;
	listener_tunnel_gone(t->owner, t, t->failed);
	free(t->stdio);
	free(t);
}

static void up_on_closed(void *user)
{
	free_if_done(user);
}

static const struct upstream_callbacks upstream_cbs = {
	.on_connect = up_on_connect,
	.on_read = up_on_read,
	.on_end = up_on_end,
	.on_written = up_on_written,
	.on_closed = up_on_closed,
};

/* ---- the engine ------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *handle)
{
	struct tunnel *t = handle->data;
	if (handle == (uv_handle_t *)t->out)
		writer_finish(&t->lw);
	free_if_done(t);
}

static void close_all(struct tunnel *t, const char *reason)
{
	if (t->phase == PHASE_CLOSED)
		return;
	set_reason(t, reason);
	set_phase(t, PHASE_CLOSED);
	t->failed = !is_clean(t->end_reason);
	uint64_t ms = uv_now(t->owner->loop) - t->started_ms;
	char extra[48] = "";
	if (t->http_status != 0)
		snprintf(extra, sizeof(extra), ", HTTP %d", t->http_status);
	else if (t->close_code != 0)
		snprintf(extra, sizeof(extra), ", Close %u", t->close_code);
	log_info("Tunnel from %s closed after %" PRIu64 ".%03u s: %" PRIu64 " bytes sent, %" PRIu64
		 " bytes received (%s%s)", t->peer, ms / 1000, (unsigned)(ms % 1000), t->bytes_up, t->bytes_down,
		 t->end_reason, extra);
	if (t->discarded > 0)
		log_debug("tunnel %" PRIu64 ": %" PRIu64 " bytes from %s arrived after the gateway closed and were dropped",
			  t->id, t->discarded, t->peer);
	uv_timer_stop(&t->timer);
	uv_close((uv_handle_t *)&t->timer, on_handle_closed);
	if (t->in != t->out && !uv_is_closing((uv_handle_t *)t->in))
		uv_close((uv_handle_t *)t->in, on_handle_closed);
	if (!uv_is_closing((uv_handle_t *)t->out))
		uv_close((uv_handle_t *)t->out, on_handle_closed);
	upstream_close(&t->upstream);
	free(t->resp);
	t->resp = NULL;
	ws_destroy(t->ws);
	t->ws = NULL;
	bufq_finish(&t->hold);
}

/* Starts or stops reading the local client: it may send while the queue
 * towards the gateway is below the watermarks, and after the gateway has
 * gone its bytes are read and dropped so that closing never resets a
 * client that is still sending. */
static void steer_local(struct tunnel *t)
{
	bool want;
	if (t->local_eof)
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
	else if (t->phase != PHASE_OPEN || t->gateway_gone || !ws_want_read(t->ws))
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
				bufq_finish(&t->hold);
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

/* Pushes the local -> gateway direction: frames out, then the Close. */
static void push_up(struct tunnel *t)
{
	if (t->hold.len > 0 && t->up <= UP_EOF && release_hold(t) != WS_OK) {
		close_all(t, "out of memory");
		return;
	}
	if (t->up == UP_EOF && t->hold.len == 0 && upstream_pending(&t->upstream) == 0) {
		set_up(t, UP_LINGER);
		t->linger_since = now_ms(t);
	}
	if (t->up == UP_LINGER && linger_done(t)) {
		log_debug("tunnel %" PRIu64 ": %s: sending Close 1000", t->id,
			  t->stop_now || t->owner->cfg->linger_ms == 0 ? "the local side ended"
								       : "Otoroshi sent nothing for the linger period");
		if (ws_queue_close(t->ws, 1000) == WS_OK)
			set_up(t, UP_CLOSING);
		else
			set_up(t, UP_CLOSED);
	}
	if (t->up <= UP_CLOSING && ws_flush(t->ws) != WS_OK) {
		close_all(t, "out of memory");
		return;
	}
	if (t->up == UP_CLOSING && ws_close_sent(t->ws) && upstream_pending(&t->upstream) == 0) {
		if (ws_close_code_sent(t->ws) >= 1002 && ws_close_code_sent(t->ws) <= 1011 && !ws_close_received(t->ws))
			set_reason(t, "protocol error");
		set_up(t, UP_CLOSED);
	}
}

/* Pushes the gateway -> local direction: data out, then the FIN. */
static void push_down(struct tunnel *t)
{
	int rc;
	if (t->down == DOWN_ENDING && writer_pending(&t->lw) == 0) {
		set_down(t, DOWN_SHUT);
		t->shutdown_req.data = t;
		if (uv_shutdown(&t->shutdown_req, t->out, on_local_shutdown) != 0) {
			/* The local side is gone already: nothing more to tell it. */
			t->local_eof = true;
			set_down(t, DOWN_CLOSED);
		}
	}
	if ((rc = writer_flush(&t->lw)) < 0 && t->down < DOWN_CLOSED)
		local_gone(t, rc);
}

static void proceed(struct tunnel *t)
{
	/* Pushing one direction can end the other (a failed local write
	 * queues a Close): push until the states hold still. */
	for (int pass = 0; pass < 3; pass++) {
		if (t->phase == PHASE_CLOSED)
			return;
		enum up_state up = t->up;
		enum down_state down = t->down;
		if (t->phase == PHASE_OPEN) {
			push_up(t);
			if (t->phase == PHASE_CLOSED)
				return;
		}
		upstream_flush(&t->upstream);
		push_down(t);
		if (t->up == up && t->down == down)
			break;
	}

	/* The socket to the gateway is of no more use once our Close is out
	 * and the gateway is done: its Close came, it broke the protocol, or
	 * its connection is gone. */
	if (t->phase == PHASE_OPEN && t->up == UP_CLOSED && t->down != DOWN_OPEN && !t->upstream_closing &&
	    (t->gateway_gone || !ws_want_read(t->ws))) {
		t->upstream_closing = true;
		upstream_close(&t->upstream);
	}
	if (t->phase == PHASE_OPEN)
		steer_timer(t);
	if (t->up == UP_CLOSED && t->down == DOWN_CLOSED && (t->local_eof || t->fin_wait_over) &&
	    (t->gateway_gone || !ws_want_read(t->ws))) {
		close_all(t, "done");
		return;
	}
	steer_local(t);
	steer_upstream(t);
}

/* ---- life cycle ----------------------------------------------------------- */

static void format_peer(const uv_tcp_t *tcp, char *out, size_t outlen)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	snprintf(out, outlen, "?");
	if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) == 0)
		url_format_sockaddr((const struct sockaddr *)&ss, out, outlen);
}

static void free_unlinked(uv_handle_t *handle)
{
	free(handle->data);
}

/* What tunnel_start and tunnel_start_stdio share, once the local handles
 * exist: the timer, the upstream, the WebSocket, and the first steps. */
static int begin(struct tunnel *t, struct listener *l, int local_handles)
{
	int rc;
	t->owner = l;
	t->id = ++l->next_id;
	t->started_ms = uv_now(l->loop);
	writer_init(&t->lw, t->out, on_local_written);
	uv_timer_init(l->loop, &t->timer);
	t->timer.data = t;
	upstream_init(&t->upstream, l->loop, &upstream_cbs, t);
	if (l->cfg->tls)
		upstream_use_tls(&t->upstream, l->cfg->gw_name);
	if (l->proxy != NULL)
		upstream_use_proxy(&t->upstream, l->proxy);
	if (l->cfg->keepalive > 0)
		upstream_use_probes(&t->upstream, (l->cfg->keepalive + 3) / 4);
	t->open_handles = local_handles + 2;
	listener_tunnel_added(l, t);

	t->ws = ws_create(&ws_cbs, t);
	if (t->ws == NULL) {
		log_error("out of memory for the tunnel of %s", t->peer);
		close_all(t, "out of memory");
		return 0;
	}
	arm_timer(t, TIMER_HANDSHAKE, TUNNEL_HANDSHAKE_TIMEOUT_MS);
	rc = upstream_connect(&t->upstream, l->cfg->gw_name, l->cfg->gw_port);
	if (rc < 0) {
		up_on_connect(t, rc, "resolve", NULL);
		return 0;
	}
	/* Read the local client at once: what it sends before the upgrade
	 * completes is held (up to the high-water mark) and sent after. */
	proceed(t);
	return 0;
}

int tunnel_start(struct listener *l, uv_stream_t *server)
{
	struct tunnel *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return UV_ENOMEM;
	int rc = uv_tcp_init(l->loop, &t->local);
	if (rc < 0) {
		free(t);
		return rc;
	}
	t->local.data = t;
	rc = uv_accept(server, (uv_stream_t *)&t->local);
	if (rc < 0) {
		/* Nothing is linked yet: close the bare handle and free. */
		uv_close((uv_handle_t *)&t->local, free_unlinked);
		return rc;
	}
	t->in = t->out = (uv_stream_t *)&t->local;
	format_peer(&t->local, t->peer, sizeof(t->peer));
	log_info("New TCP connection from: %s", t->peer);
	uv_tcp_nodelay(&t->local, 1);
	return begin(t, l, 1);
}

/* Wraps a standard descriptor in the libuv stream its type calls for. */
static int open_std(uv_loop_t *loop, int fd, union any_stream *h, void *data)
{
	int rc;
	switch (uv_guess_handle(fd)) {
	case UV_NAMED_PIPE:
		rc = uv_pipe_init(loop, &h->pipe, 0);
		if (rc == 0 && (rc = uv_pipe_open(&h->pipe, fd)) != 0)
			uv_close((uv_handle_t *)&h->pipe, NULL);
		break;
	case UV_TCP:
		rc = uv_tcp_init(loop, &h->tcp);
		if (rc == 0 && (rc = uv_tcp_open(&h->tcp, fd)) != 0)
			uv_close((uv_handle_t *)&h->tcp, NULL);
		break;
	case UV_TTY:
		rc = uv_tty_init(loop, &h->tty, fd, 0);
		break;
	default:
		return UV_EINVAL;
	}
	if (rc == 0)
		h->tcp.data = data;
	return rc;
}

int tunnel_start_stdio(struct listener *l)
{
	struct tunnel *t = calloc(1, sizeof(*t));
	struct stdio_pair *p = calloc(1, sizeof(*p));
	if (t == NULL || p == NULL) {
		free(t);
		free(p);
		return UV_ENOMEM;
	}
	int rc = open_std(l->loop, 0, &p->in, t);
	if (rc == 0 && (rc = open_std(l->loop, 1, &p->out, t)) != 0)
		uv_close((uv_handle_t *)&p->in, NULL);
	if (rc != 0) {
		/* Whatever was opened closes in this loop pass, before the
		 * caller returns from the loop. */
		free(t);
		free(p);
		return rc;
	}
	t->stdio = p;
	t->in = (uv_stream_t *)&p->in;
	t->out = (uv_stream_t *)&p->out;
	snprintf(t->peer, sizeof(t->peer), "stdio");
	log_debug("tunnel over standard input and output");
	return begin(t, l, 2);
}

void tunnel_shutdown(struct tunnel *t)
{
	if (t->phase == PHASE_CLOSED)
		return;
	if (t->phase != PHASE_OPEN) {
		close_all(t, "stopped");
		return;
	}
	set_reason(t, "stopped");
	t->stop_now = true;
	if (t->up == UP_OPEN)
		set_up(t, UP_EOF);
	t->local_eof = true; /* read no more from the local client */
	proceed(t);
}

void tunnel_check_alive(struct tunnel *t, uint64_t now, uint64_t interval)
{
	if (t->phase != PHASE_OPEN || t->down != DOWN_OPEN)
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
			 "nothing sent to it moved (--keepalive %" PRIu64 ")", t->peer,
			 liveness_quiet(&t->live, now) / 1000, interval / 1000);
		set_reason(t, "gateway stopped answering");
		t->gateway_gone = true;
		set_up(t, UP_CLOSED);
		set_down(t, DOWN_ENDING);
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
	close_all(t, t->end_reason ? t->end_reason : "stopped");
}

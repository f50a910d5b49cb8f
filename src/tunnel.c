/* tunnel: one local connection carried over one WebSocket; see tunnel.h.
 *
 * Every event (a read, a finished write, a timer) updates the state and then
 * calls proceed(), which pushes each direction as far as it can go, decides
 * who may read, and ends the tunnel once both directions are done. Nothing
 * else starts or stops reading, so the watermarks are decided in one place.
 *
 * Directions:
 *   up   (local -> gateway): OPEN -> EOF -> CLOSING -> CLOSED
 *        EOF: the local client finished sending; Close 1000 follows the data.
 *        CLOSING: a Close frame is queued; CLOSED: it is on the wire, or
 *        nothing more can be sent.
 *   down (gateway -> local): OPEN -> ENDING -> SHUT -> CLOSED
 *        ENDING: the gateway is done (Close or end of socket): what it sent
 *        is still being written to the local client; SHUT: FIN requested;
 *        CLOSED: FIN sent, or the local side is gone. */
#include "tunnel.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
enum up_state { UP_OPEN, UP_EOF, UP_CLOSING, UP_CLOSED };
enum down_state { DOWN_OPEN, DOWN_ENDING, DOWN_SHUT, DOWN_CLOSED };

static const char *const phase_names[] = {"connecting", "handshake", "open", "closed"};
static const char *const up_names[] = {"open", "eof", "closing", "closed"};
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

	struct ws *ws;
	struct upgrade_response *resp; /* only during the handshake */
	struct bufq hold; /* local bytes read before the WebSocket is open */

	uv_timer_t timer; /* handshake timeout, then the idle limit of the ending */
	bool ending;        /* a direction has started to end */
	bool linger_over;   /* gave up waiting for the local client's FIN */

	uint64_t last_rx;   /* loop time of the last bytes from the gateway */
	uint64_t ping_at;   /* loop time of the last Ping sent, 0: none since last_rx */

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

static void arm_timer(struct tunnel *t, uint64_t ms);

/* While a tunnel ends, each sign of progress gives it more time: a reply
 * streaming after a local half-close is not cut while it flows. */
static void note_progress(struct tunnel *t)
{
	if (t->ending)
		arm_timer(t, TUNNEL_DRAIN_TIMEOUT_MS);
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
	note_progress(t);
}

static void ws_on_close(void *user, uint16_t code, const uint8_t *reason, size_t reason_len)
{
	struct tunnel *t = user;
	(void)reason;
	(void)reason_len;
	t->close_code = code;
	if (code == 1011 && t->bytes_down == 0) {
		log_error("Otoroshi could not reach the remote service for %s (Close 1011 right after the "
			  "handshake): check --remote-host/--remote-port and that the route's target is up",
			  t->peer);
		set_reason(t, "gateway could not reach the remote service");
	} else if (code == 1000 || code == 0) {
		log_debug("tunnel %" PRIu64 ": Otoroshi closed the WebSocket (%u)", t->id, code);
		set_reason(t, "gateway closed");
	} else {
		log_warn("Otoroshi closed the tunnel for %s with code %u (%s)", t->peer, code, ws_describe_code(code));
		set_reason(t, "gateway closed with an error");
	}
	/* wslay has queued its answering Close: nothing more goes up. */
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

static void on_timer(uv_timer_t *timer)
{
	struct tunnel *t = timer->data;
	if (t->phase == PHASE_CONNECTING || t->phase == PHASE_HANDSHAKE) {
		log_error("Otoroshi at %s timed out: no answer to the WebSocket upgrade within %d s for %s",
			  t->owner->cfg->host, TUNNEL_HANDSHAKE_TIMEOUT_MS / 1000, t->peer);
		close_all(t, "handshake timed out");
		return;
	}
	if (t->down == DOWN_OPEN) {
		log_debug("tunnel %" PRIu64 ": Otoroshi sent nothing and did not close within %d s of our Close",
			  t->id, TUNNEL_DRAIN_TIMEOUT_MS / 1000);
		set_reason(t, "drain timed out");
		set_up(t, UP_CLOSED);
		set_down(t, DOWN_ENDING);
		arm_timer(t, TUNNEL_DRAIN_TIMEOUT_MS);
		proceed(t);
		return;
	}
	if (t->down == DOWN_CLOSED && t->up == UP_CLOSED) {
		/* Everything is delivered; the local client kept its side open. */
		t->linger_over = true;
		proceed(t);
		return;
	}
	log_debug("tunnel %" PRIu64 ": no progress for %d s while ending (up %s, down %s)", t->id,
		  TUNNEL_DRAIN_TIMEOUT_MS / 1000, up_names[t->up], down_names[t->down]);
	close_all(t, "ending timed out");
}

static void arm_timer(struct tunnel *t, uint64_t ms)
{
	uv_timer_start(&t->timer, on_timer, ms, 0);
}

/* ---- local side ---------------------------------------------------------- */

static void local_failed(struct tunnel *t, int status)
{
	log_debug("tunnel %" PRIu64 ": local connection from %s failed: %s", t->id, t->peer, uv_strerror(status));
	set_reason(t, "local reset");
	t->local_eof = true;
	set_down(t, DOWN_CLOSED);
	if (t->phase != PHASE_OPEN) {
		close_all(t, "local reset");
		return;
	}
	/* A reset ends the WebSocket at once: the Close jumps the queue. */
	if (t->up < UP_CLOSING && ws_queue_close(t->ws, 1000) == WS_OK)
		set_up(t, UP_CLOSING);
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
		if (rc == WS_OK)
			t->bytes_up += (uint64_t)nread;
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
	const char *hint = upgrade_refusal_hint(r->status, t->owner->cfg->access);
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
	set_phase(t, PHASE_OPEN);
	t->last_rx = uv_now(t->owner->loop);
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
	t->last_rx = uv_now(t->owner->loop);
	t->ping_at = 0;
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
			log_error("Otoroshi closed the connection during the WebSocket upgrade for %s: %s", t->peer,
				  status == UV_EOF ? "no complete answer" : uv_strerror(status));
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

/* Reads from the gateway while the local client keeps up with what came. */
static void steer_upstream(struct tunnel *t)
{
	bool want;
	if (t->phase == PHASE_HANDSHAKE)
		want = true;
	else if (t->phase != PHASE_OPEN || t->down != DOWN_OPEN || !ws_want_read(t->ws))
		want = false;
	else {
		size_t queued = writer_pending(&t->lw);
		if (queued >= TUNNEL_HIGH_WATER)
			t->upstream_paused = true;
		else if (queued < TUNNEL_LOW_WATER)
			t->upstream_paused = false;
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
	if (t->up == UP_EOF && t->hold.len == 0) {
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
	if (t->down == DOWN_ENDING && writer_pending(&t->lw) == 0) {
		set_down(t, DOWN_SHUT);
		t->shutdown_req.data = t;
		if (uv_shutdown(&t->shutdown_req, t->out, on_local_shutdown) != 0) {
			t->local_eof = true;
			set_down(t, DOWN_CLOSED);
		}
	}
	if (writer_flush(&t->lw) < 0 && t->down < DOWN_CLOSED) {
		t->local_eof = true;
		set_down(t, DOWN_CLOSED);
	}
}

static void proceed(struct tunnel *t)
{
	if (t->phase == PHASE_CLOSED)
		return;
	if (t->phase == PHASE_OPEN) {
		push_up(t);
		if (t->phase == PHASE_CLOSED)
			return;
	}
	upstream_flush(&t->upstream);
	push_down(t);

	/* The socket to the gateway is of no more use once our Close is out
	 * and the gateway is done. */
	if (t->phase == PHASE_OPEN && t->up == UP_CLOSED && t->down != DOWN_OPEN && !t->upstream_closing) {
		t->upstream_closing = true;
		upstream_close(&t->upstream);
	}
	if (t->phase == PHASE_OPEN && !t->ending && (t->up != UP_OPEN || t->down != DOWN_OPEN)) {
		t->ending = true;
		arm_timer(t, TUNNEL_DRAIN_TIMEOUT_MS);
	}
	if (t->up == UP_CLOSED && t->down == DOWN_CLOSED && (t->local_eof || t->linger_over)) {
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
	t->open_handles = local_handles + 2;
	listener_tunnel_added(l, t);

	t->ws = ws_create(&ws_cbs, t);
	if (t->ws == NULL) {
		log_error("out of memory for the tunnel of %s", t->peer);
		close_all(t, "out of memory");
		return 0;
	}
	arm_timer(t, TUNNEL_HANDSHAKE_TIMEOUT_MS);
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
	if (t->upstream_paused || !t->upstream.reading || t->last_rx == 0) {
		t->last_rx = now;
		t->ping_at = 0;
		return;
	}
	uint64_t quiet = now - t->last_rx;
	if (quiet >= 2 * interval) {
		log_warn("Otoroshi stopped answering for %s: nothing received for %" PRIu64 " s, not even a Pong "
			 "(--keepalive %" PRIu64 ")", t->peer, quiet / 1000, interval / 1000);
		set_reason(t, "gateway stopped answering");
		set_up(t, UP_CLOSED);
		set_down(t, DOWN_ENDING);
		proceed(t);
		return;
	}
	if (quiet >= interval && t->ping_at == 0) {
		uint8_t payload[8];
		for (int i = 0; i < 8; i++)
			payload[i] = (uint8_t)(now >> (56 - 8 * i));
		if (ws_queue_ping(t->ws, payload, sizeof(payload)) == WS_OK) {
			t->ping_at = now;
			log_trace("tunnel %" PRIu64 ": Ping after %" PRIu64 " ms of silence", t->id, quiet);
			proceed(t);
		}
	}
}

void tunnel_abort(struct tunnel *t)
{
	close_all(t, t->end_reason ? t->end_reason : "stopped");
}

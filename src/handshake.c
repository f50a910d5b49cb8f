/* handshake: the upgrade and the messages of the steps before it; see
 * handshake.h. */
#include "handshake.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <mbedtls/platform_util.h>

#include "log.h"
#include "rng.h"
#include "url.h"

struct handshake {
	struct upgrade_response resp;
};

struct handshake *handshake_start(const struct handshake_who *who, struct stream *out, const char *via,
				  enum end_reason *reason)
{
	const struct tunnel_config *cfg = who->cfg;
	uint8_t raw[16];
	char key[UPGRADE_KEY_LEN + 1], accept[UPGRADE_ACCEPT_LEN + 1];
	if (rng_bytes(raw, sizeof(raw)) != 0 || upgrade_make_key(raw, key) != 0 ||
	    upgrade_accept_for_key(key, accept) != 0) {
		log_error("cannot make a Sec-WebSocket-Key: the random generator failed");
		*reason = END_INTERNAL;
		return NULL;
	}
	struct handshake *h = malloc(sizeof(*h));
	int len = upgrade_build_request(NULL, 0, cfg, key);
	char *head = len > 0 ? malloc((size_t)len + 1) : NULL;
	int rc = UV_ENOMEM;
	if (h != NULL && head != NULL && upgrade_build_request(head, (size_t)len + 1, cfg, key) == len)
		rc = out->ops->write(out, (const uint8_t *)head, (size_t)len, true);
	/* The head carries the credential. */
	if (head != NULL)
		mbedtls_platform_zeroize(head, (size_t)len + 1);
	free(head);
	if (rc != 0) {
		free(h);
		log_error("out of memory for the upgrade of %s", who->peer);
		*reason = END_NO_MEMORY;
		return NULL;
	}
	upgrade_response_init(&h->resp, accept);
	if (log_enabled(LOG_DEBUG)) {
		char target[1024];
		url_build_target(target, sizeof(target), cfg, true);
		log_debug("tunnel %" PRIu64 ": upgrading %s://%s%s via %s", who->id, cfg->tls ? "wss" : "ws", cfg->host,
			  target, via);
		for (size_t i = 0; i < cfg->n_headers; i++) {
			const char *h = cfg->headers[i];
			if (cfg->header_secret[i])
				log_debug("tunnel %" PRIu64 ": with the header %.*s: (hidden: its name says it is a secret)",
					  who->id, (int)strcspn(h, ":"), h);
			else
				log_debug("tunnel %" PRIu64 ": with the header %s", who->id, h);
		}
	}
	return h;
}

void handshake_destroy(struct handshake *h)
{
	free(h);
}

int handshake_status(const struct handshake *h)
{
	return h->resp.status;
}

int handshake_feed(struct handshake *h, const uint8_t *data, size_t len, size_t *used)
{
	return upgrade_response_feed(&h->resp, data, len, used);
}

static void printable(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

static void report_refusal(const struct handshake_who *who, const struct upgrade_response *r)
{
	char text[256];
	upgrade_refusal_text(r, text, sizeof(text));
	const char *hint = upgrade_refusal_hint(r->status, text, who->cfg->access);
	if (r->error_cause[0] != '\0') {
		char cause[sizeof(r->error_cause)];
		snprintf(cause, sizeof(cause), "%s", r->error_cause);
		printable(cause);
		log_debug("tunnel %" PRIu64 ": Otoroshi-Error-Cause: %s", who->id, cause);
	}
	char reason[128];
	snprintf(reason, sizeof(reason), "%s", r->reason);
	printable(reason);
	const struct log_field fields[] = {
		LOG_STR("peer", who->addr),
		LOG_STR("forward", who->forward),
		LOG_INT("http_status", r->status),
		LOG_STR("otoroshi_message", text[0] ? text : NULL),
	};
	log_fields(LOG_ERROR, fields, sizeof(fields) / sizeof(fields[0]),
		   "Otoroshi refused the tunnel for %s: HTTP %d%s%s%s%s%s%s", who->peer, r->status, reason[0] ? " " : "",
		   reason, text[0] ? ": " : "", text, hint ? " — " : "", hint ? hint : "");
}

enum end_reason handshake_report(const struct handshake_who *who, struct handshake *h, int result, int *http_status)
{
	if (result == UPGRADE_REFUSED) {
		*http_status = h->resp.status;
		report_refusal(who, &h->resp);
		return END_REFUSED;
	}
	log_error("Otoroshi's answer to the WebSocket upgrade for %s is not usable: %s", who->peer,
		  upgrade_strerror(result));
	return END_BAD_UPGRADE;
}

enum end_reason handshake_report_eof(const struct handshake_who *who, struct handshake *h, int status,
				     int *http_status)
{
	if (status == UV_EOF && upgrade_response_eof(&h->resp) == UPGRADE_REFUSED)
		return handshake_report(who, h, UPGRADE_REFUSED, http_status);
	log_error("Otoroshi closed the connection during the WebSocket upgrade for %s: %s%s", who->peer,
		  status == UV_EOF ? "no complete answer" : uv_strerror(status),
		  h->resp.head_len == 0 && !who->cfg->tls ? " (nothing at all came back: if this port speaks TLS, add --tls)"
							   : "");
	return END_UPGRADE_FAILED;
}

enum end_reason handshake_report_open_failure(const struct handshake_who *who, int status, enum stream_stage stage,
					      const char *detail, uint64_t now)
{
	const struct tunnel_config *cfg = who->cfg;
	const struct proxy *proxy = who->proxy;
	const char *why = detail ? detail : uv_strerror(status);
	if (status == UV_EMFILE || status == UV_ENFILE) {
		/* Out of descriptors, every new tunnel fails the same way: say it
		 * once a second, not once a tunnel. */
		static uint64_t said_at, unsaid;
		if (said_at != 0 && now - said_at < 1000) {
			unsaid++;
		} else {
			log_error("cannot open a connection to Otoroshi for %s: %s (raise 'ulimit -n' or lower "
				  "--max-connections)%s", who->peer, uv_strerror(status),
				  unsaid ? "; more tunnels failed so" : "");
			said_at = now;
			unsaid = 0;
		}
		return END_UNREACHABLE;
	}
	/* With --connect-to, the name looked up and the address dialled are
	 * its own, and so is the flag to check. */
	bool side = cfg->connect_name[0] != '\0';
	char dialled[300];
	snprintf(dialled, sizeof(dialled), side ? "%s:%u (--connect-to, for %s)" : "%s%.0u%s", side ? cfg->connect_name : cfg->host,
		 side ? (unsigned)cfg->connect_port : 0u, side ? cfg->host : "");
	switch (stage) {
	case STAGE_RESOLVE:
		if (proxy != NULL)
			log_error("cannot resolve the proxy's host name '%s' (%s) for %s: %s", proxy->host, proxy->source,
				  who->peer, why);
		else
			log_error("cannot resolve Otoroshi's host name '%s' for %s: %s — check %s", side ? cfg->connect_name
				  : cfg->gw_name, who->peer, why, side ? "--connect-to" : "--host");
		return END_UNREACHABLE;
	case STAGE_CONNECT: {
		/* With several addresses, detail says how each failed. */
		char each[400] = "";
		if (detail != NULL)
			snprintf(each, sizeof(each), " (%s)", detail);
		if (proxy != NULL)
			log_error("cannot reach Otoroshi at %s through the proxy %s:%u (%s) for %s: %s%s", cfg->host,
				  proxy->host, (unsigned)proxy->port, proxy->source, who->peer, uv_strerror(status), each);
		else if (status == UV_ECONNREFUSED)
			log_error("cannot connect to Otoroshi at %s for %s: connection refused — check %s and its "
				  "port%s", dialled, who->peer, side ? "--connect-to" : "--host", each);
		else
			log_error("cannot connect to Otoroshi at %s for %s: %s%s", dialled, who->peer, uv_strerror(status),
				  each);
		return END_UNREACHABLE;
	}
	case STAGE_PROXY_TLS:
		log_error("cannot open TLS to the proxy %s:%u (%s) for %s: %s", proxy ? proxy->host : "?",
			  proxy ? (unsigned)proxy->port : 0u, proxy ? proxy->source : "?", who->peer, why);
		return END_TLS_FAILED;
	case STAGE_PROXY:
		log_error("cannot reach Otoroshi at %s through the proxy %s:%u (%s) for %s: %s", cfg->host,
			  proxy ? proxy->host : "?", proxy ? (unsigned)proxy->port : 0u, proxy ? proxy->source : "?",
			  who->peer, why);
		return END_PROXY_REFUSED;
	case STAGE_TLS:
		log_error("cannot open TLS to Otoroshi at %s for %s: %s", cfg->host, who->peer, why);
		return END_TLS_FAILED;
	case STAGE_OPEN:
		break;
	}
	log_error("cannot connect to Otoroshi at %s for %s: %s", cfg->host, who->peer, why);
	return END_UNREACHABLE;
}

void handshake_report_timeout(const struct handshake_who *who, enum stream_stage stage, unsigned seconds)
{
	const struct tunnel_config *cfg = who->cfg;
	const struct proxy *proxy = who->proxy;
	bool side = cfg->connect_name[0] != '\0';
	switch (stage) {
	case STAGE_RESOLVE:
		log_error("resolving %s's name '%s' did not finish within %u s for %s", proxy ? "the proxy" : "Otoroshi",
			  proxy ? proxy->host : side ? cfg->connect_name : cfg->gw_name, seconds, who->peer);
		return;
	case STAGE_CONNECT:
		log_error("the TCP connection to %s %s%s did not open within %u s for %s (a firewall dropping the packets?)",
			  proxy ? "the proxy" : "Otoroshi at", proxy ? proxy->host : side ? cfg->connect_name : cfg->host,
			  !proxy && side ? " (--connect-to)" : "", seconds, who->peer);
		return;
	case STAGE_PROXY_TLS:
		log_error("the TLS handshake with the proxy %s did not finish within %u s for %s (a plain proxy is given "
			  "as http://)", proxy ? proxy->host : "?", seconds, who->peer);
		return;
	case STAGE_PROXY:
		log_error("the proxy %s:%u did not answer CONNECT to %s within %u s for %s", proxy ? proxy->host : "?",
			  proxy ? (unsigned)proxy->port : 0u, cfg->host, seconds, who->peer);
		return;
	case STAGE_TLS:
		log_error("the TLS handshake with Otoroshi at %s did not finish within %u s for %s", cfg->host, seconds,
			  who->peer);
		return;
	case STAGE_OPEN:
		log_error("Otoroshi at %s timed out: no answer to the WebSocket upgrade within %u s for %s", cfg->host,
			  seconds, who->peer);
		return;
	}
}

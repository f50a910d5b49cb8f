/* upgrade: request head and incremental response parser; see upgrade.h. */
#include "upgrade.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <mbedtls/base64.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha1.h>
#include <mbedtls/version.h>

#include "url.h"

enum { PHASE_HEAD, PHASE_BODY, PHASE_DONE };

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const char *upgrade_strerror(int err)
{
	switch (err) {
	case UPGRADE_NEED_MORE: return "incomplete answer";
	case UPGRADE_SWITCHED: return "switched protocols";
	case UPGRADE_REFUSED: return "refused";
	case UPGRADE_ERR_HEAD_TOO_LARGE: return "the answer's head is larger than 16 KiB";
	case UPGRADE_ERR_MALFORMED: return "the answer is not HTTP/1.1";
	case UPGRADE_ERR_NO_UPGRADE: return "the 101 answer lacks 'Upgrade: websocket'";
	case UPGRADE_ERR_NO_CONNECTION: return "the 101 answer lacks 'Connection: Upgrade'";
	case UPGRADE_ERR_NO_ACCEPT: return "the 101 answer lacks Sec-WebSocket-Accept";
	case UPGRADE_ERR_BAD_ACCEPT: return "the 101 answer's Sec-WebSocket-Accept does not match the key sent";
	case UPGRADE_ERR_EXTENSION: return "the 101 answer names an extension or subprotocol that was not offered";
	case UPGRADE_ERR_CRYPTO: return "base64 or SHA-1 failed";
	case UPGRADE_ERR_TRUNCATED: return "the connection closed before the answer's head was complete";
	case UPGRADE_ERR_TLS: return "the gateway answered with TLS: this port wants --tls";
	case UPGRADE_ERR_HTTP10: return "the 101 answer is HTTP/1.0, which cannot switch protocols";
	default: return "unknown error";
	}
}

int upgrade_make_key(const uint8_t raw[16], char out[UPGRADE_KEY_LEN + 1])
{
	size_t olen = 0;
	if (mbedtls_base64_encode((unsigned char *)out, UPGRADE_KEY_LEN + 1, &olen, raw, 16) != 0 ||
	    olen != UPGRADE_KEY_LEN)
		return UPGRADE_ERR_CRYPTO;
	return 0;
}

int upgrade_accept_for_key(const char *key, char out[UPGRADE_ACCEPT_LEN + 1])
{
	char joined[128];
	int n = snprintf(joined, sizeof(joined), "%s%s", key, ws_guid);
	if (n < 0 || (size_t)n >= sizeof(joined))
		return UPGRADE_ERR_CRYPTO;
	unsigned char digest[20];
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
	int rc = mbedtls_sha1((const unsigned char *)joined, (size_t)n, digest);
#else
	int rc = mbedtls_sha1_ret((const unsigned char *)joined, (size_t)n, digest);
#endif
	size_t olen = 0;
	if (rc != 0 || mbedtls_base64_encode((unsigned char *)out, UPGRADE_ACCEPT_LEN + 1, &olen,
					     digest, sizeof(digest)) != 0)
		return UPGRADE_ERR_CRYPTO;
	return 0;
}

/* "Basic " + base64(id:secret), into out. */
static int basic_credential(char *out, size_t outlen, const char *id, const char *secret)
{
	size_t idlen = strlen(id), slen = strlen(secret);
	size_t plain_len = idlen + 1 + slen;
	unsigned char *plain = malloc(plain_len);
	if (plain == NULL)
		return UPGRADE_ERR_CRYPTO;
	memcpy(plain, id, idlen);
	plain[idlen] = ':';
	memcpy(plain + idlen + 1, secret, slen);
	size_t olen = 0;
	int rc = mbedtls_base64_encode((unsigned char *)out, outlen, &olen, plain, plain_len);
	/* The plain credential is a secret: do not leave it in freed memory. */
	mbedtls_platform_zeroize(plain, plain_len);
	free(plain);
	return rc == 0 ? (int)olen : UPGRADE_ERR_CRYPTO;
}

int upgrade_build_request(char *out, size_t outlen, const struct tunnel_config *cfg, const char *key)
{
	size_t tlen = url_build_target(NULL, 0, cfg, false);
	char *target = malloc(tlen + 1);
	char *auth = NULL;
	size_t auth_size = 0;
	int ret = UPGRADE_ERR_CRYPTO;
	if (target == NULL)
		goto out;
	url_build_target(target, tlen + 1, cfg, false);

	if (cfg->access == ACCESS_APIKEY && cfg->apikey_client_id && cfg->apikey_client_secret) {
		size_t alen = 4 * ((strlen(cfg->apikey_client_id) + strlen(cfg->apikey_client_secret) + 3) / 3) + 16;
		auth_size = alen + 32;
		auth = calloc(1, auth_size);
		if (auth == NULL)
			goto out;
		memcpy(auth, "Basic ", 6);
		if (basic_credential(auth + 6, alen, cfg->apikey_client_id, cfg->apikey_client_secret) < 0)
			goto out;
	} else if (cfg->access == ACCESS_BEARER && cfg->bearer_token) {
		size_t alen = strlen(cfg->bearer_token) + 8;
		auth_size = alen;
		auth = calloc(1, auth_size);
		if (auth == NULL)
			goto out;
		snprintf(auth, alen, "Bearer %s", cfg->bearer_token);
	}

	int n = snprintf(out, outlen,
			 "GET %s HTTP/1.1\r\n"
			 "Host: %s\r\n"
			 "Connection: Upgrade\r\n"
			 "Upgrade: websocket\r\n"
			 "Sec-WebSocket-Version: 13\r\n"
			 "Sec-WebSocket-Key: %s\r\n"
			 "%s%s%s",
			 target, cfg->host, key,
			 auth ? "Authorization: " : "", auth ? auth : "", auth ? "\r\n" : "");
	/* --header lines, then the blank line; out may be NULL to measure
	 * (then nothing is written: room is 0). */
	char none[1];
	for (size_t i = 0; n >= 0 && i <= cfg->n_headers; i++) {
		size_t used = (size_t)n < outlen ? (size_t)n : outlen;
		char *at = out != NULL ? out + used : none;
		size_t room = out != NULL ? outlen - used : 0;
		int m = i < cfg->n_headers ? snprintf(at, room, "%s\r\n", cfg->headers[i]) : snprintf(at, room, "\r\n");
		n = m < 0 ? m : n + m;
	}
	ret = n < 0 ? UPGRADE_ERR_CRYPTO : n;
out:
	free(target);
	if (auth != NULL) {
		mbedtls_platform_zeroize(auth, auth_size);
		free(auth);
	}
	return ret;
}

void upgrade_response_init(struct upgrade_response *r, const char *expected_accept)
{
	memset(r, 0, offsetof(struct upgrade_response, head));
	r->head_len = 0;
	r->raw_len = 0;
	r->content_length = -1;
	r->chunked = false;
	r->phase = PHASE_HEAD;
	snprintf(r->expected_accept, sizeof(r->expected_accept), "%s", expected_accept ? expected_accept : "");
}

/* Does the comma-separated list `value` hold `token` (case-insensitive)? */
static bool has_token(const char *value, const char *token)
{
	size_t tlen = strlen(token), len;
	for (const char *item; (item = url_next_item(&value, &len)) != NULL;)
		if (len == tlen && strncasecmp(item, token, tlen) == 0)
			return true;
	return false;
}

/* Returns the index one past the blank line ending the head, or 0. */
static size_t find_head_end(const char *buf, size_t len, size_t from)
{
	size_t i = from > 3 ? from - 3 : 0;
	for (; i < len; i++) {
		if (buf[i] != '\n')
			continue;
		if (i + 1 < len && buf[i + 1] == '\n')
			return i + 2;
		if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

/* Splits the head (NUL-terminated, in place) into its status line and
 * headers and checks them. */
static int parse_head(struct upgrade_response *r)
{
	char *line = r->head;
	char *next = strchr(line, '\n');
	if (next == NULL)
		return UPGRADE_ERR_MALFORMED;
	*next++ = '\0';
	size_t ll = strlen(line);
	if (ll > 0 && line[ll - 1] == '\r')
		line[--ll] = '\0';
	if (strncmp(line, "HTTP/1.", 7) != 0 || ll < 12 || line[8] != ' ' ||
	    !isdigit((unsigned char)line[9]) || !isdigit((unsigned char)line[10]) ||
	    !isdigit((unsigned char)line[11]) || (line[12] != ' ' && line[12] != '\0'))
		return UPGRADE_ERR_MALFORMED;
	r->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
	bool http10 = line[7] == '0';
	snprintf(r->reason, sizeof(r->reason), "%s", line[12] ? line + 13 : "");

	bool upgrade = false, connection = false, accept_seen = false, accept_ok = false, extra = false;
	for (line = next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		ll = strlen(line);
		if (ll > 0 && line[ll - 1] == '\r')
			line[--ll] = '\0';
		if (ll == 0)
			break;
		char *colon = strchr(line, ':');
		if (colon == NULL)
			return UPGRADE_ERR_MALFORMED;
		*colon = '\0';
		char *value = colon + 1;
		while (*value == ' ' || *value == '\t')
			value++;
		char *vend = value + strlen(value);
		while (vend > value && (vend[-1] == ' ' || vend[-1] == '\t'))
			*--vend = '\0';
		if (strcasecmp(line, "Upgrade") == 0)
			upgrade = upgrade || has_token(value, "websocket");
		else if (strcasecmp(line, "Connection") == 0)
			connection = connection || has_token(value, "upgrade");
		else if (strcasecmp(line, "Sec-WebSocket-Accept") == 0) {
			accept_seen = true;
			accept_ok = strcmp(value, r->expected_accept) == 0;
		} else if (strcasecmp(line, "Sec-WebSocket-Extensions") == 0 ||
			   strcasecmp(line, "Sec-WebSocket-Protocol") == 0)
			extra = true;
		else if (strcasecmp(line, "Content-Length") == 0) {
			char *end;
			long long v = strtoll(value, &end, 10);
			if (end == value || *end != '\0' || v < 0)
				return UPGRADE_ERR_MALFORMED;
			r->content_length = v;
		} else if (strcasecmp(line, "Transfer-Encoding") == 0)
			r->chunked = has_token(value, "chunked");
		else if (strcasecmp(line, "Location") == 0)
			snprintf(r->location, sizeof(r->location), "%s", value);
		else if (strcasecmp(line, "Otoroshi-Error-Msg") == 0)
			snprintf(r->error_msg, sizeof(r->error_msg), "%s", value);
		else if (strcasecmp(line, "Otoroshi-Error-Cause") == 0)
			snprintf(r->error_cause, sizeof(r->error_cause), "%s", value);
		else if (strcasecmp(line, "Content-Type") == 0)
			snprintf(r->content_type, sizeof(r->content_type), "%s", value);
	}
	if (r->status != 101)
		return UPGRADE_REFUSED;
	if (http10)
		return UPGRADE_ERR_HTTP10;
	if (!upgrade)
		return UPGRADE_ERR_NO_UPGRADE;
	if (!connection)
		return UPGRADE_ERR_NO_CONNECTION;
	if (!accept_seen)
		return UPGRADE_ERR_NO_ACCEPT;
	if (!accept_ok)
		return UPGRADE_ERR_BAD_ACCEPT;
	if (extra)
		return UPGRADE_ERR_EXTENSION;
	return UPGRADE_SWITCHED;
}

static void body_append(struct upgrade_response *r, const uint8_t *data, size_t len)
{
	size_t room = UPGRADE_MAX_BODY - r->body_len;
	if (len > room)
		len = room;
	memcpy(r->body + r->body_len, data, len);
	r->body_len += len;
	r->body[r->body_len] = '\0';
}

/* Decodes raw_body as chunked coding into body. True once the last chunk
 * was seen or the kept body is full. */
static bool decode_chunked(struct upgrade_response *r)
{
	r->body_len = 0;
	r->body[0] = '\0';
	size_t i = 0;
	for (;;) {
		size_t line_end = i;
		while (line_end < r->raw_len && r->raw_body[line_end] != '\n')
			line_end++;
		if (line_end >= r->raw_len)
			return r->raw_len >= sizeof(r->raw_body);
		unsigned long size = strtoul(r->raw_body + i, NULL, 16);
		i = line_end + 1;
		if (size == 0)
			return true;
		size_t avail = r->raw_len - i;
		size_t take = size < avail ? size : avail;
		body_append(r, (const uint8_t *)r->raw_body + i, take);
		if (take < size || r->body_len >= UPGRADE_MAX_BODY)
			return r->body_len >= UPGRADE_MAX_BODY || r->raw_len >= sizeof(r->raw_body);
		i += size;
		while (i < r->raw_len && (r->raw_body[i] == '\r' || r->raw_body[i] == '\n'))
			i++;
	}
}

static int feed_body(struct upgrade_response *r, const uint8_t *data, size_t len, size_t *consumed)
{
	if (r->chunked) {
		size_t room = sizeof(r->raw_body) - r->raw_len;
		size_t take = len < room ? len : room;
		memcpy(r->raw_body + r->raw_len, data, take);
		r->raw_len += take;
		*consumed += take;
		if (decode_chunked(r)) {
			r->phase = PHASE_DONE;
			return UPGRADE_REFUSED;
		}
		return UPGRADE_NEED_MORE;
	}
	size_t take = len;
	if (r->content_length >= 0) {
		long long left = r->content_length - (long long)r->raw_len;
		if ((long long)take > left)
			take = (size_t)left;
	}
	body_append(r, data, take);
	r->raw_len += take; /* counts the body bytes seen, kept or not */
	*consumed += take;
	if ((r->content_length >= 0 && (long long)r->raw_len >= r->content_length) ||
	    r->body_len >= UPGRADE_MAX_BODY) {
		r->phase = PHASE_DONE;
		return UPGRADE_REFUSED;
	}
	return UPGRADE_NEED_MORE;
}

int upgrade_response_feed(struct upgrade_response *r, const uint8_t *data, size_t len, size_t *consumed)
{
	*consumed = 0;
	if (r->phase == PHASE_DONE)
		return r->result;
	if (r->phase == PHASE_BODY)
		return feed_body(r, data, len, consumed);

	/* A TLS record (a handshake, or the alert of a TLS server that got
	 * plain text) where HTTP should be. */
	if (r->head_len == 0 && len >= 2 && (data[0] == 0x15 || data[0] == 0x16) && data[1] == 0x03) {
		r->phase = PHASE_DONE;
		r->result = UPGRADE_ERR_TLS;
		*consumed = len;
		return UPGRADE_ERR_TLS;
	}
	/* Copy no more than the head can hold; the end of the head is looked
	 * for only in what is new (plus three bytes of overlap). */
	size_t room = UPGRADE_MAX_HEAD - r->head_len;
	size_t take = len < room ? len : room;
	size_t before = r->head_len;
	memcpy(r->head + r->head_len, data, take);
	r->head_len += take;
	size_t end = find_head_end(r->head, r->head_len, before);
	if (end == 0) {
		*consumed = take;
		return r->head_len >= UPGRADE_MAX_HEAD ? UPGRADE_ERR_HEAD_TOO_LARGE : UPGRADE_NEED_MORE;
	}
	*consumed = end - before;
	r->head[end] = '\0';
	r->head_len = end;
	int rc = parse_head(r);
	if (rc != UPGRADE_REFUSED) {
		r->phase = PHASE_DONE;
		r->result = rc;
		return rc;
	}
	r->result = UPGRADE_REFUSED;
	r->raw_len = 0;
	bool no_body = r->content_length == 0 || r->status == 204 || r->status == 304 ||
		       (r->status >= 100 && r->status < 200);
	if (no_body) {
		r->phase = PHASE_DONE;
		return UPGRADE_REFUSED;
	}
	r->phase = PHASE_BODY;
	size_t more = 0;
	rc = feed_body(r, data + *consumed, len - *consumed, &more);
	*consumed += more;
	return rc;
}

int upgrade_response_eof(struct upgrade_response *r)
{
	if (r->phase == PHASE_HEAD)
		return UPGRADE_ERR_TRUNCATED;
	if (r->phase == PHASE_BODY && r->chunked)
		decode_chunked(r);
	r->phase = PHASE_DONE;
	return r->result;
}

/* In a body that is not JSON (cut at UPGRADE_MAX_BODY, or sloppy), the
 * JSON value after the first `"key":`, or NULL. */
static json_t *loose_value(const char *body, size_t len, const char *key)
{
	char pattern[64];
	snprintf(pattern, sizeof(pattern), "\"%s\"", key);
	for (const char *p = body; (p = strstr(p, pattern)) != NULL;) {
		p += strlen(pattern);
		p += strspn(p, " \t\r\n");
		if (*p == ':') {
			p++;
			return json_loadb(p, len - (size_t)(p - body), JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, NULL);
		}
	}
	return NULL;
}

/* The string value of key in object, else in the objects and arrays it
 * holds, depth first (other servers nest theirs: {"error":{"message":...}}). */
static const char *find_string(const json_t *v, const char *key, int depth)
{
	const char *found = NULL;
	if (json_is_object(v)) {
		found = json_string_value(json_object_get(v, key));
		const char *k;
		json_t *child;
		json_object_foreach((json_t *)v, k, child) {
			if (found != NULL || depth <= 0)
				break;
			found = find_string(child, key, depth - 1);
		}
	} else if (json_is_array(v)) {
		for (size_t i = 0; i < json_array_size(v) && found == NULL && depth > 0; i++)
			found = find_string(json_array_get(v, i), key, depth - 1);
	}
	return found;
}

/* A JSON body's message: the first of Otoroshi's "Otoroshi-Error" and
 * "error_description", then other servers' "error" and "message", that is
 * a string, copied into out (cut to fit). True when found. */
static bool json_body_text(const struct upgrade_response *r, char *out, size_t outlen)
{
	static const char *const keys[] = {"Otoroshi-Error", "error_description", "error", "message"};
	/* A key given twice is read loosely: its first value, not jansson's last. */
	json_t *root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, NULL);
	bool whole = json_is_object(root) || json_is_array(root), found = false;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]) && !found; i++) {
		json_t *loose = whole ? NULL : loose_value(r->body, r->body_len, keys[i]);
		const char *v = whole ? find_string(root, keys[i], 8) : json_string_value(loose);
		if (v != NULL) {
			snprintf(out, outlen, "%s", v);
			found = true;
		}
		json_decref(loose);
	}
	json_decref(root);
	return found;
}

/* Replaces control characters so that a hostile body cannot forge log
 * lines or terminal escapes. */
static void make_printable(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

/* Case-insensitive search for a NUL-terminated needle. */
static const char *find_nocase(const char *hay, const char *needle)
{
	size_t n = strlen(needle);
	for (; *hay; hay++)
		if (strncasecmp(hay, needle, n) == 0)
			return hay;
	return NULL;
}

static bool is_html(const struct upgrade_response *r)
{
	if (find_nocase(r->content_type, "html") != NULL)
		return true;
	const char *b = r->body;
	while (*b == ' ' || *b == '\t' || *b == '\r' || *b == '\n')
		b++;
	return *b == '<' && (find_nocase(b, "<html") != NULL || find_nocase(b, "<!doctype") != NULL);
}

/* An HTML page is shown by its title only: markup in a terminal helps no one. */
static void html_title(const char *body, char *out, size_t outlen)
{
	const char *open = find_nocase(body, "<title");
	const char *start = open ? strchr(open, '>') : NULL;
	const char *end = start ? find_nocase(start, "</title") : NULL;
	size_t n = 0;
	if (end != NULL) {
		start++;
		while (start < end && (*start == ' ' || *start == '\t' || *start == '\r' || *start == '\n'))
			start++;
		n = (size_t)(end - start);
		while (n > 0 && (start[n - 1] == ' ' || start[n - 1] == '\t' || start[n - 1] == '\r' || start[n - 1] == '\n'))
			n--;
	}
	if (n == 0) {
		snprintf(out, outlen, "an HTML error page");
		return;
	}
	if (n > 120)
		n = 120;
	snprintf(out, outlen, "an HTML error page (\"%.*s\")", (int)n, start);
}

void upgrade_refusal_text(const struct upgrade_response *r, char *out, size_t outlen)
{
	if (outlen == 0)
		return;
	out[0] = '\0';
	if (r->error_msg[0] != '\0') {
		snprintf(out, outlen, "%s", r->error_msg);
	} else if (r->body_len == 0) {
		return;
	} else if (is_html(r)) {
		html_title(r->body, out, outlen);
	} else if (!json_body_text(r, out, outlen)) {
		size_t n = strcspn(r->body, "\r\n");
		const size_t cap = 200;
		if (n > cap)
			n = cap;
		if (n >= outlen)
			n = outlen - 1;
		memcpy(out, r->body, n);
		out[n] = '\0';
	}
	make_printable(out);
}

static bool message_is(const char *message, const char *want)
{
	return message != NULL && strcasecmp(message, want) == 0;
}

/* What Otoroshi's own messages mean (PROTOCOL.md section 3). */
static const char *apikey_hint(int status, const char *message, enum access_type access)
{
	if (status == 400 && message_is(message, "no apikey"))
		return access == ACCESS_APIKEY
			       ? "Otoroshi found no API key where the route looks for one: this client sends it as "
				 "'Authorization: Basic'; check the route's API key settings"
			       : "the route wants an API key: use --access-type apikey with --apikey-client-id and "
				 "--apikey-client-secret";
	if (status == 400 && message_is(message, "invalid apikey tuple"))
		return "no API key has this client id: check --apikey-client-id";
	if (status == 401 && message_is(message, "bad apikey"))
		return "the client secret is wrong, or the API key is disabled: check --apikey-client-secret, and the key "
		       "in Otoroshi";
	if (status == 401 && message_is(message, "invalid apikey"))
		return "this API key may not use this route (its restrictions or routing constraints do not match): "
		       "check the key in Otoroshi, or use another";
	return NULL;
}

const char *upgrade_refusal_hint(int status, const char *message, enum access_type access)
{
	const char *specific = apikey_hint(status, message, access);
	if (specific != NULL)
		return specific;
	switch (status) {
	case 303:
		if (access == ACCESS_SESSION)
			return "the session token was not accepted: get a fresh one and pass it with --session-token";
		return "the route is a private app that redirects to a login page: use --access-type session with --session-token";
	case 400:
	case 401:
		switch (access) {
		case ACCESS_APIKEY:
			return "check --apikey-client-id and --apikey-client-secret, and that --access-type matches the route";
		case ACCESS_BEARER:
			return "check --bearer-token, and that --access-type matches the route";
		case ACCESS_SESSION:
			return "check --session-token, and that --access-type matches the route";
		case ACCESS_PUBLIC:
			return "the route wants credentials: set --access-type and the matching credential flags";
		}
		return NULL;
	case 403:
		return "the credential is valid but not allowed on this route (tags, metadata or restrictions): check the route and the API key";
	case 404:
		if (message_is(message, "no route found !"))
			return "no route serves this host: check --host (Otoroshi matches routes on the host name, without "
			       "its port)";
		return "a route serves this host but not the tunnel: check that it has the TCP tunnel plugin on "
		       "/.well-known/otoroshi/tunnel (a 404 also answers a request without Sec-WebSocket-Version)";
	case 429:
		return "the API key's quota is exhausted: wait, or raise the quota in Otoroshi";
	case 502:
	case 503:
	case 504:
		return "the gateway or a proxy in front of it could not serve the route: try again, or check the gateway";
	default:
		return NULL;
	}
}

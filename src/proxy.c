/* proxy: proxy selection, CONNECT request and answer; see proxy.h. */
#include "proxy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mbedtls/base64.h>
#include <mbedtls/platform_util.h>

#include "url.h"

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Percent-decodes [s, s+len) into out; false when out is too small. */
static bool decode(const char *s, size_t len, char *out, size_t outlen)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '%' && i + 2 < len + 0 && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		}
		if (o + 1 >= outlen)
			return false;
		out[o++] = c;
	}
	out[o] = '\0';
	return true;
}

void proxy_finish(struct proxy *p)
{
	mbedtls_platform_zeroize(p->auth, sizeof(p->auth));
}

int proxy_parse_url(const char *url, struct proxy *out, char *err, size_t errlen)
{
	const char *src = out->source ? out->source : "--proxy";
	memset(out->host, 0, sizeof(out->host));
	out->auth[0] = '\0';
	out->port = 1080;
	out->tls = false;
	/* Nothing of the URL is repeated here: it may hold a password. */
	if (url_control_at(url) >= 0) {
		snprintf(err, errlen, "%s: the proxy URL holds a control character (a line break?)", src);
		return -1;
	}
	const char *p = url;
	const char *scheme_end = strstr(p, "://");
	if (scheme_end != NULL) {
		size_t n = (size_t)(scheme_end - p);
		if (n == 5 && strncasecmp(p, "https", 5) == 0) {
			out->tls = true;
			out->port = 443;
		} else if (n != 4 || strncasecmp(p, "http", 4) != 0) {
			snprintf(err, errlen, "%s: only http:// and https:// proxies are supported (the proxy URL names "
				 "another scheme)", src);
			return -1;
		}
		p = scheme_end + 3;
	}
	size_t auth_len = strcspn(p, "/?#");
	const char *at = memchr(p, '@', auth_len);
	/* The last '@' before the path ends the credentials. */
	for (const char *q = p; q < p + auth_len; q++)
		if (*q == '@')
			at = q;
	if (at != NULL) {
		char user[256], pass[256] = "";
		const char *colon = memchr(p, ':', (size_t)(at - p));
		size_t ulen = colon ? (size_t)(colon - p) : (size_t)(at - p);
		if (!decode(p, ulen, user, sizeof(user)) ||
		    (colon && !decode(colon + 1, (size_t)(at - colon - 1), pass, sizeof(pass)))) {
			snprintf(err, errlen, "%s: the proxy credentials are too long", src);
			return -1;
		}
		if (url_control_at(user) >= 0 || url_control_at(pass) >= 0) {
			mbedtls_platform_zeroize(pass, sizeof(pass));
			snprintf(err, errlen, "%s: the proxy URL's user name or password holds a control character "
				 "(a line break?): it cannot go into the request head", src);
			return -1;
		}
		char plain[520];
		int n = snprintf(plain, sizeof(plain), "%s:%s", user, pass);
		size_t olen = 0;
		int rc = mbedtls_base64_encode((unsigned char *)out->auth, sizeof(out->auth), &olen,
					       (const unsigned char *)plain, (size_t)n);
		mbedtls_platform_zeroize(plain, sizeof(plain));
		mbedtls_platform_zeroize(pass, sizeof(pass));
		if (rc != 0) {
			snprintf(err, errlen, "%s: the proxy credentials are too long", src);
			return -1;
		}
		p = at + 1;
	}
	size_t hlen = strcspn(p, "/?#");
	const char *host = p, *port = NULL;
	size_t host_len;
	if (*p == '[') {
		const char *close = memchr(p, ']', hlen);
		if (close == NULL) {
			snprintf(err, errlen, "%s: the proxy's IPv6 address lacks its closing ']'", src);
			return -1;
		}
		host = p + 1;
		host_len = (size_t)(close - p - 1);
		if (close + 1 < p + hlen && close[1] == ':') {
			port = close + 2;
		} else if (close + 1 < p + hlen) {
			snprintf(err, errlen, "%s: the proxy URL has something other than ':PORT' after its IPv6 "
				 "address", src);
			return -1;
		}
	} else {
		const char *colon = memchr(p, ':', hlen);
		host_len = colon ? (size_t)(colon - p) : hlen;
		if (colon)
			port = colon + 1;
	}
	if (host_len == 0 || host_len >= sizeof(out->host)) {
		snprintf(err, errlen, "%s: the proxy URL names no host (expected http://[user:password@]host:port)", src);
		return -1;
	}
	if (memchr(host, ' ', host_len) != NULL) {
		snprintf(err, errlen, "%s: the proxy's host name holds a space", src);
		return -1;
	}
	memcpy(out->host, host, host_len);
	if (port != NULL) {
		char *end;
		unsigned long v = strtoul(port, &end, 10);
		if (end == port || v == 0 || v > 65535 || (end < p + hlen && *end != '/')) {
			snprintf(err, errlen, "%s: the proxy's port is not a number from 1 to 65535", src);
			return -1;
		}
		out->port = (uint16_t)v;
	}
	return 0;
}

const char *proxy_from_env(bool tls, const char **name)
{
	static const char *const https_vars[] = {"https_proxy", "HTTPS_PROXY"};
	static const char *const http_vars[] = {"http_proxy", "HTTP_PROXY"};
	const char *const *vars = tls ? https_vars : http_vars;
	for (int i = 0; i < 2; i++) {
		const char *v = getenv(vars[i]);
		if (v != NULL && v[0] != '\0') {
			*name = vars[i];
			return v;
		}
	}
	return NULL;
}

/* Does `entry` (one NO_PROXY item, trimmed) cover host:port? */
static bool entry_matches(const char *entry, size_t elen, const char *host, uint16_t port)
{
	if (elen == 1 && entry[0] == '*')
		return true;
	/* host:port (the last colon, unless the entry is a bare IPv6). */
	const char *colon = NULL;
	if (entry[0] == '[') {
		const char *close = memchr(entry, ']', elen);
		if (close && close + 1 < entry + elen && close[1] == ':')
			colon = close + 1;
	} else {
		const char *first = memchr(entry, ':', elen);
		if (first && memchr(first + 1, ':', (size_t)(entry + elen - first - 1)) == NULL)
			colon = first;
	}
	size_t name_len = colon ? (size_t)(colon - entry) : elen;
	if (colon != NULL && (unsigned long)strtoul(colon + 1, NULL, 10) != port)
		return false;
	const char *name = entry;
	if (name_len >= 2 && name[0] == '[' && name[name_len - 1] == ']') {
		name++;
		name_len -= 2;
	}
	if (name_len > 0 && name[0] == '.') {
		name++;
		name_len--;
	}
	if (name_len == 0)
		return false;
	size_t hl = strlen(host);
	if (hl == name_len)
		return strncasecmp(host, name, hl) == 0;
	/* Addresses match whole, as curl matches them: 0.0.1 is no suffix
	 * of 127.0.0.1. */
	unsigned char addr[16];
	if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1)
		return false;
	/* A domain covers its subdomains. */
	return hl > name_len && host[hl - name_len - 1] == '.' &&
	       strncasecmp(host + hl - name_len, name, name_len) == 0;
}

bool proxy_exempt(const char *no_proxy, const char *host, uint16_t port)
{
	if (no_proxy == NULL)
		return false;
	size_t len;
	for (const char *item; (item = url_next_item(&no_proxy, &len)) != NULL;)
		if (len > 0 && entry_matches(item, len, host, port))
			return true;
	return false;
}

int proxy_build_connect(char *out, size_t outlen, const struct proxy *p, const char *host, uint16_t port)
{
	bool v6 = strchr(host, ':') != NULL;
	char target[300];
	snprintf(target, sizeof(target), "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", (unsigned)port);
	return snprintf(out, outlen,
			"CONNECT %s HTTP/1.1\r\n"
			"Host: %s\r\n"
			"%s%s%s"
			"\r\n",
			target, target, p->auth[0] ? "Proxy-Authorization: Basic " : "", p->auth,
			p->auth[0] ? "\r\n" : "");
}

int proxy_answer_feed(struct proxy_answer *a, const uint8_t *data, size_t len, size_t *consumed, int *status,
		      char *reason, size_t reasonlen)
{
	size_t before = a->len;
	size_t room = PROXY_MAX_HEAD - a->len;
	size_t take = len < room ? len : room;
	/* A head is text: a NUL byte would also hide its end from strstr. */
	if (memchr(data, '\0', take) != NULL)
		return -1;
	memcpy(a->head + a->len, data, take);
	a->len += take;
	a->head[a->len] = '\0';
	size_t from = before > 3 ? before - 3 : 0;
	char *end = strstr(a->head + from, "\r\n\r\n");
	size_t end_len = 4;
	if (end == NULL) {
		end = strstr(a->head + from, "\n\n");
		end_len = 2;
	}
	if (end == NULL) {
		*consumed = take;
		return a->len >= PROXY_MAX_HEAD ? -1 : 0;
	}
	size_t head_end = (size_t)(end - a->head) + end_len;
	*consumed = head_end - before;
	if (strncmp(a->head, "HTTP/1.", 7) != 0 || a->len < 12 || a->head[8] != ' ' ||
	    !isdigit((unsigned char)a->head[9]) || !isdigit((unsigned char)a->head[10]) ||
	    !isdigit((unsigned char)a->head[11]))
		return -1;
	int code = (a->head[9] - '0') * 100 + (a->head[10] - '0') * 10 + (a->head[11] - '0');
	if (code < 100 || code > 599)
		return -1; /* not an HTTP status (RFC 9110 section 15) */
	*status = code;
	const char *r = a->head[12] == ' ' ? a->head + 13 : "";
	size_t rl = strcspn(r, "\r\n");
	if (rl >= reasonlen)
		rl = reasonlen - 1;
	/* The reason goes into a log line: printable ASCII only. */
	for (size_t i = 0; i < rl; i++) {
		unsigned char c = (unsigned char)r[i];
		reason[i] = c < 0x20 ? ' ' : c >= 0x7f ? '?' : (char)c;
	}
	reason[rl] = '\0';
	return 1;
}

const char *proxy_refusal_hint(int status)
{
	switch (status) {
	case 401: /* some proxies answer a wrong password so */
	case 407:
		return "the proxy wants credentials, or refused the ones given: put them in the proxy URL "
		       "(http://user:password@proxy:port)";
	case 403:
		return "the proxy does not allow a tunnel to this host and port: ask its administrator, or list "
		       "the gateway in NO_PROXY if it can be reached directly";
	case 502:
	case 503:
	case 504:
		return "the proxy could not reach the gateway: check --host, and that the proxy can resolve and reach it";
	default:
		return NULL;
	}
}

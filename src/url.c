/* url: --host parsing and request-target building; see url.h. */
#include "url.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

const char *url_strerror(int err)
{
	switch (err) {
	case URL_OK: return "no error";
	case URL_ERR_EMPTY: return "the host is empty";
	case URL_ERR_BAD_PORT: return "the port is not a number from 1 to 65535";
	case URL_ERR_BAD_BRACKET: return "an IPv6 address in brackets is not closed, or is followed by something other than :PORT";
	case URL_ERR_TOO_LONG: return "the host name is too long";
	case URL_ERR_BAD_CHAR: return "the host holds a character that cannot appear in a host name (space, '/', '?', '#', '@' or a control character)";
	case URL_ERR_SCHEME: return "give HOST[:PORT], without a scheme";
	case URL_ERR_PATH: return "give HOST[:PORT], without a path: the tunnel's path is always /.well-known/otoroshi/tunnel";
	case URL_ERR_IPV6_BARE: return "an IPv6 address goes in brackets: [ADDRESS] or [ADDRESS]:PORT";
	default: return "unknown error";
	}
}

static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

/* Appends to out at *pos without overflowing; *pos keeps counting past the
 * end so that the caller learns the full length. */
static void put_char(char *out, size_t outlen, size_t *pos, char c)
{
	if (*pos + 1 < outlen)
		out[*pos] = c;
	(*pos)++;
}

static void put_str(char *out, size_t outlen, size_t *pos, const char *s)
{
	while (*s)
		put_char(out, outlen, pos, *s++);
}

static void put_encoded(char *out, size_t outlen, size_t *pos, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (is_unreserved(*p)) {
			put_char(out, outlen, pos, (char)*p);
		} else {
			put_char(out, outlen, pos, '%');
			put_char(out, outlen, pos, hex[*p >> 4]);
			put_char(out, outlen, pos, hex[*p & 15]);
		}
	}
}

static void terminate(char *out, size_t outlen, size_t pos)
{
	if (outlen > 0)
		out[pos < outlen ? pos : outlen - 1] = '\0';
}

size_t url_percent_encode(char *out, size_t outlen, const char *in)
{
	size_t pos = 0;
	put_encoded(out, outlen, &pos, in);
	terminate(out, outlen, pos);
	return pos;
}

/* Parses a decimal port of 1..65535 spanning exactly [s, end). */
static int parse_port(const char *s, const char *end, uint16_t *port)
{
	if (s == end || end - s > 5)
		return URL_ERR_BAD_PORT;
	unsigned v = 0;
	for (const char *p = s; p < end; p++) {
		if (*p < '0' || *p > '9')
			return URL_ERR_BAD_PORT;
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (v == 0 || v > 65535)
		return URL_ERR_BAD_PORT;
	*port = (uint16_t)v;
	return URL_OK;
}

static int copy_name(char *name, size_t namelen, const char *s, size_t len)
{
	if (len == 0)
		return URL_ERR_EMPTY;
	if (len >= namelen)
		return URL_ERR_TOO_LONG;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c == 0x7f || c == '/' || c == '?' || c == '#' || c == '@')
			return URL_ERR_BAD_CHAR;
	}
	memcpy(name, s, len);
	name[len] = '\0';
	return URL_OK;
}

int url_parse_host(const char *host, bool tls, char *name, size_t namelen, uint16_t *port)
{
	*port = tls ? 443 : 80;
	if (host == NULL || host[0] == '\0')
		return URL_ERR_EMPTY;
	if (strstr(host, "://") != NULL)
		return URL_ERR_SCHEME;
	if (host[strcspn(host, "/?#")] != '\0')
		return URL_ERR_PATH;
	if (host[0] == '[') {
		const char *close = strchr(host, ']');
		if (close == NULL)
			return URL_ERR_BAD_BRACKET;
		int rc = copy_name(name, namelen, host + 1, (size_t)(close - host - 1));
		if (rc != URL_OK)
			return rc;
		if (close[1] == '\0')
			return URL_OK;
		if (close[1] != ':')
			return URL_ERR_BAD_BRACKET;
		return parse_port(close + 2, close + 2 + strlen(close + 2), port);
	}
	const char *colon = strchr(host, ':');
	if (colon != NULL && strchr(colon + 1, ':') != NULL)
		return URL_ERR_IPV6_BARE; /* several colons: an IPv6 address, with or without a port */
	if (colon == NULL)
		return copy_name(name, namelen, host, strlen(host));
	int rc = copy_name(name, namelen, host, (size_t)(colon - host));
	if (rc != URL_OK)
		return rc;
	return parse_port(colon + 1, colon + 1 + strlen(colon + 1), port);
}

void url_format_sockaddr(const struct sockaddr *sa, char *out, size_t outlen)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(out, outlen, "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(out, outlen, "%s:%u", ip, ntohs(s4->sin_port));
	}
}

const char *url_next_item(const char **p, size_t *len)
{
	const char *s = *p;
	while (*s == ' ' || *s == '\t' || *s == ',')
		s++;
	if (*s == '\0') {
		*p = s;
		return NULL;
	}
	const char *start = s;
	while (*s && *s != ',')
		s++;
	const char *end = s;
	while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*p = s;
	*len = (size_t)(end - start);
	return start;
}

size_t url_build_target(char *out, size_t outlen, const struct tunnel_config *cfg, bool redact)
{
	size_t pos = 0;
	put_str(out, outlen, &pos, URL_TUNNEL_PATH "?transport=tcp");
	if (cfg->remote_host != NULL) {
		put_str(out, outlen, &pos, "&remoteHost=");
		put_encoded(out, outlen, &pos, cfg->remote_host);
	}
	if (cfg->remote_port != 0) {
		char digits[8];
		snprintf(digits, sizeof(digits), "%u", (unsigned)cfg->remote_port);
		put_str(out, outlen, &pos, "&remotePort=");
		put_str(out, outlen, &pos, digits);
	}
	if (cfg->access == ACCESS_SESSION && cfg->session_token != NULL) {
		put_str(out, outlen, &pos, "&pappsToken=");
		if (redact)
			put_str(out, outlen, &pos, "<redacted>");
		else
			put_encoded(out, outlen, &pos, cfg->session_token);
	}
	terminate(out, outlen, pos);
	return pos;
}

long url_control_at(const char *s)
{
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return p - s;
	return -1;
}

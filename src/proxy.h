/* proxy: the HTTP CONNECT proxy between the tunnel and the gateway: which
 * proxy applies (--proxy, or HTTPS_PROXY/HTTP_PROXY unless NO_PROXY says
 * otherwise, as curl reads them), the CONNECT request, and its answer.
 * Pure functions, no I/O.
 *
 * Ownership: struct proxy is filled by proxy_parse_url and owned by the
 * caller; the credential it holds is wiped by proxy_finish. */
#ifndef OTOROSHICTL_PROXY_H
#define OTOROSHICTL_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROXY_MAX_HEAD 8192

struct proxy {
	char host[256]; /* without brackets */
	uint16_t port;
	bool tls;       /* https://: TLS to the proxy, CONNECT inside it */
	char auth[512]; /* base64(user:password), or "" */
	const char *source; /* "--proxy", "HTTPS_PROXY", ... for messages */
};

/* Parses http://[user[:password]@]host[:port][/] or https://... (the
 * scheme may be left out; the port defaults to 1080 for http and 443 for
 * https, as curl's do). The user and password are percent-decoded. Returns
 * 0, or -1 with err (which never repeats the password). */
int proxy_parse_url(const char *url, struct proxy *out, char *err, size_t errlen);
void proxy_finish(struct proxy *p);

/* The proxy URL from the environment for a connection with or without
 * TLS (HTTPS_PROXY/https_proxy, or HTTP_PROXY/http_proxy), or NULL.
 * *name receives the variable's name. */
const char *proxy_from_env(bool tls, const char **name);

/* Does NO_PROXY (comma-separated: `*`, host or domain suffixes with or
 * without a leading dot, host:port, IP literals) exempt host:port? */
bool proxy_exempt(const char *no_proxy, const char *host, uint16_t port);

/* Writes the CONNECT request for host:port. Returns the length (like
 * snprintf). The head carries the proxy credential: wire only. */
int proxy_build_connect(char *out, size_t outlen, const struct proxy *p, const char *host, uint16_t port);

/* Parses the proxy's answer as it arrives (head only; a CONNECT answer
 * has no body). Returns 0 while it needs more, 1 when the head is complete
 * (*status, reason and *consumed set: bytes after the head belong to the
 * tunnel), or -1 when it is malformed or too large. */
struct proxy_answer {
	char head[PROXY_MAX_HEAD + 1];
	size_t len;
};
int proxy_answer_feed(struct proxy_answer *a, const uint8_t *data, size_t len, size_t *consumed, int *status,
		      char *reason, size_t reasonlen);

/* A sentence on what a refusal status means and what to check, or NULL. */
const char *proxy_refusal_hint(int status);

#endif

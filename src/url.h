/* url: the pieces of the upgrade URL (PROTOCOL.md section 2): the --host
 * value split into name and port, and the request target with its query
 * parameters, percent-encoded. Pure functions, no I/O, no allocation. */
#ifndef OTOROSHICTL_URL_H
#define OTOROSHICTL_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define URL_TUNNEL_PATH "/.well-known/otoroshi/tunnel"

enum url_error {
	URL_OK = 0,
	URL_ERR_EMPTY = -1,
	URL_ERR_BAD_PORT = -2,
	URL_ERR_BAD_BRACKET = -3,
	URL_ERR_TOO_LONG = -4,
	URL_ERR_BAD_CHAR = -5,
	URL_ERR_SCHEME = -6,    /* a URL, not a host: "wss://h:p" */
	URL_ERR_PATH = -7,      /* a path (or query) after the host */
	URL_ERR_IPV6_BARE = -8, /* an IPv6 address without brackets */
};

const char *url_strerror(int err);

/* Percent-encodes every byte of `in` outside RFC 3986's unreserved set
 * (ALPHA DIGIT - . _ ~) into `out`. Returns the length the full result
 * needs (without the NUL), like snprintf; `out` is always NUL-terminated
 * when outlen > 0. */
size_t url_percent_encode(char *out, size_t outlen, const char *in);

/* Splits a --host value: `name`, `name:port`, `[v6]` or `[v6]:port`.
 * `name` receives the host without brackets; `port` the explicit port or
 * the default one (80, or 443 with tls). A bare IPv6 address is refused:
 * it would go into the Host header without the brackets HTTP requires.
 * Returns URL_OK or a negative url_error. */
int url_parse_host(const char *host, bool tls, char *name, size_t namelen, uint16_t *port);

/* Writes a socket address as `1.2.3.4:80` or `[::1]:80` into out. */
struct sockaddr;
void url_format_sockaddr(const struct sockaddr *sa, char *out, size_t outlen);

/* Steps through a comma-separated header or variable value: returns the
 * next item with its surrounding blanks trimmed (*len bytes long, maybe 0),
 * or NULL at the end, and moves *p past it. */
const char *url_next_item(const char **p, size_t *len);

/* Writes the request target `/.well-known/otoroshi/tunnel?transport=tcp...`
 * for cfg into out. With redact, the session token is written as
 * `<redacted>` so that the result may be logged. Returns the length the
 * full result needs, like snprintf. */
size_t url_build_target(char *out, size_t outlen, const struct tunnel_config *cfg, bool redact);

/* The offset of the first control character of s (below 0x20, or 0x7f), or
 * -1: such bytes cannot go into a request head. */
long url_control_at(const char *s);

#endif

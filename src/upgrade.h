/* upgrade: the HTTP/1.1 upgrade of PROTOCOL.md sections 2 and 3: the
 * request head the client writes, and an incremental parser for the answer.
 * Pure code: no I/O, fed with whatever bytes arrive, in any split.
 *
 * Ownership: struct upgrade_response is caller-owned (handshake.c keeps one
 * on the heap only while the handshake lasts); it holds no pointers. */
#ifndef OTOROSHICTL_UPGRADE_H
#define OTOROSHICTL_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* A head larger than this is refused rather than buffered without end. */
#define UPGRADE_MAX_HEAD 16384
/* Of a refusal's body, this much is kept for the error message. */
#define UPGRADE_MAX_BODY 4096
#define UPGRADE_KEY_LEN 24    /* base64 of 16 bytes */
#define UPGRADE_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */

enum upgrade_result {
	UPGRADE_NEED_MORE = 0,  /* feed more bytes */
	UPGRADE_SWITCHED = 1,   /* a valid 101: the rest of the input is WebSocket frames */
	UPGRADE_REFUSED = 2,    /* a complete non-101 answer: see status, reason, body */
	UPGRADE_ERR_HEAD_TOO_LARGE = -1,
	UPGRADE_ERR_MALFORMED = -2,
	UPGRADE_ERR_NO_UPGRADE = -3,    /* 101 without Upgrade: websocket */
	UPGRADE_ERR_NO_CONNECTION = -4, /* 101 without Connection: upgrade */
	UPGRADE_ERR_NO_ACCEPT = -5,     /* 101 without Sec-WebSocket-Accept */
	UPGRADE_ERR_BAD_ACCEPT = -6,    /* Sec-WebSocket-Accept does not match the key */
	UPGRADE_ERR_EXTENSION = -7,     /* an extension or subprotocol nobody asked for */
	UPGRADE_ERR_CRYPTO = -8,
	UPGRADE_ERR_TRUNCATED = -9,     /* the connection ended inside the head */
	UPGRADE_ERR_TLS = -10,          /* the answer is a TLS record: the port speaks TLS */
	UPGRADE_ERR_HTTP10 = -11,       /* a 101 over HTTP/1.0, which has no upgrade */
};

const char *upgrade_strerror(int err);

/* Base64 of 16 random bytes: the Sec-WebSocket-Key. out gets 24 chars + NUL. */
int upgrade_make_key(const uint8_t raw[16], char out[UPGRADE_KEY_LEN + 1]);

/* base64(SHA-1(key + GUID)), RFC 6455 section 4.2.2. out gets 28 chars + NUL. */
int upgrade_accept_for_key(const char *key, char out[UPGRADE_ACCEPT_LEN + 1]);

/* Writes the request head of PROTOCOL.md section 2 for cfg and key into out,
 * with the --header lines after the tunnel's own.
 * Returns the full length it needs (like snprintf), or a negative
 * upgrade_error. The head carries the credential: it goes to the wire only,
 * never to a log. */
int upgrade_build_request(char *out, size_t outlen, const struct tunnel_config *cfg, const char *key);

struct upgrade_response {
	/* Inputs. */
	char expected_accept[UPGRADE_ACCEPT_LEN + 1];

	/* Results, valid once feed returned SWITCHED or REFUSED. */
	int status;
	char reason[128];
	char location[512];
	/* Otoroshi's Otoroshi-Error-Msg and Otoroshi-Error-Cause headers, and
	 * the Content-Type, as sent (not yet made printable). */
	char error_msg[512];
	char error_cause[128];
	char content_type[128];
	char body[UPGRADE_MAX_BODY + 1]; /* decoded, NUL-terminated */
	size_t body_len;

	/* Parser state. */
	int phase;
	int result; /* what feed returned when the answer was complete */
	char head[UPGRADE_MAX_HEAD + 1];
	size_t head_len;
	long long content_length; /* -1: none given */
	bool chunked;
	char raw_body[UPGRADE_MAX_BODY * 2]; /* chunked bodies before decoding */
	size_t raw_len;
};

void upgrade_response_init(struct upgrade_response *r, const char *expected_accept);

/* Feeds len bytes. *consumed is set to how many of them belong to the HTTP
 * answer: after SWITCHED, the bytes from data + *consumed on are the first
 * WebSocket frames and must not be dropped. Returns an upgrade_result. */
int upgrade_response_feed(struct upgrade_response *r, const uint8_t *data, size_t len, size_t *consumed);

/* The connection ended: finishes a refusal whose body ran to the end of the
 * connection. Returns REFUSED, or ERR_TRUNCATED when the head was not
 * complete. */
int upgrade_response_eof(struct upgrade_response *r);

/* Otoroshi's message for a refusal: the Otoroshi-Error-Msg header; without
 * it, from a JSON body, "Otoroshi-Error" or "error_description" (then, for
 * other servers, "error" or "message", nested ones too), escapes decoded,
 * and found in a body cut short too; of an HTML body only its title ("an
 * HTML error page" without one), never the markup; else the body's first
 * line. Made printable and cut to fit; "" when there is nothing. */
void upgrade_refusal_text(const struct upgrade_response *r, char *out, size_t outlen);

/* A sentence telling the user what to check for this refusal (its status
 * and Otoroshi's message, as upgrade_refusal_text gives it), or NULL. */
const char *upgrade_refusal_hint(int status, const char *message, enum access_type access);

#endif

/* handshake: a tunnel's way from nothing to an open WebSocket, and what the
 * user reads when a step fails: the gateway (or proxy) that cannot be
 * reached, the upgrade request (PROTOCOL.md section 2) written into the top
 * of the connection stack, Otoroshi's answer read as it comes (section 3),
 * its refusals with their hints, and the step that took too long.
 *
 * Ownership: handshake_start allocates the answer's parser, which
 * handshake_destroy frees (NULL is fine). The rest is messages. */
#ifndef OTOROSHICTL_HANDSHAKE_H
#define OTOROSHICTL_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ending.h"
#include "proxy.h"
#include "stream.h"
#include "upgrade.h"

/* Who the messages are about. */
struct handshake_who {
	const struct tunnel_config *cfg;
	const struct proxy *proxy; /* NULL: straight to the gateway */
	const char *peer;          /* the local client, for logs */
	uint64_t id;               /* the tunnel's number, for debug lines */
	/* For the fields of JSON log lines: the local client's address alone
	 * (peer may name the forward too), and the forward's name or NULL. */
	const char *addr;
	const char *forward;
};

struct handshake;

/* Writes the upgrade request into out (marked secret: it may carry the
 * credential) and returns the parser for the answer, or NULL with *reason
 * set (and a line logged). */
struct handshake *handshake_start(const struct handshake_who *who, struct stream *out, const char *via,
				  enum end_reason *reason);
void handshake_destroy(struct handshake *h);
/* The answer's HTTP status, once its status line is in (else 0). */
int handshake_status(const struct handshake *h);

/* Feeds bytes of the answer; returns an upgrade_result. *used is how many
 * belong to the answer (after UPGRADE_SWITCHED, the rest are frames). */
int handshake_feed(struct handshake *h, const uint8_t *data, size_t len, size_t *used);
/* A complete answer that is not a usable 101 (result from handshake_feed,
 * or from the end of the connection): logs why, sets *http_status for a
 * refusal, and returns the end reason. */
enum end_reason handshake_report(const struct handshake_who *who, struct handshake *h, int result, int *http_status);
/* The connection ended (status: UV_EOF or an error) before the answer was
 * whole. */
enum end_reason handshake_report_eof(const struct handshake_who *who, struct handshake *h, int status,
				     int *http_status);

/* The connection stack could not be opened: logs why and returns the end
 * reason. `now` rate-limits the message of a process out of descriptors. */
enum end_reason handshake_report_open_failure(const struct handshake_who *who, int status, enum stream_stage stage,
					      const char *detail, uint64_t now);
/* The handshake took too long, stuck in `stage`. */
void handshake_report_timeout(const struct handshake_who *who, enum stream_stage stage, unsigned seconds);

#endif

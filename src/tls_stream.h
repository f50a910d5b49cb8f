/* tls_stream: the TLS layer of the connection stack (see stream.h), over
 * whatever is below it: TCP, or the CONNECT tunnel of a proxy (TLS inside
 * TLS for an https:// proxy). Plaintext written is staged and sealed into
 * records at flush time, so that many small writes (frame headers and
 * payloads) make few records.
 *
 * Ownership: embedded in its owner; tls_stream_finish frees the mbedTLS
 * connection and the staged plaintext, once `closed` has been reported. */
#ifndef OTOROSHICTL_TLS_STREAM_H
#define OTOROSHICTL_TLS_STREAM_H

#include "buf.h"
#include "stream.h"
#include "tls.h"

struct tls_stream {
	struct stream base;
	struct tls_setup *setup;
	const char *name;        /* the name verified (outlives the stream) */
	enum stream_stage stage; /* STAGE_TLS, or STAGE_PROXY_TLS */
	struct tls_conn *tls;
	struct bufq plain;       /* written, not yet sealed */
	enum { TLSS_IDLE, TLSS_HANDSHAKE, TLSS_OPEN, TLSS_FAILED } state;
	bool resumed;
	const char *version, *suite; /* once open (static strings), for the summary */
	bool refused;    /* the handshake was refused after it seemed done */
	int below_error; /* the last write the layer below refused */
};

void tls_stream_init(struct tls_stream *t, struct stream *below, struct tls_setup *setup, const char *name,
		     enum stream_stage stage);
void tls_stream_finish(struct tls_stream *t);

#endif

/* tls: TLS to the gateway with mbedTLS running over memory buffers, so that
 * it lives inside the libuv loop: ciphertext from the socket is fed in, and
 * the ciphertext to send comes out through a callback. No I/O, no thread.
 *
 * Two levels:
 * - the process-wide settings (trust store, client identity, protocol
 *   limits), loaded once by tls_setup_init before anything listens;
 * - one struct tls_conn per connection.
 *
 * Verification is on unless --insecure: the chain against the trust store,
 * and the name (SNI is sent for names, not for IP literals; an IP literal is
 * checked against the certificate's IP addresses).
 *
 * Ownership: tls_conn_create allocates, tls_conn_destroy frees (NULL is
 * fine). The last session is kept process-wide and offered to the next
 * connection, so that later tunnels skip the full handshake. */
#ifndef OTOROSHICTL_TLS_H
#define OTOROSHICTL_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

enum tls_result {
	TLS_OK = 0,
	TLS_ERR = -1,       /* see tls_conn_describe_error */
	TLS_WANT_READ = -2, /* needs more bytes from the peer */
	TLS_CLOSED = -3,    /* the peer sent close_notify */
};

/* Loads the trust store and the client identity for cfg. Returns 0, or -1
 * with one line in err naming the file or flag at fault. */
int tls_setup_init(const struct tunnel_config *cfg, char *err, size_t errlen);
void tls_setup_finish(void);
/* True when a client certificate is configured. */
bool tls_setup_has_identity(void);

/* Called with ciphertext to write to the socket; returns 0, or -1 when it
 * cannot be queued. */
typedef int (*tls_send_fn)(void *user, const uint8_t *data, size_t len);

struct tls_conn;

/* A client connection that will verify `name` (a host name or an IP
 * literal). Returns NULL when memory runs out. */
struct tls_conn *tls_conn_create(const char *name, tls_send_fn send, void *user);
void tls_conn_destroy(struct tls_conn *c);

/* Makes data the input that the next calls consume. Every call below runs
 * until it needs more input, so the input is used up before they return
 * TLS_WANT_READ; the pointer need not outlive the call that consumes it. */
void tls_conn_feed(struct tls_conn *c, const uint8_t *data, size_t len);
/* Advances the handshake: TLS_OK once done (and verified), TLS_WANT_READ,
 * or TLS_ERR. */
int tls_conn_handshake(struct tls_conn *c);
/* True when this connection resumed an earlier session. Known only when
 * certificates are verified: a resumed handshake verifies none. */
bool tls_conn_resumed(const struct tls_conn *c);
/* Decrypts into out: returns the byte count (> 0), TLS_WANT_READ,
 * TLS_CLOSED or TLS_ERR. */
int tls_conn_read(struct tls_conn *c, uint8_t *out, size_t cap);
/* Encrypts len bytes into records of up to 16 KiB. TLS_OK or TLS_ERR. */
int tls_conn_write(struct tls_conn *c, const uint8_t *data, size_t len);
/* Writes close_notify. */
void tls_conn_close_notify(struct tls_conn *c);
/* One line saying what failed and which flag would fix it. */
void tls_conn_describe_error(const struct tls_conn *c, char *out, size_t outlen);

#endif

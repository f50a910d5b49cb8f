/* tls: TLS to the gateway with mbedTLS running over memory buffers, so that
 * it lives inside the libuv loop: ciphertext from the socket is fed in, and
 * the ciphertext to send comes out through a callback. No I/O, no thread.
 *
 * Two levels:
 * - the settings for one peer (trust store, client identity, protocol
 *   limits, the session kept): one for the gateway, one for an https://
 *   proxy, each made once before anything listens;
 * - one struct tls_conn per connection.
 *
 * Verification is on unless --insecure: the chain against the trust store,
 * and the name (SNI is sent for names, not for IP literals; an IP literal is
 * checked against the certificate's IP addresses).
 *
 * Ownership: tls_conn_create allocates, tls_conn_destroy frees (NULL is
 * fine). The last session of each setup is kept in it and offered to its
 * next connection, so that later tunnels skip the full handshake. */
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

/* What a setup is built from. The trust store is ca_cert when given, else
 * SSL_CERT_FILE, else SSL_CERT_DIR, else the system bundle. */
struct tls_options {
	const char *ca_cert;
	const char *ca_flag;      /* how the file is named in messages: "--ca-cert" */
	bool insecure;            /* no verification at all */
	const char *server_name;  /* the name to send and verify instead of the host */
	const char *client_cert;  /* a client identity, or NULL */
	const char *client_key;
	bool proxy;               /* the peer is an https:// proxy (for the messages) */
};

/* The gateway's options, from --ca-cert, --insecure, --tls-server-name,
 * --client-cert and --client-key. */
void tls_options_gateway(struct tls_options *o, const struct tunnel_config *cfg);

/* The settings for one peer (the gateway, or an https:// proxy): trust
 * store, identity, protocol limits, and the session kept for the next
 * connection. Returns NULL with one line in err naming the file or flag at
 * fault. tls_setup_destroy frees (NULL is fine); its connections must be
 * gone by then. */
struct tls_setup;
struct tls_setup *tls_setup_create(const struct tls_options *o, char *err, size_t errlen);
void tls_setup_destroy(struct tls_setup *s);
/* Keeps the gateway's certificate chain after the handshake (for
 * tls_conn_info), instead of freeing it once verified. */
void tls_setup_keep_peer_chain(struct tls_setup *s);
/* True when a client certificate is configured. */
bool tls_setup_has_identity(const struct tls_setup *s);

/* Called with ciphertext to write to the socket; returns 0, or -1 when it
 * cannot be queued. */
typedef int (*tls_send_fn)(void *user, const uint8_t *data, size_t len);

struct tls_conn;

/* A client connection of setup's that will verify `name` (a host name or
 * an IP literal). Returns NULL when memory runs out. */
struct tls_conn *tls_conn_create(struct tls_setup *setup, const char *name, tls_send_fn send, void *user);
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
/* The protocol version ("TLSv1.3") and cipher suite of an established
 * connection, as mbedTLS names them: static strings. */
const char *tls_conn_version(const struct tls_conn *c);
const char *tls_conn_suite(const struct tls_conn *c);
/* Decrypts into out: returns the byte count (> 0), TLS_WANT_READ,
 * TLS_CLOSED or TLS_ERR. */
int tls_conn_read(struct tls_conn *c, uint8_t *out, size_t cap);
/* Encrypts len bytes into records of up to 16 KiB. TLS_OK or TLS_ERR. */
int tls_conn_write(struct tls_conn *c, const uint8_t *data, size_t len);
/* Writes close_notify. */
void tls_conn_close_notify(struct tls_conn *c);
/* What --check shows of an established connection. */
struct tls_info {
	char version[24];
	char suite[80];
	char subject[200];
	char issuer[200];
	long days_left;    /* until the certificate expires; LONG_MIN when unknown */
	char name[256];    /* the name (or address) verified, or sent */
	bool verified;     /* the certificate was checked (not --insecure) */
	bool resumed;
	bool have_cert;
};
void tls_conn_info(const struct tls_conn *c, struct tls_info *out);

/* True when the handshake failed in a way the next connection avoids
 * (a TLS 1.2 gateway signing with RSA-PSS, see tls.c): worth a retry.
 * *news tells whether this connection was the first to find it out (of
 * those made before, all fail the same way). */
bool tls_conn_try_again(const struct tls_conn *c, bool *news);
/* True when the gateway refused the handshake after the client was done
 * with it: TLS 1.3 checks the client's certificate after the client's
 * Finished, and an alert before any data is that refusal. */
bool tls_conn_refused_late(const struct tls_conn *c);
/* One line saying what failed and which flag would fix it. */
void tls_conn_describe_error(const struct tls_conn *c, char *out, size_t outlen);

#endif

/* tls: mbedTLS over memory buffers; see tls.h. */
/* mbedTLS 3 makes the session's peer certificate private; drop_peer_chain
 * frees it, as with 2.28. */
#define MBEDTLS_ALLOW_PRIVATE_ACCESS 1
#include "tls.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <mbedtls/asn1.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include "rng.h"

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define TLS_V3 1
#include <psa/crypto.h>
#endif
#if defined(TLS_V3) && defined(MBEDTLS_SSL_PROTO_TLS1_3) && defined(MBEDTLS_SSL_SESSION_TICKETS)
/* TLS 1.3 tickets come after the handshake, in NewSessionTicket messages. */
#define TLS13_TICKETS 1
#endif
#if defined(TLS_V3) && defined(MBEDTLS_SSL_PROTO_TLS1_3) && defined(MBEDTLS_SSL_PROTO_TLS1_2)
/* mbedTLS 3.6 offers RSA-PSS signatures (TLS 1.3 needs them) but refuses
 * one in a TLS 1.2 ServerKeyExchange; see tls_conn_handshake. */
#define TLS12_FALLBACK 1
#endif

#define TLS_DEFAULT_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define TLS_DEFAULT_DIR "/etc/ssl/certs"

/* The settings for one peer: built once, shared by its connections. */
struct tls_setup {
	bool insecure;
	const char *server_name; /* --tls-server-name, or NULL */
	const char *ca_flag;     /* how the trust store is named in hints */
	bool proxy;              /* the peer is the proxy, not the gateway */
	mbedtls_ssl_config conf;
#ifdef TLS12_FALLBACK
	/* TLS 1.2 only, without RSA-PSS: for a gateway whose TLS 1.2 signs
	 * with RSA-PSS, which mbedTLS 3.6 offers but cannot check in 1.2. */
	mbedtls_ssl_config conf12;
	bool use12;
#endif
	mbedtls_x509_crt ca;
	mbedtls_x509_crt own_cert;
	mbedtls_pk_context own_key;
	bool have_identity;
	int *suites;
	mbedtls_ssl_session last; /* offered to the next connection */
	bool keep_chain;          /* --check shows the certificate: keep it */
	bool have_last;
	char last_name[256]; /* the name `last` was verified for */
};

static const char *alpn_list[] = {"http/1.1", NULL};

#ifdef TLS12_FALLBACK
/* The signature algorithms of the TLS 1.2 configuration: those of
 * mbedTLS's defaults that its TLS 1.2 verifies, strongest first. */
static const uint16_t tls12_sig_algs[] = {
	MBEDTLS_TLS1_3_SIG_ECDSA_SECP256R1_SHA256, MBEDTLS_TLS1_3_SIG_ECDSA_SECP384R1_SHA384,
	MBEDTLS_TLS1_3_SIG_ECDSA_SECP521R1_SHA512, MBEDTLS_TLS1_3_SIG_RSA_PKCS1_SHA512,
	MBEDTLS_TLS1_3_SIG_RSA_PKCS1_SHA384,       MBEDTLS_TLS1_3_SIG_RSA_PKCS1_SHA256,
	MBEDTLS_TLS1_3_SIG_NONE,
};
#endif

struct tls_conn {
	struct tls_setup *setup;
	mbedtls_ssl_context ssl;
	tls_send_fn send;
	void *user;
	const uint8_t *in;
	size_t in_len;
	bool ip_literal;
	unsigned char ip[16];
	size_t ip_len;
	bool ip_mismatch;
	bool chain_checked; /* the certificate chain was verified in this handshake */
	bool offered;       /* a saved session was offered */
	bool resumed;
	bool established;
	bool tls13;     /* established in TLS 1.3 */
	bool on12;      /* made with the TLS 1.2 configuration (conf12) */
	bool fallback;  /* failed for want of TLS 1.2 without RSA-PSS: try again */
	bool fallback_news; /* ... and the first connection to find that out */
	bool app_data;  /* application data has been read */
	int last_error;
	char verify_name[256];
};

/* ---- settings --------------------------------------------------------------- */

static void describe_mbedtls(int rc, char *out, size_t outlen)
{
	char buf[160];
	mbedtls_strerror(rc, buf, sizeof(buf));
	snprintf(out, outlen, "%s", buf);
}

static bool readable(const char *path, char *err, size_t errlen, const char *flag)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		snprintf(err, errlen, "%s: cannot read '%s': no such file", flag, path);
		return false;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: '%s' is %s, not a file", flag, path,
			 S_ISDIR(st.st_mode) ? "a directory" : "a device or a socket");
		return false;
	}
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		snprintf(err, errlen, "%s: cannot read '%s': permission denied", flag, path);
		return false;
	}
	fclose(f);
	return true;
}

static int load_trust(struct tls_setup *setup, const struct tls_options *o, char *err, size_t errlen)
{
	const char *file = o->ca_cert, *flag = o->ca_flag;
	const char *dir = NULL;
	if (file == NULL) {
		file = getenv("SSL_CERT_FILE");
		flag = "SSL_CERT_FILE";
		if (file == NULL || file[0] == '\0') {
			file = NULL;
			dir = getenv("SSL_CERT_DIR");
			flag = "SSL_CERT_DIR";
			if (dir == NULL || dir[0] == '\0') {
				dir = NULL;
				file = TLS_DEFAULT_BUNDLE;
				flag = "the system trust store";
			}
		}
	}
	int rc;
	if (file != NULL) {
		if (!readable(file, err, errlen, flag))
			return -1;
		rc = mbedtls_x509_crt_parse_file(&setup->ca, file);
	} else {
		rc = mbedtls_x509_crt_parse_path(&setup->ca, dir);
	}
	/* A bundle may hold a few certificates mbedTLS cannot parse (rc > 0):
	 * the others are still trusted. None at all is an error. */
	if (rc < 0 || setup->ca.version == 0) {
		char why[160] = "no certificate found";
		if (rc < 0)
			describe_mbedtls(rc, why, sizeof(why));
		snprintf(err, errlen, "%s: cannot load trusted certificates from '%s': %s", flag, file ? file : dir, why);
		return -1;
	}
	return 0;
}

static int load_identity(struct tls_setup *setup, const struct tls_options *o, char *err, size_t errlen)
{
	if (o->client_cert == NULL && o->client_key == NULL)
		return 0;
	if (o->client_cert == NULL || o->client_key == NULL) {
		snprintf(err, errlen, "%s '%s' needs %s as well", o->client_cert ? "--client-cert" : "--client-key",
			 o->client_cert ? o->client_cert : o->client_key,
			 o->client_cert ? "--client-key (its private key)" : "--client-cert (the certificate)");
		return -1;
	}
	if (!readable(o->client_cert, err, errlen, "--client-cert") ||
	    !readable(o->client_key, err, errlen, "--client-key"))
		return -1;
	int rc = mbedtls_x509_crt_parse_file(&setup->own_cert, o->client_cert);
	if (rc != 0) {
		char why[160];
		describe_mbedtls(rc, why, sizeof(why));
		snprintf(err, errlen, "--client-cert: '%s' is not a PEM or DER certificate: %s", o->client_cert, why);
		return -1;
	}
#ifdef TLS_V3
	rc = mbedtls_pk_parse_keyfile(&setup->own_key, o->client_key, NULL, rng_mbedtls, NULL);
#else
	rc = mbedtls_pk_parse_keyfile(&setup->own_key, o->client_key, NULL);
#endif
	if (rc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED || rc == MBEDTLS_ERR_PK_PASSWORD_MISMATCH) {
		snprintf(err, errlen, "--client-key: '%s' is protected by a passphrase; decrypt it first "
			 "(openssl pkey -in KEY -out KEY.plain, then chmod 600 KEY.plain)", o->client_key);
		return -1;
	}
	if (rc != 0) {
		char why[160];
		describe_mbedtls(rc, why, sizeof(why));
		snprintf(err, errlen, "--client-key: '%s' is not a usable private key: %s", o->client_key, why);
		return -1;
	}
#ifdef TLS_V3
	rc = mbedtls_pk_check_pair(&setup->own_cert.pk, &setup->own_key, rng_mbedtls, NULL);
#else
	rc = mbedtls_pk_check_pair(&setup->own_cert.pk, &setup->own_key);
#endif
	if (rc != 0) {
		snprintf(err, errlen, "--client-key: '%s' does not match --client-cert '%s'", o->client_key,
			 o->client_cert);
		return -1;
	}
	setup->have_identity = true;
	return 0;
}

static bool forward_secret(const char *name)
{
	return strstr(name, "PSK") == NULL &&
	       (strncmp(name, "TLS1-3-", 7) == 0 || strstr(name, "-ECDHE-") != NULL || strstr(name, "-DHE-") != NULL);
}

/* mbedTLS's default suites minus those without forward secrecy, the
 * fastest here first: mbedTLS's ChaCha20-Poly1305 runs about a third
 * faster than its AES-GCM, even with AES-NI (bench/RESULTS.md), and most
 * servers follow the client's order. */
static int pick_suites(struct tls_setup *setup)
{
	static const char *const preferred[] = {"CHACHA20-POLY1305", "AES-128-GCM", ""};
	const int *all = mbedtls_ssl_list_ciphersuites();
	size_t n = 0;
	while (all[n] != 0)
		n++;
	setup->suites = calloc(n + 1, sizeof(int));
	if (setup->suites == NULL)
		return -1;
	size_t k = 0;
	bool taken[512] = {false};
	for (size_t p = 0; p < sizeof(preferred) / sizeof(preferred[0]); p++) {
		for (size_t i = 0; i < n && i < 512; i++) {
			const char *name = mbedtls_ssl_get_ciphersuite_name(all[i]);
			if (taken[i] || name == NULL || !forward_secret(name) || strstr(name, preferred[p]) == NULL)
				continue;
			setup->suites[k++] = all[i];
			taken[i] = true;
		}
	}
	setup->suites[k] = 0;
	return k > 0 ? 0 : -1;
}

void tls_options_gateway(struct tls_options *o, const struct tunnel_config *cfg)
{
	*o = (struct tls_options){
		.ca_cert = cfg->ca_cert,
		.ca_flag = "--ca-cert",
		.insecure = cfg->insecure,
		.server_name = cfg->tls_server_name,
		.client_cert = cfg->client_cert,
		.client_key = cfg->client_key,
	};
}

/* One client configuration from what the setup holds. */
static int configure(struct tls_setup *setup, mbedtls_ssl_config *conf)
{
	int rc = mbedtls_ssl_config_defaults(conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
					     MBEDTLS_SSL_PRESET_DEFAULT);
	if (rc != 0)
		return rc;
	mbedtls_ssl_conf_rng(conf, rng_mbedtls, NULL);
#ifdef TLS_V3
	mbedtls_ssl_conf_min_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_2);
#else
	mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
#endif
	mbedtls_ssl_conf_ciphersuites(conf, setup->suites);
	/* A proxy takes CONNECT, which is HTTP/1.1 too. */
	mbedtls_ssl_conf_alpn_protocols(conf, alpn_list);
	mbedtls_ssl_conf_session_tickets(conf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
#ifdef TLS13_TICKETS
	mbedtls_ssl_conf_tls13_enable_signal_new_session_tickets(conf,
								 MBEDTLS_SSL_TLS1_3_SIGNAL_NEW_SESSION_TICKETS_ENABLED);
#endif
#if defined(TLS_V3) && defined(MBEDTLS_SSL_PROTO_TLS1_3)
	/* A resumed TLS 1.3 session still makes fresh keys by (EC)DHE: no
	 * psk_ke, which would give up forward secrecy. */
	mbedtls_ssl_conf_tls13_key_exchange_modes(conf, MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ALL);
#endif
	if (setup->insecure) {
		mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_NONE);
	} else {
		mbedtls_ssl_conf_ca_chain(conf, &setup->ca, NULL);
		mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	}
	return setup->have_identity ? mbedtls_ssl_conf_own_cert(conf, &setup->own_cert, &setup->own_key) : 0;
}

struct tls_setup *tls_setup_create(const struct tls_options *o, char *err, size_t errlen)
{
	struct tls_setup *setup = calloc(1, sizeof(*setup));
	if (setup == NULL) {
		snprintf(err, errlen, "out of memory setting up TLS");
		return NULL;
	}
	mbedtls_ssl_config_init(&setup->conf);
#ifdef TLS12_FALLBACK
	mbedtls_ssl_config_init(&setup->conf12);
#endif
	mbedtls_x509_crt_init(&setup->ca);
	mbedtls_x509_crt_init(&setup->own_cert);
	mbedtls_pk_init(&setup->own_key);
	mbedtls_ssl_session_init(&setup->last);
	setup->insecure = o->insecure;
	setup->server_name = o->server_name;
	setup->ca_flag = o->ca_flag ? o->ca_flag : "--ca-cert";
	setup->proxy = o->proxy;

	int rc = 0;
#if defined(TLS_V3) && defined(MBEDTLS_PSA_CRYPTO_C)
	/* mbedTLS 3 does TLS 1.3's key schedule (and more) through PSA, which
	 * must be up before the first handshake. Calling it again is a no-op. */
	if (psa_crypto_init() != PSA_SUCCESS) {
		snprintf(err, errlen, "%s: cannot start mbedTLS's PSA crypto", o->proxy ? "--proxy" : "--tls");
		goto fail;
	}
#endif
	if (pick_suites(setup) != 0) {
		snprintf(err, errlen, "%s: this mbedTLS offers no cipher suite with forward secrecy",
			 o->proxy ? "--proxy" : "--tls");
		goto fail;
	}
	if (!o->insecure && load_trust(setup, o, err, errlen) != 0)
		goto fail;
	if (load_identity(setup, o, err, errlen) != 0)
		goto fail;
	rc = configure(setup, &setup->conf);
#ifdef TLS12_FALLBACK
	if (rc == 0)
		rc = configure(setup, &setup->conf12);
	if (rc == 0) {
		mbedtls_ssl_conf_max_tls_version(&setup->conf12, MBEDTLS_SSL_VERSION_TLS1_2);
		mbedtls_ssl_conf_sig_algs(&setup->conf12, tls12_sig_algs);
	}
#endif
	if (rc != 0) {
		snprintf(err, errlen, "%s: cannot set up TLS", o->proxy ? "--proxy" : "--tls");
		goto fail;
	}
	return setup;
fail:
	tls_setup_destroy(setup);
	return NULL;
}

bool tls_setup_has_identity(const struct tls_setup *setup)
{
	return setup->have_identity;
}

void tls_setup_destroy(struct tls_setup *setup)
{
	if (setup == NULL)
		return;
	mbedtls_ssl_config_free(&setup->conf);
#ifdef TLS12_FALLBACK
	mbedtls_ssl_config_free(&setup->conf12);
#endif
	mbedtls_x509_crt_free(&setup->ca);
	mbedtls_x509_crt_free(&setup->own_cert);
	mbedtls_pk_free(&setup->own_key);
	mbedtls_ssl_session_free(&setup->last);
	free(setup->suites);
	free(setup);
}

/* ---- one connection ------------------------------------------------------------ */

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	struct tls_conn *c = ctx;
	return c->send(c->user, buf, len) == 0 ? (int)len : MBEDTLS_ERR_SSL_INTERNAL_ERROR;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
	struct tls_conn *c = ctx;
	if (c->in_len == 0)
		return MBEDTLS_ERR_SSL_WANT_READ;
	size_t n = len < c->in_len ? len : c->in_len;
	memcpy(buf, c->in, n);
	c->in += n;
	c->in_len -= n;
	return (int)n;
}

/* Is the address among the certificate's iPAddress names? mbedTLS keeps
 * every subjectAltName entry it parsed, with its context tag. */
static bool cert_has_ip(const mbedtls_x509_crt *crt, const unsigned char *ip, size_t ip_len)
{
	for (const mbedtls_x509_sequence *san = &crt->subject_alt_names; san != NULL; san = san->next) {
		const mbedtls_x509_buf *b = &san->buf;
		if (b->p != NULL && b->tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && b->len == ip_len &&
		    memcmp(b->p, ip, ip_len) == 0)
			return true;
	}
	return false;
}

/* Runs for each certificate of a chain being verified, which happens in
 * full handshakes only: a handshake that never calls it resumed a session.
 * For an IP literal, mbedTLS was told to check no name (see
 * tls_conn_create): the gateway's own certificate must hold the address
 * among its IP SANs, else the chain fails as for a wrong name, and mbedTLS
 * sends the bad_certificate alert. */
static int on_verify(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	struct tls_conn *c = ctx;
	c->chain_checked = true;
	if (depth == 0 && c->ip_literal && !cert_has_ip(crt, c->ip, c->ip_len)) {
		c->ip_mismatch = true;
		*flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
	}
	return 0;
}

struct tls_conn *tls_conn_create(struct tls_setup *setup, const char *name, tls_send_fn send, void *user)
{
	struct tls_conn *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->setup = setup;
	c->send = send;
	c->user = user;
	mbedtls_ssl_init(&c->ssl);
#ifdef TLS12_FALLBACK
	c->on12 = setup->use12;
	const mbedtls_ssl_config *conf = c->on12 ? &setup->conf12 : &setup->conf;
#else
	const mbedtls_ssl_config *conf = &setup->conf;
#endif
	if (mbedtls_ssl_setup(&c->ssl, conf) != 0)
		goto fail;
	const char *verify = setup->server_name ? setup->server_name : name;
	snprintf(c->verify_name, sizeof(c->verify_name), "%s", verify);
	if (inet_pton(AF_INET, verify, c->ip) == 1) {
		c->ip_literal = true;
		c->ip_len = 4;
	} else if (inet_pton(AF_INET6, verify, c->ip) == 1) {
		c->ip_literal = true;
		c->ip_len = 16;
	}
	/* SNI goes with names only (RFC 6066 forbids an address there), and
	 * mbedTLS 3.6 would send one. For an IP literal, setting no name
	 * tells mbedTLS (3.6.3 and later refuse a handshake without a name
	 * unless told) to check none: on_verify checks the IP SANs instead. */
	if (mbedtls_ssl_set_hostname(&c->ssl, c->ip_literal ? NULL : verify) != 0)
		goto fail;
	mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
	mbedtls_ssl_set_verify(&c->ssl, on_verify, c);
	/* A resumed handshake checks no certificate: offer a session only to
	 * the name it was verified for. One that cannot be offered just means
	 * a full handshake. */
	c->offered = setup->have_last && strcmp(setup->last_name, c->verify_name) == 0 &&
		     mbedtls_ssl_set_session(&c->ssl, &setup->last) == 0;
	return c;
fail:
	mbedtls_ssl_free(&c->ssl);
	free(c);
	return NULL;
}

void tls_conn_destroy(struct tls_conn *c)
{
	if (c == NULL)
		return;
	mbedtls_ssl_free(&c->ssl);
	free(c);
}

void tls_conn_feed(struct tls_conn *c, const uint8_t *data, size_t len)
{
	c->in = data;
	c->in_len = len;
}

/* The parsed chain the gateway sent stays in the session for as long as
 * the connection lives, and is needed no more once it is verified: freeing
 * it takes a few KiB off every idle tunnel. A session saved afterwards (a
 * TLS 1.3 ticket) has no chain then, and needs none to be resumed. */
static void drop_peer_chain(struct tls_conn *c)
{
#if defined(MBEDTLS_SSL_KEEP_PEER_CERTIFICATE)
	if (!c->setup->keep_chain && c->ssl.session != NULL && c->ssl.session->peer_cert != NULL) {
		mbedtls_x509_crt_free(c->ssl.session->peer_cert);
		mbedtls_free(c->ssl.session->peer_cert); /* mbedTLS's allocation, its allocator */
		c->ssl.session->peer_cert = NULL;
	}
#else
	(void)c;
#endif
}

/* Keeps this connection's session for the next connection to the same
 * name. */
static void save_session(struct tls_conn *c)
{
	mbedtls_ssl_session fresh;
	mbedtls_ssl_session_init(&fresh);
	if (mbedtls_ssl_get_session(&c->ssl, &fresh) == 0) {
		mbedtls_ssl_session_free(&c->setup->last);
		c->setup->last = fresh;
		c->setup->have_last = true;
		snprintf(c->setup->last_name, sizeof(c->setup->last_name), "%s", c->verify_name);
	} else {
		mbedtls_ssl_session_free(&fresh);
	}
}

static void forget_session(struct tls_setup *s)
{
	mbedtls_ssl_session_free(&s->last);
	mbedtls_ssl_session_init(&s->last);
	s->have_last = false;
}

int tls_conn_handshake(struct tls_conn *c)
{
	int rc = mbedtls_ssl_handshake(&c->ssl);
	if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
		return TLS_WANT_READ;
#ifdef TLS13_TICKETS
	/* A ticket that came with the end of the handshake: keep it, go on. */
	if (rc == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) {
		save_session(c);
		return tls_conn_handshake(c);
	}
#endif
	if (rc != 0) {
		c->last_error = rc;
#ifdef TLS12_FALLBACK
		/* The gateway took TLS 1.2 and signed its key exchange with
		 * RSA-PSS, which this mbedTLS offered but refuses there: from
		 * now on its connections offer TLS 1.2 without RSA-PSS. */
		if (rc == MBEDTLS_ERR_SSL_ILLEGAL_PARAMETER && !c->on12 &&
		    mbedtls_ssl_get_version_number(&c->ssl) == MBEDTLS_SSL_VERSION_TLS1_2) {
			c->fallback_news = !c->setup->use12;
			c->setup->use12 = true;
			c->fallback = true;
		}
#endif
		/* A session offered binds the handshake to its version (mbedTLS
		 * offers a TLS 1.2 session's server 1.2 only, a 1.3 ticket's 1.3
		 * only): a gateway that changed must not fail every tunnel. */
		if (c->offered)
			forget_session(c->setup);
		return TLS_ERR;
	}
	c->resumed = c->offered && !c->setup->insecure && !c->chain_checked;
	c->established = true;
	/* TLS 1.2's session is complete now; TLS 1.3's waits for a ticket. */
#ifdef TLS_V3
	c->tls13 = mbedtls_ssl_get_version_number(&c->ssl) == MBEDTLS_SSL_VERSION_TLS1_3;
#endif
	if (!c->tls13)
		save_session(c);
	drop_peer_chain(c);
	return TLS_OK;
}

void tls_setup_keep_peer_chain(struct tls_setup *s)
{
	s->keep_chain = true;
}

bool tls_conn_resumed(const struct tls_conn *c)
{
	return c->resumed;
}

const char *tls_conn_version(const struct tls_conn *c)
{
	return mbedtls_ssl_get_version(&c->ssl);
}

const char *tls_conn_suite(const struct tls_conn *c)
{
	const char *suite = mbedtls_ssl_get_ciphersuite(&c->ssl);
	return suite ? suite : "?";
}

/* Days from now to an X.509 time (UTC). */
static long days_until(const mbedtls_x509_time *t)
{
	struct tm tm = {0};
	tm.tm_year = t->year - 1900;
	tm.tm_mon = t->mon - 1;
	tm.tm_mday = t->day;
	tm.tm_hour = t->hour;
	tm.tm_min = t->min;
	tm.tm_sec = t->sec;
	time_t when = timegm(&tm);
	double left = difftime(when, time(NULL));
	return (long)(left >= 0 ? left / 86400 : -((-left + 86399) / 86400));
}

void tls_conn_info(const struct tls_conn *c, struct tls_info *out)
{
	memset(out, 0, sizeof(*out));
	out->days_left = LONG_MIN;
	snprintf(out->version, sizeof(out->version), "%s", tls_conn_version(c));
	snprintf(out->suite, sizeof(out->suite), "%s", tls_conn_suite(c));
	snprintf(out->name, sizeof(out->name), "%s", c->verify_name);
	out->verified = !c->setup->insecure;
	out->resumed = c->resumed;
	const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&c->ssl);
	if (crt == NULL)
		return;
	out->have_cert = true;
	if (mbedtls_x509_dn_gets(out->subject, sizeof(out->subject), &crt->subject) < 0)
		snprintf(out->subject, sizeof(out->subject), "?");
	if (mbedtls_x509_dn_gets(out->issuer, sizeof(out->issuer), &crt->issuer) < 0)
		snprintf(out->issuer, sizeof(out->issuer), "?");
	out->days_left = days_until(&crt->valid_to);
}

int tls_conn_read(struct tls_conn *c, uint8_t *out, size_t cap)
{
	if (cap == 0)
		return TLS_WANT_READ;
#ifdef TLS13_TICKETS
	bool again = true;
#endif
	for (;;) {
		int rc = mbedtls_ssl_read(&c->ssl, out, cap);
		if (rc > 0) {
			c->app_data = true;
			return rc;
		}
		if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
			return TLS_CLOSED;
#ifdef TLS13_TICKETS
		/* A NewSessionTicket read is kept, and taken by the next call,
		 * which reports it: make that call now, not on the next input. */
		if (rc == MBEDTLS_ERR_SSL_WANT_READ && again && c->tls13) {
			again = false;
			continue;
		}
#endif
		if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
			return TLS_WANT_READ;
#ifdef TLS13_TICKETS
		if (rc == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) {
			save_session(c);
			again = true;
			continue;
		}
#endif
		c->last_error = rc;
		return TLS_ERR;
	}
}

int tls_conn_write(struct tls_conn *c, const uint8_t *data, size_t len)
{
	while (len > 0) {
		int rc = mbedtls_ssl_write(&c->ssl, data, len);
		if (rc <= 0) {
			c->last_error = rc;
			return TLS_ERR;
		}
		data += rc;
		len -= (size_t)rc;
	}
	return TLS_OK;
}

void tls_conn_close_notify(struct tls_conn *c)
{
	mbedtls_ssl_close_notify(&c->ssl);
}

bool tls_conn_try_again(const struct tls_conn *c, bool *news)
{
	*news = c->fallback_news;
	return c->fallback;
}

bool tls_conn_refused_late(const struct tls_conn *c)
{
	return c->tls13 && !c->app_data && c->last_error == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE;
}

void tls_conn_describe_error(const struct tls_conn *c, char *out, size_t outlen)
{
	const struct tls_setup *setup = c->setup;
	const char *peer = setup->proxy ? "the proxy" : "the gateway";
	uint32_t flags = mbedtls_ssl_get_verify_result(&c->ssl);
	/* The address alone is wrong: say so; with other faults, say all. */
	if (c->ip_mismatch && (flags == (uint32_t)-1 || (flags & ~(uint32_t)MBEDTLS_X509_BADCERT_CN_MISMATCH) == 0)) {
		snprintf(out, outlen, "the certificate does not name the address %s — %s", c->verify_name,
			 setup->proxy ? "give the proxy by a name its certificate holds"
				      : "use --tls-server-name with a name it holds");
		return;
	}
	if (c->last_error == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0 && flags != (uint32_t)-1) {
		char info[256];
		mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
		for (char *p = info; *p; p++)
			if (*p == '\n')
				*p = (p[1] ? ';' : '\0');
		char hint[200] = "";
		if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH)
			snprintf(hint, sizeof(hint), " — the certificate is for another name: %s",
				 setup->proxy ? "check the proxy URL's host" : "check --host, or use --tls-server-name");
		else if (flags & MBEDTLS_X509_BADCERT_EXPIRED)
			snprintf(hint, sizeof(hint), " — %s's certificate has expired: renew it", peer);
		else if (flags & MBEDTLS_X509_BADCERT_FUTURE)
			snprintf(hint, sizeof(hint), " — %s's certificate is not valid yet: check the clocks", peer);
		else if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
			snprintf(hint, sizeof(hint), " — trust %s's CA with %s FILE%s", peer, setup->ca_flag,
				 setup->proxy ? "" : " (or SSL_CERT_FILE)");
		snprintf(out, outlen, "certificate verification failed for %s: %s%s", c->verify_name, info, hint);
		return;
	}
	char why[160];
	describe_mbedtls(c->last_error, why, sizeof(why));
	const char *hint = "";
	if (c->last_error == MBEDTLS_ERR_SSL_INVALID_RECORD && !c->established)
		hint = setup->proxy ? " — the proxy does not answer in TLS: give it as http://, or its TLS port"
				    : " — this port does not answer in TLS (a plain HTTP port?): leave out --tls, or give the "
				      "port of the gateway's TLS listener";
	else if (c->last_error == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE)
		hint = setup->proxy ? " — the proxy refused the handshake"
		       : setup->have_identity ? " — the gateway refused the handshake: check --client-cert/--client-key"
					      : " — the gateway refused the handshake; if it wants a client certificate, give "
						"--client-cert and --client-key";
	if (c->fallback)
		snprintf(out, outlen, "TLS handshake with %s failed: it signed TLS 1.2 with RSA-PSS, which mbedTLS %s "
			 "cannot check there; its next connections offer TLS 1.2 without it", c->verify_name,
			 MBEDTLS_VERSION_STRING);
	else if (c->established && !tls_conn_refused_late(c))
		snprintf(out, outlen, "TLS error on the connection with %s: %s", c->verify_name, why);
	else
		snprintf(out, outlen, "TLS handshake with %s failed: %s%s", c->verify_name, why, hint);
}

/* config: the settings of one `tcp-tunnel` run, as the command line gives
 * them. cli.c fills it; every other module only reads it.
 *
 * Ownership: the strings point into argv or into memory owned by the
 * config (see config_finish); nothing else frees them. */
#ifndef OTOROSHICTL_CONFIG_H
#define OTOROSHICTL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

enum access_type {
	ACCESS_APIKEY,
	ACCESS_BEARER,
	ACCESS_SESSION,
	ACCESS_PUBLIC,
};

struct tunnel_config {
	/* --host exactly as given (goes into the Host header unchanged). */
	const char *host;
	/* The name or address to connect to, brackets removed, and its port
	 * (given, or 80/443). */
	char gw_name[256];
	uint16_t gw_port;
	bool tls;
	const char *ca_cert;         /* --ca-cert: trust these instead of the system store */
	const char *client_cert;     /* --client-cert/--client-key: mutual TLS */
	const char *client_key;
	const char *tls_server_name; /* --tls-server-name: SNI and the name verified */
	bool insecure;               /* --insecure: no verification at all */

	const char *local_host;
	uint16_t local_port;

	const char *remote_host; /* NULL when not given */
	uint16_t remote_port;    /* 0 when not given */

	enum access_type access;
	const char *apikey_client_id;
	const char *apikey_client_secret;
	const char *bearer_token;
	const char *session_token;

	unsigned keepalive; /* seconds between pings on an idle tunnel; 0: none */

	bool verbose;
};

#endif

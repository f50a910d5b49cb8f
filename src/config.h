/* config: the settings of one `tcp-tunnel` run, and where they come from
 * besides the command line: a profile in an INI file, the environment
 * (secrets), and files holding secrets. cli.c fills the settings; every
 * other module only reads them.
 *
 * Precedence: a flag, then the environment, then the profile.
 *
 * Ownership: the strings point into argv, into the environment, or into
 * memory the config owns (profile values, secrets read from files), which
 * config_finish wipes and frees. */
#ifndef OTOROSHICTL_CONFIG_H
#define OTOROSHICTL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum access_type {
	ACCESS_APIKEY,
	ACCESS_BEARER,
	ACCESS_SESSION,
	ACCESS_PUBLIC,
};

/* One listener and the remote its tunnels ask for: from -L/--forward, a
 * profile's `forward` lines, or (when neither is given) --local-host,
 * --local-port, --remote-host and --remote-port. */
struct forward_spec {
	const char *local_host;
	uint16_t local_port;
	const char *remote_host; /* NULL: the route's own target */
	uint16_t remote_port;    /* 0: none */
	const char *spec;        /* as written ("15432:db:5432"), or NULL */
};

#define CONFIG_MAX_FORWARDS 32
#define CONFIG_MAX_PROFILES 16
#define CONFIG_MAX_HEADERS 16

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

	/* --connect-to HOST[:PORT]: where the connection goes instead (the
	 * Host header and the TLS name stay --host's); connect_name[0] == 0
	 * when not given. */
	const char *connect_to;
	char connect_name[256];
	uint16_t connect_port;
	/* --header 'Name: value', each as "Name: value" (owned), added to the
	 * upgrade request; header_secret[i] when its value must not be logged. */
	const char *headers[CONFIG_MAX_HEADERS];
	bool header_secret[CONFIG_MAX_HEADERS];
	size_t n_headers;

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
	unsigned linger_ms; /* after a local end, the gateway's silence that sends the Close */
	unsigned max_connections; /* tunnels open at once; more are refused */
	const char *proxy;  /* --proxy URL, or NULL */
	const char *proxy_ca_cert; /* --proxy-ca-cert: the CAs for an https:// proxy */
	bool proxy_insecure;       /* --proxy-insecure: no verification of the proxy */
	bool stdio;         /* one tunnel over standard input and output */
	bool check;         /* --check: diagnose each forward, listen nowhere */
	unsigned check_wait_ms; /* --check-wait: how long the target's answer is awaited */

	/* Where to listen and what to reach: at least one once parsed. */
	struct forward_spec forwards[CONFIG_MAX_FORWARDS];
	size_t n_forwards;

	const char *profile;     /* --profile NAME: the one this config is */
	const char *profiles[CONFIG_MAX_PROFILES]; /* every -p given, in order */
	size_t n_profiles;
	/* When set (1 to n_profiles), the command line is parsed for that
	 * profile alone: a run of several profiles has one config each. */
	size_t profile_index;
	/* With profile_index: the config of the first pass, whose secret files
	 * were read then (a FIFO gives its secret once). */
	const struct tunnel_config *base;
	const char *config_file; /* --config FILE */
	bool list_profiles;

	bool verbose;
	/* The reference client's global options that were given and ignored. */
	const char *ignored[24];
	size_t n_ignored;

	/* Which of the descriptors 0 to 2 were closed at start (bit per fd;
	 * they are open on /dev/null now). */
	unsigned std_closed;

	/* A warning for the user (a secret in a file others can read), or "". */
	char warning[512];
	const char *log_format; /* --log-format (human or json), or NULL */
	bool log_timestamps;    /* --log-timestamps */
	/* Strings the config owns. */
	char *owned[48 + CONFIG_MAX_FORWARDS + CONFIG_MAX_HEADERS];
	size_t n_owned;
	unsigned long given; /* bit per option id: set by a flag or the environment */
};

/* Keeps s (already allocated) for the config's lifetime. Returns s, or NULL
 * when the config holds too many strings (s is then freed). */
char *config_own(struct tunnel_config *cfg, char *s);
/* Wipes and frees what the config owns. */
void config_finish(struct tunnel_config *cfg);

/* The profile file: --config, else $XDG_CONFIG_HOME/otoroshictl/tunnels.ini,
 * else ~/.config/otoroshictl/tunnels.ini. Writes it into out. */
void config_profile_path(const struct tunnel_config *cfg, char *out, size_t outlen);

/* Calls apply(key, value, line) for every key of section `name` of the INI
 * file at path. Returns 0; or -1 with err naming the file (and line) when
 * the file cannot be read, is malformed, has no such section, or apply
 * fails (apply then wrote the reason into err, which gets the file and line
 * put in front). *has_secret tells whether the section named a secret. */
typedef int (*config_apply_fn)(void *ctx, const char *key, const char *value, char *err, size_t errlen);
int config_load_profile(const char *path, const char *name, config_apply_fn apply, void *ctx, char *err,
			size_t errlen);

/* Prints `NAME<TAB>HOST<TAB>REMOTE` for each profile of the file. Returns
 * 0, or -1 with err. */
int config_list_profiles(const char *path, FILE *out, char *err, size_t errlen);

/* The longest first line a secret file may have: enough for any JWT. */
#define CONFIG_SECRET_MAX 65536

/* Reads a secret from a file: its first line, without the line end (LF or
 * CRLF) and without a leading UTF-8 byte order mark, of at most
 * CONFIG_SECRET_MAX bytes. A FIFO is read up to its first line end. Returns
 * an allocated string, or NULL with err naming the file and what is wrong
 * (unreadable, a directory, a device or a socket, empty, an empty first
 * line, too long, a NUL byte). *is_file tells whether it is a regular file
 * (whose permissions are worth a warning). */
char *config_read_secret_file(const char *path, const char *what, bool *is_file, char *err, size_t errlen);

/* Wipes memory that held a secret, in a way the compiler keeps. */
void config_wipe(void *p, size_t len);

/* When path is readable by group or others, writes a warning naming it. */
void config_check_private(const char *path, char *warning, size_t warnlen);

#endif

/* cli: option parsing and checking for `tcp-tunnel`; see cli.h. */
#include "cli.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "log.h"
#include "url.h"

enum opt_id {
	OPT_HOST, OPT_TLS, OPT_LOCAL_HOST, OPT_LOCAL_PORT, OPT_REMOTE_HOST, OPT_REMOTE_PORT,
	OPT_ACCESS_TYPE, OPT_CLIENT_ID, OPT_CLIENT_SECRET, OPT_BEARER, OPT_SESSION,
	OPT_CLIENT_SECRET_FILE, OPT_BEARER_FILE, OPT_SESSION_FILE,
	OPT_KEEPALIVE, OPT_LINGER, OPT_MAX_CONNECTIONS, OPT_PROXY, OPT_STDIO,
	OPT_CA_CERT, OPT_CLIENT_CERT, OPT_CLIENT_KEY, OPT_INSECURE, OPT_TLS_SERVER_NAME,
	OPT_PROXY_CA_CERT, OPT_PROXY_INSECURE,
	OPT_CHECK, OPT_CHECK_WAIT, OPT_CONNECT_TO, OPT_HEADER, OPT_FORWARD, OPT_PROFILE, OPT_CONFIG, OPT_LIST_PROFILES,
	OPT_LOG_FORMAT, OPT_LOG_TIMESTAMPS,
	OPT_VERBOSE, OPT_HELP,
};

/* Where an option may be given. */
enum { IN_ARGV = 1, IN_PROFILE = 2, ANYWHERE = 3 };

struct opt {
	const char *long_name;
	char short_name;
	bool takes_value;
	enum opt_id id;
	int where;
	/* The setting this option decides (the *-file options give a secret):
	 * flags, the environment and a profile are ranked per setting. */
	enum opt_id target;
	bool secret;
};

static const struct opt opts[] = {
	{"host", 0, true, OPT_HOST, ANYWHERE, OPT_HOST, false},
	{"tls", 0, false, OPT_TLS, ANYWHERE, OPT_TLS, false},
	{"local-host", 0, true, OPT_LOCAL_HOST, ANYWHERE, OPT_LOCAL_HOST, false},
	{"local-port", 0, true, OPT_LOCAL_PORT, ANYWHERE, OPT_LOCAL_PORT, false},
	{"remote-host", 0, true, OPT_REMOTE_HOST, ANYWHERE, OPT_REMOTE_HOST, false},
	{"remote-port", 0, true, OPT_REMOTE_PORT, ANYWHERE, OPT_REMOTE_PORT, false},
	{"access-type", 0, true, OPT_ACCESS_TYPE, ANYWHERE, OPT_ACCESS_TYPE, false},
	{"apikey-client-id", 0, true, OPT_CLIENT_ID, ANYWHERE, OPT_CLIENT_ID, false},
	{"apikey-client-secret", 0, true, OPT_CLIENT_SECRET, ANYWHERE, OPT_CLIENT_SECRET, true},
	{"bearer-token", 0, true, OPT_BEARER, ANYWHERE, OPT_BEARER, true},
	{"session-token", 0, true, OPT_SESSION, ANYWHERE, OPT_SESSION, true},
	{"apikey-client-secret-file", 0, true, OPT_CLIENT_SECRET_FILE, ANYWHERE, OPT_CLIENT_SECRET, false},
	{"bearer-token-file", 0, true, OPT_BEARER_FILE, ANYWHERE, OPT_BEARER, false},
	{"session-token-file", 0, true, OPT_SESSION_FILE, ANYWHERE, OPT_SESSION, false},
	{"keepalive", 0, true, OPT_KEEPALIVE, ANYWHERE, OPT_KEEPALIVE, false},
	{"linger", 0, true, OPT_LINGER, ANYWHERE, OPT_LINGER, false},
	{"max-connections", 0, true, OPT_MAX_CONNECTIONS, ANYWHERE, OPT_MAX_CONNECTIONS, false},
	{"proxy", 0, true, OPT_PROXY, ANYWHERE, OPT_PROXY, true},
	{"stdio", 0, false, OPT_STDIO, IN_ARGV, OPT_STDIO, false},
	{"ca-cert", 0, true, OPT_CA_CERT, ANYWHERE, OPT_CA_CERT, false},
	{"client-cert", 0, true, OPT_CLIENT_CERT, ANYWHERE, OPT_CLIENT_CERT, false},
	{"client-key", 0, true, OPT_CLIENT_KEY, ANYWHERE, OPT_CLIENT_KEY, false},
	{"insecure", 0, false, OPT_INSECURE, ANYWHERE, OPT_INSECURE, false},
	{"tls-server-name", 0, true, OPT_TLS_SERVER_NAME, ANYWHERE, OPT_TLS_SERVER_NAME, false},
	{"proxy-ca-cert", 0, true, OPT_PROXY_CA_CERT, ANYWHERE, OPT_PROXY_CA_CERT, false},
	{"proxy-insecure", 0, false, OPT_PROXY_INSECURE, ANYWHERE, OPT_PROXY_INSECURE, false},
	{"check", 0, false, OPT_CHECK, IN_ARGV, OPT_CHECK, false},
	{"check-wait", 0, true, OPT_CHECK_WAIT, ANYWHERE, OPT_CHECK_WAIT, false},
	{"connect-to", 0, true, OPT_CONNECT_TO, ANYWHERE, OPT_CONNECT_TO, false},
	{"header", 'H', true, OPT_HEADER, ANYWHERE, OPT_HEADER, false},
	{"forward", 'L', true, OPT_FORWARD, ANYWHERE, OPT_FORWARD, false},
	{"profile", 'p', true, OPT_PROFILE, IN_ARGV, OPT_PROFILE, false},
	{"config", 0, true, OPT_CONFIG, IN_ARGV, OPT_CONFIG, false},
	{"list-profiles", 0, false, OPT_LIST_PROFILES, IN_ARGV, OPT_LIST_PROFILES, false},
	{"log-format", 0, true, OPT_LOG_FORMAT, ANYWHERE, OPT_LOG_FORMAT, false},
	{"log-timestamps", 0, false, OPT_LOG_TIMESTAMPS, ANYWHERE, OPT_LOG_TIMESTAMPS, false},
	{"verbose", 'v', false, OPT_VERBOSE, ANYWHERE, OPT_VERBOSE, false},
	{"help", 'h', false, OPT_HELP, IN_ARGV, OPT_HELP, false},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

/* The reference client's global options (PROTOCOL.md section 7), which
 * tcp-tunnel accepts anywhere and ignores, so that aliases written for it
 * work unchanged. -v/--verbose is a real option here. */
static const struct {
	const char *long_name;
	char short_name;
	bool takes_value;
} reference_globals[] = {
	{"ouput", 'o', true},
	{"config-file", 'c', true},
	{"otoroshi-cluster-tls", 0, false},
	{"otoroshi-cluster-hostname", 0, true},
	{"otoroshi-cluster-port", 0, true},
	{"otoroshi-cluster-routing-tls", 0, false},
	{"otoroshi-cluster-routing-hostname", 0, true},
	{"otoroshi-cluster-routing-port", 0, true},
	{"otoroshi-user-client-id", 0, true},
	{"otoroshi-user-client-secret", 0, true},
	{"otoroshi-user-health-key", 0, true},
	{"otoroshi-cluster-cert-location", 0, true},
	{"otoroshi-cluster-key-location", 0, true},
	{"otoroshi-cluster-ca-location", 0, true},
};

int cli_skip_reference_global(int argc, char **argv, int i, const char **name)
{
	const char *arg = argv[i];
	for (size_t k = 0; k < sizeof(reference_globals) / sizeof(reference_globals[0]); k++) {
		bool takes = reference_globals[k].takes_value;
		*name = reference_globals[k].long_name;
		if (strncmp(arg, "--", 2) == 0) {
			size_t len = strlen(*name);
			if (strncmp(arg + 2, *name, len) != 0)
				continue;
			if (arg[2 + len] == '\0')
				return !takes ? 1 : i + 1 < argc ? 2 : -1;
			if (arg[2 + len] == '=')
				return takes ? 1 : -1;
		} else if (reference_globals[k].short_name != 0 && arg[0] == '-' &&
			   arg[1] == reference_globals[k].short_name) {
			if (arg[2] != '\0')
				return 1; /* -oVALUE */
			return i + 1 < argc ? 2 : -1;
		}
	}
	*name = NULL;
	return 0;
}


void cli_defaults(struct tunnel_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->local_host = "127.0.0.1";
	cfg->local_port = 2222;
	cfg->access = ACCESS_APIKEY;
	cfg->keepalive = 30;
	cfg->linger_ms = 2000;
	cfg->check_wait_ms = 2000;
	cfg->max_connections = 1024;
}

static int usage(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
	snprintf(err, errlen, fmt, a, b);
	return CLI_USAGE;
}

/* A decimal number from min to max and nothing else (no sign, no space). */
static bool parse_number(const char *s, unsigned min, unsigned max, unsigned *out)
{
	if (*s == '\0' || strlen(s) > 9)
		return false;
	unsigned v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* Seconds as a decimal with at most three decimals ("2", "0.5"), from 0 to
 * max_s, in milliseconds. */
static bool parse_seconds_ms(const char *s, unsigned max_s, unsigned *out_ms)
{
	char whole[16];
	const char *dot = strchr(s, '.');
	size_t wl = dot ? (size_t)(dot - s) : strlen(s);
	if (wl == 0 || wl >= sizeof(whole))
		return false;
	memcpy(whole, s, wl);
	whole[wl] = '\0';
	unsigned secs, ms = 0;
	if (!parse_number(whole, 0, max_s, &secs))
		return false;
	if (dot != NULL) {
		size_t fl = strlen(dot + 1);
		if (fl == 0 || fl > 3)
			return false;
		for (size_t i = 0; i < 3; i++) {
			char c = i < fl ? dot[1 + i] : '0';
			if (c < '0' || c > '9')
				return false;
			ms = ms * 10 + (unsigned)(c - '0');
		}
	}
	if (secs == max_s && ms > 0)
		return false;
	*out_ms = secs * 1000 + ms;
	return true;
}

static bool parse_port(const char *s, unsigned min, uint16_t *out)
{
	unsigned v;
	if (!parse_number(s, min, 65535, &v))
		return false;
	*out = (uint16_t)v;
	return true;
}

static int parse_access_type(const char *v, enum access_type *out)
{
	static const struct { const char *name; enum access_type type; } types[] = {
		{"apikey", ACCESS_APIKEY}, {"bearer", ACCESS_BEARER}, {"jwt", ACCESS_BEARER},
		{"session", ACCESS_SESSION}, {"public", ACCESS_PUBLIC},
	};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		if (strcasecmp(v, types[i].name) == 0) {
			*out = types[i].type;
			return 0;
		}
	}
	return -1;
}

static const struct opt *find_long(const char *name, size_t len)
{
	for (size_t i = 0; i < N_OPTS; i++)
		if (strlen(opts[i].long_name) == len && strncmp(opts[i].long_name, name, len) == 0)
			return &opts[i];
	return NULL;
}

static const struct opt *find_short(char c)
{
	for (size_t i = 0; i < N_OPTS; i++)
		if (opts[i].short_name == c)
			return &opts[i];
	return NULL;
}

static int check_value(enum opt_id id, const char *v, const char *label, char *err, size_t errlen);

/* Reads the secret a *-file option names into the setting it provides. */
static int apply_secret_file(const struct opt *o, const char *path, struct tunnel_config *cfg, char *err,
			     size_t errlen)
{
	char what[64];
	snprintf(what, sizeof(what), "--%s", o->long_name);
	bool is_file = false;
	char *secret;
	if (cfg->base != NULL) {
		/* Read once, in the first pass; each profile takes a copy. */
		const struct tunnel_config *b = cfg->base;
		const char *read = o->target == OPT_CLIENT_SECRET ? b->apikey_client_secret
				 : o->target == OPT_BEARER	 ? b->bearer_token
								 : b->session_token;
		secret = read != NULL ? config_own(cfg, strdup(read)) : NULL;
		if (secret == NULL)
			return usage(err, errlen, "%s: out of memory%s", what, "");
		snprintf(cfg->warning, sizeof(cfg->warning), "%s", b->warning);
	} else {
		secret = config_own(cfg, config_read_secret_file(path, what, &is_file, err, errlen));
		if (secret == NULL)
			return CLI_USAGE;
	}
	char label[1100];
	snprintf(label, sizeof(label), "%s '%s'", what, path);
	if (check_value(o->target, secret, label, err, errlen) != CLI_OK)
		return CLI_USAGE;
	if (is_file)
		config_check_private(path, cfg->warning, sizeof(cfg->warning));
	if (o->target == OPT_CLIENT_SECRET)
		cfg->apikey_client_secret = secret;
	else if (o->target == OPT_BEARER)
		cfg->bearer_token = secret;
	else
		cfg->session_token = secret;
	return CLI_OK;
}

static int parse_bool(const char *v, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

/* Values that go into the request head (or the SNI) must not carry a byte
 * that would end a header line or forge another; a client id cannot hold
 * the ':' that Basic authentication splits on. label names where the value
 * came from: the flag, the variable or the file. */
static int check_value(enum opt_id id, const char *v, const char *label, char *err, size_t errlen)
{
	switch (id) {
	case OPT_HOST: case OPT_REMOTE_HOST: case OPT_CLIENT_ID: case OPT_CLIENT_SECRET: case OPT_CONNECT_TO:
	case OPT_BEARER: case OPT_SESSION: case OPT_PROXY: case OPT_TLS_SERVER_NAME:
		break;
	default:
		return CLI_OK;
	}
	long at = url_control_at(v);
	if (at >= 0) {
		unsigned char c = (unsigned char)v[at];
		char what[64];
		if (c == '\r' || c == '\n')
			snprintf(what, sizeof(what), "a line break");
		else
			snprintf(what, sizeof(what), "the control character 0x%02X", c);
		snprintf(err, errlen, "%s holds %s at byte %ld: it cannot go into the request head (a value of "
			 "several lines? give only the value itself)", label, what, at + 1);
		return CLI_USAGE;
	}
	if (id == OPT_CLIENT_ID && strchr(v, ':') != NULL) {
		snprintf(err, errlen, "%s holds ':', which the Basic credential ('id:secret') cannot carry: check "
			 "the client id", label);
		return CLI_USAGE;
	}
	return CLI_OK;
}

#define CONFIG_MAX_PROFILES_TEXT "16"
#define CONFIG_MAX_FORWARDS_TEXT "32"
#define CONFIG_MAX_HEADERS_TEXT "16"
_Static_assert(CONFIG_MAX_HEADERS == 16, "CONFIG_MAX_HEADERS_TEXT");
_Static_assert(CONFIG_MAX_FORWARDS == 32, "CONFIG_MAX_FORWARDS_TEXT");
_Static_assert(CONFIG_MAX_PROFILES == 16, "CONFIG_MAX_PROFILES_TEXT");

/* The parts of a forward, split on the colons outside brackets. */
static int split_forward(char *s, char *parts[4], char *err, size_t errlen)
{
	int n = 0;
	char *p = s;
	parts[n++] = p;
	int depth = 0;
	for (; *p != '\0'; p++) {
		if (*p == '[')
			depth++;
		else if (*p == ']')
			depth--;
		else if (*p == ':' && depth == 0) {
			if (n == 4)
				return usage(err, errlen, "has more than four parts: put an IPv6 address in brackets, as in "
					     "[::1]:5432:db:5432%s%s", "", "");
			*p = '\0';
			parts[n++] = p + 1;
		}
		if (depth < 0 || depth > 1)
			return usage(err, errlen, "has unbalanced brackets%s%s", "", "");
	}
	if (depth != 0)
		return usage(err, errlen, "has unbalanced brackets%s%s", "", "");
	return n;
}

/* A host part: brackets around an address only, nothing empty. */
static bool host_part(char *h, bool strip, const char **out)
{
	size_t len = strlen(h);
	if (len == 0)
		return false;
	if (h[0] == '[') {
		if (len < 3 || h[len - 1] != ']' || strchr(h + 1, '[') != NULL || strchr(h, ']') != h + len - 1)
			return false;
		if (strip) {
			h[len - 1] = '\0';
			h++;
		}
	} else if (strchr(h, '[') != NULL || strchr(h, ']') != NULL) {
		return false;
	}
	*out = h;
	return true;
}

int cli_parse_forward(char *s, struct forward_spec *out, char *err, size_t errlen)
{
	char why[200];
	char *parts[4];
	char shown[300];
	snprintf(shown, sizeof(shown), "%s", s);
	memset(out, 0, sizeof(*out));
	out->local_host = "127.0.0.1";
	int n = split_forward(s, parts, why, sizeof(why));
	if (n < 0) {
		snprintf(err, errlen, "-L '%s' %s", shown, why);
		return -1;
	}
	int port_at = n == 1 || n == 3 ? 0 : 1;
	if (port_at == 1 && !host_part(parts[0], false, &out->local_host)) {
		snprintf(err, errlen, "-L '%s': '%s' is not an address to listen on (an IPv6 one goes in brackets)", shown,
			 parts[0]);
		return -1;
	}
	if (!parse_port(parts[port_at], 0, &out->local_port)) {
		snprintf(err, errlen, "-L '%s': '%s' is not a port number to listen on (0 to 65535); the form is "
			 "[BIND:]PORT[:HOST:HOSTPORT]", shown, parts[port_at]);
		return -1;
	}
	if (n >= 3) {
		if (!host_part(parts[port_at + 1], true, &out->remote_host)) {
			snprintf(err, errlen, "-L '%s': '%s' is not a remote host (an IPv6 one goes in brackets)", shown,
				 parts[port_at + 1]);
			return -1;
		}
		if (!parse_port(parts[port_at + 2], 1, &out->remote_port)) {
			snprintf(err, errlen, "-L '%s': '%s' is not a remote port (1 to 65535)", shown, parts[port_at + 2]);
			return -1;
		}
		char label[340];
		snprintf(label, sizeof(label), "-L '%s'", shown);
		if (check_value(OPT_REMOTE_HOST, out->remote_host, label, err, errlen) != CLI_OK)
			return -1;
	}
	return 0;
}

/* Adds a forward: its text is kept whole for the logs, and cut in a copy. */
static int add_forward(struct tunnel_config *cfg, const char *v, char *err, size_t errlen)
{
	if (cfg->n_forwards >= CONFIG_MAX_FORWARDS)
		return usage(err, errlen, "more than %s forwards (-L '%s' is one more)", CONFIG_MAX_FORWARDS_TEXT, v);
	size_t len = strlen(v);
	char *both = malloc(2 * len + 2);
	if (both == NULL || config_own(cfg, both) == NULL)
		return usage(err, errlen, "out of memory for -L '%s'%s", v, "");
	memcpy(both, v, len + 1);
	memcpy(both + len + 1, v, len + 1);
	struct forward_spec f;
	if (cli_parse_forward(both + len + 1, &f, err, errlen) != 0)
		return CLI_USAGE;
	f.spec = both;
	cfg->forwards[cfg->n_forwards++] = f;
	return CLI_OK;
}

/* Headers that the tunnel writes itself, or that would break the request:
 * --header cannot set them. */
static const char *const own_headers[] = {
	"host", "connection", "upgrade", "authorization", "content-length", "transfer-encoding",
};

/* A header name whose value is a secret: never logged. */
static bool secret_header(const char *name, size_t len)
{
	static const char *const parts[] = {"token", "secret", "key", "cookie", "auth", "pass",
					    "session", "bearer", "jwt", "credential", "signature"};
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		size_t pl = strlen(parts[i]);
		for (size_t k = 0; k + pl <= len; k++)
			if (strncasecmp(name + k, parts[i], pl) == 0)
				return true;
	}
	return false;
}

/* RFC 9110's token characters. */
static bool token_char(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

int cli_parse_header(const char *v, char *out, size_t outlen, bool *secret, char *err, size_t errlen)
{
	const char *colon = strchr(v, ':');
	size_t nl = colon ? (size_t)(colon - v) : strlen(v);
	int shown = (int)(nl < 200 ? nl : 200);
	if (colon == NULL || nl == 0) {
		snprintf(err, errlen, "--header '%.200s': give 'Name: value', as in --header 'X-Team: data'", v);
		return -1;
	}
	for (size_t i = 0; i < nl; i++) {
		if (!token_char((unsigned char)v[i])) {
			snprintf(err, errlen, "--header '%.*s': a header name holds only letters, digits and "
				 "!#$%%&'*+-.^_`|~ (no space before the ':')", shown, v);
			return -1;
		}
	}
	bool own = nl >= 14 && strncasecmp(v, "sec-websocket-", 14) == 0;
	for (size_t i = 0; i < sizeof(own_headers) / sizeof(own_headers[0]) && !own; i++)
		own = strlen(own_headers[i]) == nl && strncasecmp(v, own_headers[i], nl) == 0;
	if (own) {
		snprintf(err, errlen, "--header %.*s: the tunnel writes this header itself%s", shown, v,
			 nl == 13 && strncasecmp(v, "authorization", nl) == 0
				 ? " (from --access-type and its credential)" : "");
		return -1;
	}
	const char *value = colon + 1;
	while (*value == ' ' || *value == '\t')
		value++;
	size_t vl = strlen(value);
	while (vl > 0 && (value[vl - 1] == ' ' || value[vl - 1] == '\t'))
		vl--;
	/* A credential is hidden by its name, or by its scheme. */
	*secret = secret_header(v, nl) || strncasecmp(value, "bearer ", 7) == 0 || strncasecmp(value, "basic ", 6) == 0;
	for (size_t i = 0; i < vl; i++) {
		unsigned char c = (unsigned char)value[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			snprintf(err, errlen, "--header %.*s: its value holds %s at byte %zu: it cannot go into the "
				 "request head", shown, v, c == '\r' || c == '\n' ? "a line break" : "a control character",
				 i + 1);
			return -1;
		}
	}
	if (nl + 2 + vl + 1 > outlen) {
		snprintf(err, errlen, "--header %.*s: longer than %zu bytes", shown, v, outlen - 1);
		return -1;
	}
	snprintf(out, outlen, "%.*s: %.*s", (int)nl, v, (int)vl, value);
	return 0;
}

static int add_header(struct tunnel_config *cfg, const char *v, char *err, size_t errlen)
{
	if (cfg->n_headers >= CONFIG_MAX_HEADERS)
	{
		/* The name only: the value may be a secret. */
		char name[128];
		snprintf(name, sizeof(name), "%.*s", (int)strcspn(v, ":"), v);
		return usage(err, errlen, "more than %s headers (--header %s is one more)", CONFIG_MAX_HEADERS_TEXT, name);
	}
	size_t cap = strlen(v) + 3;
	char *line = calloc(1, cap); /* wiped by length at the end, even if left unused */
	if (line == NULL || config_own(cfg, line) == NULL)
		return usage(err, errlen, "out of memory for --header%s%s", "", "");
	bool secret;
	if (cli_parse_header(v, line, cap, &secret, err, errlen) != 0)
		return CLI_USAGE;
	cfg->header_secret[cfg->n_headers] = secret;
	cfg->headers[cfg->n_headers++] = line;
	return CLI_OK;
}

static int apply(const struct opt *o, const char *v, struct tunnel_config *cfg, char *err, size_t errlen)
{
	if (o->takes_value && v[0] == '\0')
		return usage(err, errlen, "--%s needs a non-empty value%s", o->long_name, "");
	char label[64];
	snprintf(label, sizeof(label), "--%s", o->long_name);
	if (check_value(o->id, v, label, err, errlen) != CLI_OK)
		return CLI_USAGE;
	switch (o->id) {
	case OPT_HOST: cfg->host = v; break;
	case OPT_TLS: cfg->tls = true; break;
	case OPT_LOCAL_HOST: cfg->local_host = v; break;
	case OPT_LOCAL_PORT:
		if (!parse_port(v, 0, &cfg->local_port))
			return usage(err, errlen, "--local-port: '%s' is not a port number (0 to 65535)%s", v, "");
		break;
	case OPT_REMOTE_HOST: cfg->remote_host = v; break;
	case OPT_REMOTE_PORT:
		if (!parse_port(v, 1, &cfg->remote_port))
			return usage(err, errlen, "--remote-port: '%s' is not a port number (1 to 65535)%s", v, "");
		break;
	case OPT_ACCESS_TYPE:
		if (parse_access_type(v, &cfg->access) != 0)
			return usage(err, errlen,
				     "--access-type: '%s' is not an access type (apikey, bearer, jwt, session or public)%s",
				     v, "");
		break;
	case OPT_CLIENT_ID: cfg->apikey_client_id = v; break;
	case OPT_CLIENT_SECRET: cfg->apikey_client_secret = v; break;
	case OPT_BEARER: cfg->bearer_token = v; break;
	case OPT_SESSION: cfg->session_token = v; break;
	case OPT_KEEPALIVE:
		if (!parse_number(v, 0, 86400, &cfg->keepalive))
			return usage(err, errlen, "--keepalive: '%s' is not a number of seconds from 0 (off) to 86400%s",
				     v, "");
		break;
	case OPT_LINGER:
		if (!parse_seconds_ms(v, 3600, &cfg->linger_ms))
			return usage(err, errlen, "--linger: '%s' is not a number of seconds from 0 (Close at once) to 3600, "
				     "such as 2 or 0.5%s", v, "");
		break;
	case OPT_CLIENT_SECRET_FILE:
	case OPT_BEARER_FILE:
	case OPT_SESSION_FILE:
		return apply_secret_file(o, v, cfg, err, errlen);
	case OPT_PROXY: cfg->proxy = v; break;
	case OPT_STDIO: cfg->stdio = true; break;
	case OPT_FORWARD: return add_forward(cfg, v, err, errlen);
	case OPT_HEADER: return add_header(cfg, v, err, errlen);
	case OPT_CONNECT_TO: cfg->connect_to = v; break;
	case OPT_CHECK: cfg->check = true; break;
	case OPT_CHECK_WAIT:
		if (!parse_seconds_ms(v, 60, &cfg->check_wait_ms))
			return usage(err, errlen, "--check-wait: '%s' is not a number of seconds from 0 to 60, such as 2 "
				     "or 0.5%s", v, "");
		break;
	case OPT_PROFILE:
		for (size_t i = 0; i < cfg->n_profiles; i++)
			if (strcmp(cfg->profiles[i], v) == 0)
				return usage(err, errlen, "-p %s is given twice: each profile runs once%s", v, "");
		if (cfg->n_profiles >= CONFIG_MAX_PROFILES)
			return usage(err, errlen, "at most %s profiles run in one process (-p %s is one more)",
				     CONFIG_MAX_PROFILES_TEXT, v);
		cfg->profiles[cfg->n_profiles++] = v;
		if (cfg->profile == NULL)
			cfg->profile = v;
		break;
	case OPT_CONFIG: cfg->config_file = v; break;
	case OPT_LIST_PROFILES: cfg->list_profiles = true; break;
	case OPT_MAX_CONNECTIONS:
		if (!parse_number(v, 1, 1000000, &cfg->max_connections))
			return usage(err, errlen, "--max-connections: '%s' is not a number from 1 to 1000000%s", v, "");
		break;
	case OPT_CA_CERT: cfg->ca_cert = v; break;
	case OPT_CLIENT_CERT: cfg->client_cert = v; break;
	case OPT_CLIENT_KEY: cfg->client_key = v; break;
	case OPT_INSECURE: cfg->insecure = true; break;
	case OPT_TLS_SERVER_NAME: cfg->tls_server_name = v; break;
	case OPT_PROXY_CA_CERT: cfg->proxy_ca_cert = v; break;
	case OPT_PROXY_INSECURE: cfg->proxy_insecure = true; break;
	case OPT_LOG_FORMAT: {
		enum log_format f;
		if (log_format_parse(v, &f) != 0)
			return usage(err, errlen, "--log-format: '%s' is not a log format (human or json)%s", v, "");
		cfg->log_format = v;
		break;
	}
	case OPT_LOG_TIMESTAMPS: cfg->log_timestamps = true; break;
	case OPT_VERBOSE: cfg->verbose = true; break;
	case OPT_HELP: return CLI_HELP;
	}
	return CLI_OK;
}

/* "127.0.0.1:2241", "localhost:2241", "[::1]:2241": an address with a
 * port, where only an address goes (a bare IPv6 address has several
 * colons, a bracketed one nothing after its bracket). */
static bool local_host_has_port(const char *h)
{
	if (h[0] == '[') {
		const char *close = strchr(h, ']');
		return close != NULL && close[1] == ':';
	}
	const char *colon = strchr(h, ':');
	return colon != NULL && strchr(colon + 1, ':') == NULL;
}

/* The checks that need every option: what the access type requires. */
static int check(struct tunnel_config *cfg, char *err, size_t errlen)
{
	if (cfg->host == NULL)
		return usage(err, errlen, "--host is required: the Otoroshi host that serves the tunnel route, "
			     "for example --host otoroshi.example.com:8443%s%s", "", "");
	int rc = url_parse_host(cfg->host, cfg->tls, cfg->gw_name, sizeof(cfg->gw_name), &cfg->gw_port);
	if (rc == URL_ERR_SCHEME) {
		bool secure = strncasecmp(cfg->host, "wss://", 6) == 0 || strncasecmp(cfg->host, "https://", 8) == 0;
		return usage(err, errlen, "--host: '%s': %s", cfg->host,
			     secure && !cfg->tls ? "give HOST[:PORT], without a scheme, and add --tls for wss://"
						 : url_strerror(rc));
	}
	if (rc != URL_OK)
		return usage(err, errlen, "--host: '%s': %s", cfg->host, url_strerror(rc));
	if (cfg->connect_to != NULL) {
		/* curl's meaning: the port stays --host's unless one is given. */
		uint16_t port;
		rc = url_parse_host(cfg->connect_to, cfg->tls, cfg->connect_name, sizeof(cfg->connect_name), &port);
		if (rc != URL_OK)
			return usage(err, errlen, "--connect-to: '%s': %s (give HOST[:PORT], as in --connect-to 10.0.0.7:8443)",
				     cfg->connect_to, url_strerror(rc));
		cfg->connect_port = local_host_has_port(cfg->connect_to) ? port : cfg->gw_port;
	}
	if (local_host_has_port(cfg->local_host))
		return usage(err, errlen, "--local-host: '%s' holds a port: give the address alone, and the port with "
			     "--local-port%s", cfg->local_host, "");
	if (!cfg->tls) {
		const char *tls_only = cfg->ca_cert ? "--ca-cert" : cfg->client_cert ? "--client-cert"
				     : cfg->client_key ? "--client-key" : cfg->insecure ? "--insecure"
				     : cfg->tls_server_name ? "--tls-server-name" : NULL;
		if (tls_only != NULL)
			return usage(err, errlen, "%s only applies with --tls (wss://)%s", tls_only, "");
	}
	if (cfg->insecure && cfg->ca_cert != NULL)
		return usage(err, errlen, "--insecure turns verification off: it cannot go with --ca-cert%s%s", "", "");
	if (cfg->proxy_insecure && cfg->proxy_ca_cert != NULL)
		return usage(err, errlen, "--proxy-insecure turns verification off: it cannot go with --proxy-ca-cert%s%s",
			     "", "");
	switch (cfg->access) {
	case ACCESS_APIKEY:
		if (cfg->apikey_client_id == NULL || cfg->apikey_client_secret == NULL)
			return usage(err, errlen,
				     "--access-type apikey needs both --apikey-client-id and --apikey-client-secret "
				     "(missing %s); use --access-type public for a route without credentials%s",
				     cfg->apikey_client_id == NULL ? "--apikey-client-id" : "--apikey-client-secret", "");
		break;
	case ACCESS_BEARER:
		if (cfg->bearer_token == NULL)
			return usage(err, errlen, "--access-type bearer needs --bearer-token%s%s", "", "");
		break;
	case ACCESS_SESSION:
		if (cfg->session_token == NULL)
			return usage(err, errlen, "--access-type session needs --session-token%s%s", "", "");
		break;
	case ACCESS_PUBLIC:
		break;
	}
	return CLI_OK;
}

/* Where the single forward of the four address options listens and goes. */
#define ADDRESS_BITS ((1UL << OPT_LOCAL_HOST) | (1UL << OPT_LOCAL_PORT) | (1UL << OPT_REMOTE_HOST) | \
		      (1UL << OPT_REMOTE_PORT))

/* What forwards cannot go with. */
static int check_forwards(const struct tunnel_config *cfg, char *err, size_t errlen)
{
	if (cfg->n_forwards == 0)
		return CLI_OK;
	bool flags = (cfg->given >> OPT_FORWARD) & 1;
	const char *from = flags ? "-L/--forward" : "the profile's forward lines";
	unsigned long address = cfg->given & ADDRESS_BITS;
	for (size_t i = 0; i < N_OPTS && address != 0; i++)
		if ((address >> opts[i].id) & 1)
			return usage(err, errlen, "--%s cannot go with %s: each forward names its own address and remote "
				     "([BIND:]PORT[:HOST:HOSTPORT])", opts[i].long_name, from);
	if (cfg->stdio)
		return usage(err, errlen, "--stdio carries one tunnel without a listener: it cannot go with %s%s", from, "");
	return CLI_OK;
}

static int check_check(const struct tunnel_config *cfg, char *err, size_t errlen)
{
	if (cfg->check && cfg->stdio)
		return usage(err, errlen, "--check opens its own tunnels and reads no input: it cannot go with --stdio%s%s",
			     "", "");
	if (!cfg->check && ((cfg->given >> OPT_CHECK_WAIT) & 1))
		return usage(err, errlen, "--check-wait only applies with --check%s%s", "", "");
	return CLI_OK;
}

static void mark(struct tunnel_config *cfg, const struct opt *o)
{
	cfg->given |= 1UL << o->target;
}

static bool is_given(const struct tunnel_config *cfg, const struct opt *o)
{
	return (cfg->given >> o->target) & 1;
}

/* Secrets from the environment keep them out of shell history and ps. */
static int apply_environment(struct tunnel_config *cfg, char *err, size_t errlen)
{
	static const struct { const char *var; enum opt_id id; } vars[] = {
		{"OTOROSHI_APIKEY_CLIENT_ID", OPT_CLIENT_ID},
		{"OTOROSHI_APIKEY_CLIENT_SECRET", OPT_CLIENT_SECRET},
		{"OTOROSHI_BEARER_TOKEN", OPT_BEARER},
		{"OTOROSHI_SESSION_TOKEN", OPT_SESSION},
	};
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const char *v = getenv(vars[i].var);
		if (v == NULL || v[0] == '\0' || ((cfg->given >> vars[i].id) & 1))
			continue;
		if (check_value(vars[i].id, v, vars[i].var, err, errlen) != CLI_OK)
			return CLI_USAGE;
		switch (vars[i].id) {
		case OPT_CLIENT_ID: cfg->apikey_client_id = v; break;
		case OPT_CLIENT_SECRET: cfg->apikey_client_secret = v; break;
		case OPT_BEARER: cfg->bearer_token = v; break;
		default: cfg->session_token = v; break;
		}
		cfg->given |= 1UL << vars[i].id;
	}
	return CLI_OK;
}

struct profile_ctx {
	struct tunnel_config *cfg;
	unsigned long seen; /* settings this profile already set */
	bool has_secret;
};

/* One `key = value` line of the chosen profile. */
static int apply_profile_key(void *user, const char *key, const char *value, char *err, size_t errlen)
{
	struct profile_ctx *p = user;
	const struct opt *o = find_long(key, strlen(key));
	if (o == NULL || !(o->where & IN_PROFILE))
		return usage(err, errlen, "unknown key '%s' (keys are the long option names, such as host or "
			     "remote-port)%s", key, "");
	if (o->id != OPT_FORWARD && o->id != OPT_HEADER && ((p->seen >> o->target) & 1))
		return usage(err, errlen, "'%s' sets what an earlier key of this profile already set%s", key, "");
	if (o->id == OPT_FORWARD ? (p->seen & ADDRESS_BITS) != 0
				 : ((ADDRESS_BITS >> o->target) & 1) && ((p->seen >> OPT_FORWARD) & 1))
		return usage(err, errlen, "'%s' cannot go with %s: each forward line names its own address and "
			     "remote (forward = [BIND:]PORT[:HOST:HOSTPORT])", key,
			     o->id == OPT_FORWARD ? "local-host, local-port, remote-host or remote-port in the same profile"
						  : "the profile's forward lines");
	p->seen |= 1UL << o->target;
	/* A proxy URL is a secret only when it carries credentials. */
	if (o->secret && (o->id != OPT_PROXY || strchr(value, '@') != NULL))
		p->has_secret = true;
	if (o->id == OPT_HEADER) {
		char line[4096];
		bool secret = false;
		if (cli_parse_header(value, line, sizeof(line), &secret, err, errlen) == 0 && secret)
			p->has_secret = true;
	}
	/* A flag or the environment wins over a profile's value; a forward
	 * flag, or any of the four address flags or --stdio, over its forward
	 * lines (and OTOROSHICTL_LOG_FORMAT over its log-format). */
	const char *env_format = getenv("OTOROSHICTL_LOG_FORMAT");
	bool overridden = is_given(p->cfg, o) ||
			  (o->id == OPT_FORWARD && ((p->cfg->given & ADDRESS_BITS) != 0 || p->cfg->stdio)) ||
			  (o->id == OPT_LOG_FORMAT && env_format != NULL && env_format[0] != '\0');
	if (overridden) {
		/* A flag or the environment wins, but a bad value in the file
		 * is still an error: it would bite the day the flag goes. */
		if (!o->takes_value || o->target != o->id)
			return CLI_OK;
		if (o->id == OPT_FORWARD) {
			char tmp[1024];
			struct forward_spec f;
			snprintf(tmp, sizeof(tmp), "%s", value);
			return cli_parse_forward(tmp, &f, err, errlen) == 0 ? CLI_OK : CLI_USAGE;
		}
		if (o->id == OPT_HEADER) {
			char tmp[4096];
			bool secret;
			return cli_parse_header(value, tmp, sizeof(tmp), &secret, err, errlen) == 0 ? CLI_OK : CLI_USAGE;
		}
		struct tunnel_config scratch = *p->cfg;
		return apply(o, value, &scratch, err, errlen) == CLI_OK ? CLI_OK : CLI_USAGE;
	}
	if (!o->takes_value) {
		bool on;
		if (parse_bool(value, &on) != 0)
			return usage(err, errlen, "'%s' takes true or false, not '%s'", key, value);
		if (o->id == OPT_TLS)
			p->cfg->tls = on;
		else if (o->id == OPT_INSECURE)
			p->cfg->insecure = on;
		else if (o->id == OPT_PROXY_INSECURE)
			p->cfg->proxy_insecure = on;
		else if (o->id == OPT_VERBOSE)
			p->cfg->verbose = on;
		else if (o->id == OPT_LOG_TIMESTAMPS)
			p->cfg->log_timestamps = on;
		return CLI_OK;
	}
	char *copy = config_own(p->cfg, strdup(value));
	if (copy == NULL)
		return usage(err, errlen, "too many values in the profile%s%s", "", "");
	return apply(o, copy, p->cfg, err, errlen) == CLI_OK ? CLI_OK : CLI_USAGE;
}

static int apply_profile(struct tunnel_config *cfg, char *err, size_t errlen)
{
	char path[1024];
	config_profile_path(cfg, path, sizeof(path));
	struct profile_ctx p = {.cfg = cfg};
	if (config_load_profile(path, cfg->profile, apply_profile_key, &p, err, errlen) != 0)
		return CLI_USAGE;
	if (p.has_secret)
		config_check_private(path, cfg->warning, sizeof(cfg->warning));
	return CLI_OK;
}

/* Puts the profile's name in front of an error about it. */
static int named_profile(const struct tunnel_config *cfg, char *err, size_t errlen, bool name_it)
{
	if (name_it && cfg->profile != NULL) {
		char was[600];
		snprintf(was, sizeof(was), "%s", err);
		snprintf(err, errlen, "profile '%s': %s", cfg->profile, was);
	}
	return CLI_USAGE;
}

int cli_parse_tcp_tunnel(int argc, char **argv, struct tunnel_config *cfg, char *err, size_t errlen)
{
	err[0] = '\0';
	bool help = false;
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];
		const struct opt *o = NULL;
		const char *value = NULL;
		const char *ignored;
		int skip = cli_skip_reference_global(argc, argv, i, &ignored);
		if (skip < 0)
			return usage(err, errlen, "%s needs a value (it is one of the reference client's global "
				     "options, which tcp-tunnel ignores)%s", arg, "");
		if (skip > 0) {
			if (cfg->n_ignored < sizeof(cfg->ignored) / sizeof(cfg->ignored[0]))
				cfg->ignored[cfg->n_ignored++] = ignored;
			i += skip - 1;
			continue;
		}
		if (strncmp(arg, "--", 2) == 0 && arg[2] != '\0') {
			const char *name = arg + 2;
			const char *eq = strchr(name, '=');
			o = find_long(name, eq ? (size_t)(eq - name) : strlen(name));
			if (o == NULL)
				return usage(err, errlen, "unknown option '%s'; see 'otoroshictl tcp-tunnel --help'%s", arg, "");
			if (eq != NULL && !o->takes_value)
				return usage(err, errlen, "--%s takes no value (got '%s')", o->long_name, eq + 1);
			value = eq ? eq + 1 : NULL;
		} else if (arg[0] == '-' && arg[1] != '\0' && arg[1] != '-') {
			o = find_short(arg[1]);
			if (o == NULL || (arg[2] != '\0' && !o->takes_value))
				return usage(err, errlen, "unknown option '%s'; see 'otoroshictl tcp-tunnel --help'%s", arg, "");
			/* -L5432:db:5432, as ssh takes it. */
			if (arg[2] != '\0')
				value = arg + 2;
		} else {
			return usage(err, errlen, "unexpected argument '%s': every value follows its option, "
				     "as in --host otoroshi.example.com%s", arg, "");
		}
		if (o->takes_value && value == NULL) {
			if (i + 1 >= argc)
				return usage(err, errlen, "--%s needs a value%s", o->long_name, "");
			value = argv[++i];
			if (strncmp(value, "--", 2) == 0 && find_long(value + 2, strcspn(value + 2, "=")) != NULL)
				return usage(err, errlen, "--%s needs a value, not the option '%s'", o->long_name, value);
		}
		int rc = apply(o, value ? value : "", cfg, err, errlen);
		if (rc == CLI_HELP)
			help = true;
		else if (rc != CLI_OK)
			return rc;
		mark(cfg, o);
	}
	if (help)
		return CLI_HELP;
	if (cfg->list_profiles) {
		/* Anything else would be silently ignored. */
		unsigned long others = cfg->given & ~((1UL << OPT_LIST_PROFILES) | (1UL << OPT_CONFIG) | (1UL << OPT_VERBOSE));
		for (size_t i = 0; i < N_OPTS && others != 0; i++)
			if ((others >> opts[i].id) & 1)
				return usage(err, errlen, "--list-profiles goes with --config alone, not with --%s%s",
					     opts[i].long_name, "");
		return CLI_LIST_PROFILES;
	}
	if (cfg->n_profiles > 1) {
		if (cfg->stdio && !cfg->check)
			return usage(err, errlen, "--stdio carries one tunnel: give it one profile, not several (-p %s and "
				     "others)%s", cfg->profiles[1], "");
		if ((cfg->given >> OPT_FORWARD) & 1)
			return usage(err, errlen, "-L/--forward goes with one profile at most: with several, each "
				     "profile's forward lines (or its local-port) say where it listens%s%s", "", "");
		if (cfg->profile_index == 0 || cfg->profile_index > cfg->n_profiles)
			return CLI_PROFILES;
		cfg->profile = cfg->profiles[cfg->profile_index - 1];
	}
	if (apply_environment(cfg, err, errlen) != CLI_OK)
		return CLI_USAGE;
	if (cfg->profile != NULL && apply_profile(cfg, err, errlen) != CLI_OK)
		return named_profile(cfg, err, errlen, cfg->n_profiles > 1);
	if (check(cfg, err, errlen) != CLI_OK || check_forwards(cfg, err, errlen) != CLI_OK ||
	    check_check(cfg, err, errlen) != CLI_OK)
		return named_profile(cfg, err, errlen, cfg->n_profiles > 1);
	return CLI_OK;
}

const char *cli_option(size_t i, char *short_name, bool *takes_value)
{
	if (i >= N_OPTS)
		return NULL;
	*short_name = opts[i].short_name;
	*takes_value = opts[i].takes_value;
	return opts[i].long_name;
}

void cli_print_tcp_tunnel_help(FILE *out)
{
	fputs("Expose a remote TCP service locally through an Otoroshi TCP tunnel\n"
	      "\n"
	      "Usage: otoroshictl tcp-tunnel [OPTIONS] --host <HOST>\n"
	      "       otoroshictl tcp-tunnel [OPTIONS] --host <HOST> -L <FORWARD> [-L <FORWARD>]...\n"
	      "       otoroshictl tcp-tunnel [OPTIONS] -p <NAME> [-p <NAME>]...\n"
	      "\n"
	      "Options:\n"
	      "      --host <HOST>\n"
	      "          The Otoroshi host (and port) serving the tunnel route, e.g. myotoroshi.example.com:9999\n"
	      "      --tls\n"
	      "          Use TLS (wss://) to reach Otoroshi\n"
	      "      --local-host <LOCAL_HOST>\n"
	      "          The local address to listen on [default: 127.0.0.1]\n"
	      "      --local-port <LOCAL_PORT>\n"
	      "          The local port to listen on (0 picks a free one) [default: 2222]\n"
	      "  -L, --forward <[BIND:]PORT[:HOST:HOSTPORT]>\n"
	      "          Listen on BIND:PORT and reach HOST:HOSTPORT (as --remote-host/--remote-port do);\n"
	      "          repeatable: one listener each, in one process (instead of the four options here)\n"
	      "      --remote-host <REMOTE_HOST>\n"
	      "          The remote host to reach, when the route's target uses ${req.query.remoteHost}\n"
	      "      --remote-port <REMOTE_PORT>\n"
	      "          The remote port to reach, when the route's target uses ${req.query.remotePort}\n"
	      "      --access-type <ACCESS_TYPE>\n"
	      "          How to authenticate: apikey, bearer (alias jwt), session or public [default: apikey]\n"
	      "      --apikey-client-id <CLIENT_ID>\n"
	      "          The API key's client id (with --access-type apikey)\n"
	      "      --apikey-client-secret <CLIENT_SECRET>\n"
	      "          The API key's client secret (with --access-type apikey)\n"
	      "      --bearer-token <TOKEN>\n"
	      "          The token sent as 'Authorization: Bearer' (with --access-type bearer)\n"
	      "      --session-token <TOKEN>\n"
	      "          The private app session token (with --access-type session)\n"
	      "      --stdio\n"
	      "          No listener: one tunnel over standard input and output (for ssh's ProxyCommand)\n"
	      "  -p, --profile <NAME>\n"
	      "          Take the options of this profile of the profile file (flags win over it);\n"
	      "          repeatable: each profile's forwards run in one process\n"
	      "      --config <FILE>\n"
	      "          The profile file [default: $XDG_CONFIG_HOME/otoroshictl/tunnels.ini]\n"
	      "      --list-profiles\n"
	      "          Print each profile's name, host and remote, then exit\n"
	      "      --apikey-client-secret-file <FILE>, --bearer-token-file <FILE>, --session-token-file <FILE>\n"
	      "          Read the secret from the first line of a file\n",
	      out);
	fputs("      --check\n"
	      "          Do not listen: check each forward step by step (DNS, TCP, proxy, TLS, upgrade,\n"
	      "          target), print the checklist, exit 0 when every step passed\n"
	      "      --check-wait <SECONDS>\n"
	      "          With --check: how long to wait for the target's answer [default: 2]\n"
	      "      --connect-to <HOST[:PORT]>\n"
	      "          Connect to this address instead, keeping --host as the Host header and TLS name\n"
	      "  -H, --header <'NAME: VALUE'>\n"
	      "          An extra header for the upgrade request (repeatable)\n"
	      "      --proxy <URL>\n"
	      "          Reach Otoroshi through this HTTP proxy (http:// or https://[user:password@]host:port)\n"
	      "      --proxy-ca-cert <FILE>\n"
	      "          PEM bundle of the CAs to trust for an https:// proxy, instead of the system store\n"
	      "      --proxy-insecure\n"
	      "          Do not verify an https:// proxy's certificate (unsafe)\n"
	      "      --keepalive <SECONDS>\n"
	      "          Ping an idle tunnel's gateway at this interval, which keeps quiet tunnels open through\n"
	      "          Otoroshi's idle timeout; no sign of life within two intervals ends the tunnel\n"
	      "          (0 turns it off) [default: 30]\n"
	      "      --linger <SECONDS>\n"
	      "          After the local client ends its input, keep delivering the reply until Otoroshi has\n"
	      "          sent nothing for this long, then Close (0: Close at once) [default: 2]\n"
	      "      --max-connections <N>\n"
	      "          Tunnels open at once; connections beyond are refused at once [default: 1024]\n"
	      "      --ca-cert <FILE>\n"
	      "          PEM bundle of the CAs to trust for the gateway, instead of the system store\n"
	      "      --client-cert <FILE>\n"
	      "          Client certificate (PEM) for gateways that demand mutual TLS\n"
	      "      --client-key <FILE>\n"
	      "          Private key (PEM, unencrypted) of --client-cert\n"
	      "      --tls-server-name <NAME>\n"
	      "          The name to send as SNI and to verify, instead of the --host name\n"
	      "      --insecure\n"
	      "          Do not verify the gateway's certificate (unsafe: anyone on the path can read the credential)\n"
	      "      --log-format <FORMAT>\n"
	      "          How log lines look: human, or json (one JSON object a line, for log collectors)\n"
	      "          [default: human]\n"
	      "      --log-timestamps\n"
	      "          Show the time (UTC) at the start of each human log line\n"
	      "  -v, --verbose\n"
	      "          Turn debugging information on\n"
	      "  -h, --help\n"
	      "          Print help\n"
	      "\n",
	      out);
	/* In two pieces: C compilers need not take longer strings. */
	fputs("Environment:\n"
	      "  OTOROSHICTL   log level: error, warn, info (default), debug or trace\n"
	      "  OTOROSHICTL_LOG_STYLE   colours: auto (default: on a terminal), always or never\n"
	      "  OTOROSHICTL_LOG_FORMAT  human (default) or json, as --log-format (the flag wins)\n"
	      "  NO_COLOR      set to turn colours off (wins over OTOROSHICTL_LOG_STYLE)\n"
	      "  SSL_CERT_FILE, SSL_CERT_DIR   the trust store for --tls without --ca-cert\n"
	      "  OTOROSHI_APIKEY_CLIENT_ID, OTOROSHI_APIKEY_CLIENT_SECRET, OTOROSHI_BEARER_TOKEN,\n"
	      "  OTOROSHI_SESSION_TOKEN        credentials (a flag wins over them, they win over a profile)\n"
	      "  HTTPS_PROXY, HTTP_PROXY, NO_PROXY   the proxy to use, as curl reads them\n"
	      "\n"
	      "See otoroshictl-tcp-tunnel(1) for examples.\n",
	      out);
}

void cli_print_main_help(FILE *out)
{
	fputs("Reach private TCP services through an Otoroshi API gateway\n"
	      "\n"
	      "Usage: otoroshictl [OPTIONS] <COMMAND>\n"
	      "\n"
	      "Commands:\n"
	      "  tcp-tunnel   Expose a remote TCP service locally through an Otoroshi TCP tunnel [aliases: tt]\n"
	      "  completions  Print a shell completion script (bash, zsh or fish)\n"
	      "  help         Print this message or the help of the given subcommand(s)\n"
	      "\n"
	      "Options:\n"
	      "  -v, --verbose  Turn debugging information on\n"
	      "  -h, --help     Print help\n"
	      "  -V, --version  Print version\n",
	      out);
}

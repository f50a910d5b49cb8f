/* cli: the command line of `otoroshictl` and its `tcp-tunnel` command, with
 * the reference client's options and defaults. Pure parsing: it prints
 * nothing and opens nothing, so that every usage error is tested alone.
 *
 * Ownership: the strings stored in struct tunnel_config point into argv,
 * the environment, or memory the config owns (config_finish frees it). */
#ifndef OTOROSHICTL_CLI_H
#define OTOROSHICTL_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "config.h"

enum cli_result {
	CLI_OK = 0,
	CLI_HELP = 1,   /* -h/--help was given: print the help, exit 0 */
	CLI_LIST_PROFILES = 2, /* --list-profiles was given */
	/* -p was given several times: parse again once per profile, with
	 * cfg->profile_index set from 1 to cfg->n_profiles. */
	CLI_PROFILES = 3,
	CLI_USAGE = -1, /* a usage error: print err, exit 2 */
};

#define CLI_EXIT_USAGE 2

/* Fills cfg with the defaults of the reference client. */
void cli_defaults(struct tunnel_config *cfg);

/* Parses the arguments that follow `tcp-tunnel` (argv[0] is the first
 * option) into cfg, completes them from the environment's secrets and the
 * chosen profile (a flag wins over the environment, which wins over the
 * profile), then checks that they make a usable tunnel. On CLI_USAGE, err
 * holds one line naming the flag, or the file, line and key, at fault.
 * cfg->warning may hold a warning to show. Call config_finish after. */
int cli_parse_tcp_tunnel(int argc, char **argv, struct tunnel_config *cfg, char *err, size_t errlen);

/* When argv[i] is one of the reference client's global options (which
 * tcp-tunnel ignores), returns how many arguments it takes up (1 or 2, the
 * value included) and sets *name to its long name; returns 0 for any other
 * argument, and -1 when its value is missing. */
int cli_skip_reference_global(int argc, char **argv, int i, const char **name);

/* Parses a forward, ssh's -L syntax: [BIND:]PORT[:HOST:HOSTPORT], with
 * IPv6 addresses in brackets. s is cut in place (the strings of *out point
 * into it; brackets are kept around BIND, which the listener reads, and
 * taken off HOST, which goes into the query string). Returns 0, or -1 with
 * err saying what is wrong. */
int cli_parse_forward(char *s, struct forward_spec *out, char *err, size_t errlen);

/* Checks a --header value, 'Name: value': a token for a name, none of the
 * headers the tunnel writes itself (Host, Connection, Upgrade,
 * Sec-WebSocket-*, Authorization, Content-Length, Transfer-Encoding), no
 * control character in the value. Writes "Name: value" (the value's
 * surrounding blanks dropped) into out; *secret tells whether the name
 * suggests a secret (token, secret, key, cookie, auth, pass, session,
 * bearer, jwt, credential, signature) or the value starts with Bearer or
 * Basic: such a value is never logged. Returns 0, or -1 with err. */
int cli_parse_header(const char *v, char *out, size_t outlen, bool *secret, char *err, size_t errlen);

void cli_print_tcp_tunnel_help(FILE *out);
/* The i-th option of tcp-tunnel (NULL past the last): its long name, its
 * short letter (0 when none), and whether it takes a value. */
const char *cli_option(size_t i, char *short_name, bool *takes_value);
void cli_print_main_help(FILE *out);

#endif

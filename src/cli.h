/* cli: the command line of `otoroshictl` and its `tcp-tunnel` command, with
 * the reference client's options and defaults. Pure parsing: it prints
 * nothing and opens nothing, so that every usage error is tested alone.
 *
 * Ownership: the strings stored in struct tunnel_config point into argv. */
#ifndef OTOROSHICTL_CLI_H
#define OTOROSHICTL_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "config.h"

enum cli_result {
	CLI_OK = 0,
	CLI_HELP = 1,   /* -h/--help was given: print the help, exit 0 */
	CLI_USAGE = -1, /* a usage error: print err, exit 2 */
};

#define CLI_EXIT_USAGE 2

/* Fills cfg with the defaults of the reference client. */
void cli_defaults(struct tunnel_config *cfg);

/* Parses the arguments that follow `tcp-tunnel` (argv[0] is the first
 * option) into cfg, then checks that they make a usable tunnel. On
 * CLI_USAGE, err holds one line naming the flag at fault. */
int cli_parse_tcp_tunnel(int argc, char **argv, struct tunnel_config *cfg, char *err, size_t errlen);

void cli_print_tcp_tunnel_help(FILE *out);
void cli_print_main_help(FILE *out);

#endif

/* Fuzz target: --host parsing, URL building and the option parser. The
 * input is split at NUL bytes into arguments for `tcp-tunnel`. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "upgrade.h"
#include "url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';

	char name[256];
	uint16_t port;
	url_parse_host(copy, size & 1, name, sizeof(name), &port);
	char enc[64];
	size_t need = url_percent_encode(enc, sizeof(enc), copy);
	if (need < strlen(copy))
		__builtin_trap();

	char *argv[64];
	int argc = 0;
	for (char *p = copy; p < copy + size + 1 && argc < 64; p += strlen(p) + 1)
		argv[argc++] = p;
	struct tunnel_config cfg;
	char err[512];
	cli_defaults(&cfg);
	if (cli_parse_tcp_tunnel(argc, argv, &cfg, err, sizeof(err)) == CLI_OK) {
		char target[2048];
		url_build_target(target, sizeof(target), &cfg, true);
		/* A redacted URL must end with the placeholder, not the token. */
		const char *papps = strstr(target, "&pappsToken=");
		if (papps != NULL && strcmp(papps, "&pappsToken=<redacted>") != 0)
			__builtin_trap();
		char head[8192];
		upgrade_build_request(head, sizeof(head), &cfg, "dGhlIHNhbXBsZSBub25jZQ==");
	}
	config_finish(&cfg);
	free(copy);
	return 0;
}

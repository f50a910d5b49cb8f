/* Fuzz target: the INI profile loader, through the option parser, on a
 * file holding the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	if (path[0] == '\0') {
		snprintf(path, sizeof(path), "/tmp/otoroshictl-fuzz-ini-%d.ini", (int)getpid());
		/* The option parser reads the environment too: keep it out. */
		unsetenv("OTOROSHI_APIKEY_CLIENT_ID");
		unsetenv("OTOROSHI_APIKEY_CLIENT_SECRET");
		unsetenv("OTOROSHI_BEARER_TOKEN");
		unsetenv("OTOROSHI_SESSION_TOKEN");
	}
	FILE *f = fopen(path, "wb");
	if (f == NULL)
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	static const char *const names[] = {"db", "x", ""};
	for (size_t i = 0; i < 3; i++) {
		char *argv[] = {"--config", path, "--profile", (char *)names[i]};
		struct tunnel_config cfg;
		char err[512];
		cli_defaults(&cfg);
		cli_parse_tcp_tunnel(4, argv, &cfg, err, sizeof(err));
		config_finish(&cfg);
	}
	char *argv[] = {"--config", path, "--list-profiles"};
	struct tunnel_config cfg;
	char err[512];
	cli_defaults(&cfg);
	if (cli_parse_tcp_tunnel(3, argv, &cfg, err, sizeof(err)) == CLI_LIST_PROFILES) {
		FILE *null = fopen("/dev/null", "w");
		if (null != NULL) {
			config_list_profiles(path, null, err, sizeof(err));
			fclose(null);
		}
	}
	config_finish(&cfg);
	return 0;
}

/* main: `otoroshictl`'s entry point: global options, the subcommands, and
 * the exit status. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "buf.h"
#include "cli.h"
#include "completions.h"
#include "listener.h"
#include "log.h"
#include "proxy.h"
#include "rng.h"
#include "tls.h"
#include "version.h"

/* Every tunnel takes two descriptors: start with all the system allows,
 * which for root is the kernel's per-process ceiling (fs.nr_open). */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	rlim_t was = rl.rlim_cur;
	rlim_t want = rl.rlim_max;
	if (geteuid() == 0) {
		FILE *f = fopen("/proc/sys/fs/nr_open", "r");
		unsigned long long nr_open = 0;
		if (f != NULL) {
			if (fscanf(f, "%llu", &nr_open) != 1)
				nr_open = 0;
			fclose(f);
		}
		if (nr_open > want)
			want = (rlim_t)nr_open;
	}
	if (want <= was)
		return;
	struct rlimit raised = {want, want > rl.rlim_max ? want : rl.rlim_max};
	if (setrlimit(RLIMIT_NOFILE, &raised) != 0) {
		raised.rlim_cur = raised.rlim_max = rl.rlim_max;
		if (rl.rlim_max <= was || setrlimit(RLIMIT_NOFILE, &raised) != 0)
			return;
	}
	log_debug("raised the open file limit from %llu to %llu", (unsigned long long)was,
		  (unsigned long long)raised.rlim_cur);
}

/* A shell can start us with standard input, output or error closed (<&-,
 * >&-, 2>&-). The descriptors 0 to 2 are then the next ones handed out,
 * and the loop's own would land there, where libuv refuses to close them
 * and log lines would go into them. Each closed one is opened on
 * /dev/null; the bits returned say which were closed. */
static unsigned reopen_closed_std(void)
{
	unsigned closed = 0;
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		/* The lowest free descriptor is this one. */
		int got = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
		if (got >= 0 && got != fd)
			close(got);
		closed |= 1u << fd;
	}
	return closed;
}

/* The reference client's global options, given before the command. */
struct ignored {
	const char *names[16];
	size_t n;
};

static void say_ignored(const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		log_debug("ignoring --%s: one of the reference client's global options, which tcp-tunnel does not use",
			  names[i]);
}

static int run_tcp_tunnel(int argc, char **argv, bool verbose, const struct ignored *before, unsigned std_closed)
{
	struct tunnel_config cfg;
	char err[512];
	cli_defaults(&cfg);
	cfg.std_closed = std_closed;
	int rc = cli_parse_tcp_tunnel(argc, argv, &cfg, err, sizeof(err));
	if (rc == CLI_HELP) {
		cli_print_tcp_tunnel_help(stdout);
		config_finish(&cfg);
		return 0;
	}
	if (rc == CLI_LIST_PROFILES) {
		char path[1024];
		config_profile_path(&cfg, path, sizeof(path));
		rc = config_list_profiles(path, stdout, err, sizeof(err));
		config_finish(&cfg);
		if (rc != 0) {
			fprintf(stderr, "error: %s\n", err);
			return CLI_EXIT_USAGE;
		}
		return 0;
	}
	if (rc != CLI_OK) {
		fprintf(stderr, "error: %s\n", err);
		config_finish(&cfg);
		return CLI_EXIT_USAGE;
	}
	/* As a ProxyCommand the tunnel shares the terminal with ssh: it
	 * speaks only when something goes wrong. */
	if (cfg.stdio)
		log_default(LOG_WARN);
	if (verbose || cfg.verbose)
		log_raise(LOG_DEBUG);
	say_ignored(before->names, before->n);
	say_ignored(cfg.ignored, cfg.n_ignored);
	if (cfg.warning[0] != '\0')
		log_warn("%s", cfg.warning);
	raise_fd_limit();
	if (rng_init() != 0) {
		log_error("cannot seed the random generator from the system's entropy");
		config_finish(&cfg);
		return 1;
	}
	int status = CLI_EXIT_USAGE;
	struct tls_setup *tls = NULL, *proxy_tls = NULL;
	struct proxy proxy = {.source = "--proxy"};
	if (cfg.tls) {
		struct tls_options o;
		tls_options_gateway(&o, &cfg);
		if ((tls = tls_setup_create(&o, err, sizeof(err))) == NULL)
			goto usage;
		if (cfg.insecure)
			log_warn("--insecure: the gateway's certificate is not verified; anyone on the path can "
				 "pose as the gateway and take your credential");
	}
	const char *proxy_url = cfg.proxy;
	if (proxy_url == NULL) {
		proxy_url = proxy_from_env(cfg.tls, &proxy.source);
		const char *no_proxy = getenv("no_proxy");
		if (no_proxy == NULL || no_proxy[0] == '\0')
			no_proxy = getenv("NO_PROXY");
		if (proxy_url != NULL && proxy_exempt(no_proxy, cfg.gw_name, cfg.gw_port)) {
			log_debug("NO_PROXY covers %s: not using %s", cfg.host, proxy.source);
			proxy_url = NULL;
		}
	}
	if (proxy_url != NULL && proxy_parse_url(proxy_url, &proxy, err, sizeof(err)) != 0)
		goto usage;
	if ((cfg.proxy_ca_cert != NULL || cfg.proxy_insecure) && (proxy_url == NULL || !proxy.tls)) {
		snprintf(err, sizeof(err), "%s only applies with an https:// proxy (--proxy, HTTPS_PROXY or HTTP_PROXY)%s",
			 cfg.proxy_ca_cert ? "--proxy-ca-cert" : "--proxy-insecure",
			 proxy_url != NULL ? "; the proxy in use is http://" : "; no proxy is in use");
		goto usage;
	}
	if (proxy_url != NULL && proxy.tls) {
		struct tls_options o = {
			.ca_cert = cfg.proxy_ca_cert,
			.ca_flag = "--proxy-ca-cert",
			.insecure = cfg.proxy_insecure,
			.proxy = true,
		};
		if ((proxy_tls = tls_setup_create(&o, err, sizeof(err))) == NULL)
			goto usage;
		if (cfg.proxy_insecure)
			log_warn("--proxy-insecure: the proxy's certificate is not verified; anyone on the path can pose "
				 "as the proxy and read its credential");
	}
	status = listener_run(&cfg, proxy_url != NULL ? &proxy : NULL, tls, proxy_tls);
	goto out;
usage:
	fprintf(stderr, "error: %s\n", err);
out:
	bufq_pool_drain();
	proxy_finish(&proxy);
	tls_setup_destroy(proxy_tls);
	tls_setup_destroy(tls);
	rng_finish();
	config_finish(&cfg);
	return status;
}

static bool is_tcp_tunnel(const char *cmd)
{
	return strcmp(cmd, "tcp-tunnel") == 0 || strcmp(cmd, "tt") == 0;
}

int main(int argc, char **argv)
{
	unsigned std_closed = reopen_closed_std();
	bool verbose = false;
	int bad_env = log_init();
	log_stream_setup();
	struct ignored before = {.n = 0};
	int i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		const char *name;
		int skip = cli_skip_reference_global(argc, argv, i, &name);
		if (skip < 0) {
			fprintf(stderr, "error: %s needs a value\n", a);
			return CLI_EXIT_USAGE;
		}
		if (skip > 0) {
			if (before.n < sizeof(before.names) / sizeof(before.names[0]))
				before.names[before.n++] = name;
			i += skip - 1;
			continue;
		}
		if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
			verbose = true;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			cli_print_main_help(stdout);
			return 0;
		} else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
			printf("otoroshictl %s\n", OTOROSHICTL_VERSION);
			return 0;
		} else {
			break;
		}
	}
	if (bad_env & LOG_INIT_BAD_LEVEL)
		log_warn("OTOROSHICTL holds an unknown log level (use error, warn, info, debug or trace): using info");
	if (bad_env & LOG_INIT_BAD_STYLE)
		log_warn("OTOROSHICTL_LOG_STYLE holds an unknown style (use auto, always or never): using auto");
	if (i >= argc) {
		cli_print_main_help(stderr);
		return CLI_EXIT_USAGE;
	}
	const char *cmd = argv[i];
	if (is_tcp_tunnel(cmd))
		return run_tcp_tunnel(argc - i - 1, argv + i + 1, verbose, &before, std_closed);
	if (strcmp(cmd, "completions") == 0) {
		if (i + 2 < argc) {
			fprintf(stderr, "error: completions takes one shell, not '%s' after it (as in 'otoroshictl "
					"completions bash')\n", argv[i + 2]);
			return CLI_EXIT_USAGE;
		}
		if (i + 1 >= argc || completions_print(argv[i + 1], stdout) != 0) {
			fprintf(stderr, "error: completions needs a shell: bash, zsh or fish (as in "
					"'otoroshictl completions bash')\n");
			return CLI_EXIT_USAGE;
		}
		return 0;
	}
	if (strcmp(cmd, "help") == 0) {
		if (i + 1 < argc && is_tcp_tunnel(argv[i + 1]))
			cli_print_tcp_tunnel_help(stdout);
		else if (i + 1 < argc) {
			fprintf(stderr, "error: unknown command '%s'; see 'otoroshictl help'\n", argv[i + 1]);
			return CLI_EXIT_USAGE;
		} else
			cli_print_main_help(stdout);
		return 0;
	}
	if (cmd[0] == '-')
		fprintf(stderr, "error: unknown option '%s'; see 'otoroshictl --help'\n", cmd);
	else
		fprintf(stderr, "error: unknown command '%s'; see 'otoroshictl --help'\n", cmd);
	return CLI_EXIT_USAGE;
}

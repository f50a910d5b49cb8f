/* main: `otoroshictl`'s entry point: global options, the subcommands, and
 * the exit status. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <mbedtls/version.h>
#include <uv.h>
#include <wslay/wslayver.h>

#include "buf.h"
#include "check.h"
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

/* The variables log_init could not read (LOG_INIT_BAD_* bits). */
static void say_bad_env(int bad_env)
{
	if (bad_env & LOG_INIT_BAD_LEVEL)
		log_warn("OTOROSHICTL holds an unknown log level (use error, warn, info, debug or trace): using info");
	if (bad_env & LOG_INIT_BAD_STYLE)
		log_warn("OTOROSHICTL_LOG_STYLE holds an unknown style (use auto, always or never): using auto");
	if (bad_env & LOG_INIT_BAD_FORMAT)
		log_warn("OTOROSHICTL_LOG_FORMAT holds an unknown format (use human or json): ignored");
}

/* One config of the run (the command line, or one profile of several) and
 * what is built from it. */
struct source {
	struct tunnel_config cfg;
	struct proxy proxy;
	bool has_proxy;
	struct tls_setup *tls, *proxy_tls;
	bool shares_tls; /* tls is an earlier source's */
};

/* Two sources reach the same gateway the same way: one TLS setup serves
 * both, and its session cache lets each resume the other's sessions. */
static bool same_gateway_tls(const struct tunnel_config *a, const struct tunnel_config *b)
{
#define SAME_STR(f) ((a->f == NULL) == (b->f == NULL) && (a->f == NULL || strcmp(a->f, b->f) == 0))
	return a->tls && b->tls && a->gw_port == b->gw_port && strcmp(a->gw_name, b->gw_name) == 0 &&
	       a->insecure == b->insecure && SAME_STR(ca_cert) && SAME_STR(client_cert) && SAME_STR(client_key) &&
	       SAME_STR(tls_server_name);
#undef SAME_STR
}

/* The TLS setups and the proxy of srcs[i]; -1 with err on a usage error. */
static int build_source(struct source *srcs, size_t i, char *err, size_t errlen)
{
	struct source *s = &srcs[i];
	const struct tunnel_config *cfg = &s->cfg;
	s->proxy.source = "--proxy";
	if (cfg->tls) {
		for (size_t k = 0; k < i && s->tls == NULL; k++) {
			if (same_gateway_tls(&srcs[k].cfg, cfg)) {
				s->tls = srcs[k].tls;
				s->shares_tls = true;
			}
		}
		if (s->tls == NULL) {
			struct tls_options o;
			tls_options_gateway(&o, cfg);
			if ((s->tls = tls_setup_create(&o, err, errlen)) == NULL)
				return -1;
			if (cfg->insecure)
				log_warn("--insecure: the gateway's certificate is not verified; anyone on the path can "
					 "pose as the gateway and take your credential");
		}
	}
	const char *proxy_url = cfg->proxy;
	if (proxy_url == NULL) {
		proxy_url = proxy_from_env(cfg->tls, &s->proxy.source);
		const char *no_proxy = getenv("no_proxy");
		if (no_proxy == NULL || no_proxy[0] == '\0')
			no_proxy = getenv("NO_PROXY");
		if (proxy_url != NULL && proxy_exempt(no_proxy, cfg->gw_name, cfg->gw_port)) {
			log_debug("NO_PROXY covers %s: not using %s", cfg->host, s->proxy.source);
			proxy_url = NULL;
		}
	}
	if (proxy_url != NULL && proxy_parse_url(proxy_url, &s->proxy, err, errlen) != 0)
		return -1;
	s->has_proxy = proxy_url != NULL;
	if ((cfg->proxy_ca_cert != NULL || cfg->proxy_insecure) && (proxy_url == NULL || !s->proxy.tls)) {
		snprintf(err, errlen, "%s only applies with an https:// proxy (--proxy, HTTPS_PROXY or HTTP_PROXY)%s",
			 cfg->proxy_ca_cert ? "--proxy-ca-cert" : "--proxy-insecure",
			 proxy_url != NULL ? "; the proxy in use is http://" : "; no proxy is in use");
		return -1;
	}
	if (proxy_url != NULL && s->proxy.tls) {
		struct tls_options o = {
			.ca_cert = cfg->proxy_ca_cert,
			.ca_flag = "--proxy-ca-cert",
			.insecure = cfg->proxy_insecure,
			.proxy = true,
		};
		if ((s->proxy_tls = tls_setup_create(&o, err, errlen)) == NULL)
			return -1;
		if (cfg->proxy_insecure)
			log_warn("--proxy-insecure: the proxy's certificate is not verified; anyone on the path can pose "
				 "as the proxy and read its credential");
	}
	return 0;
}

static void free_sources(struct source *srcs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		proxy_finish(&srcs[i].proxy);
		tls_setup_destroy(srcs[i].proxy_tls);
		if (!srcs[i].shares_tls)
			tls_setup_destroy(srcs[i].tls);
		config_finish(&srcs[i].cfg);
	}
	free(srcs);
}

/* Parses the command line into one config, or one per profile when -p is
 * given several times. Returns true with *out and *n set, or false with
 * the exit status to end with (after the help, the profile list, a usage
 * error). */
static bool parse_sources(int argc, char **argv, unsigned std_closed, struct source **out, size_t *n, int *status)
{
	char err[512];
	struct source *srcs = calloc(1, sizeof(*srcs));
	if (srcs == NULL) {
		fprintf(stderr, "error: out of memory\n");
		*status = 1;
		return false;
	}
	cli_defaults(&srcs[0].cfg);
	srcs[0].cfg.std_closed = std_closed;
	int rc = cli_parse_tcp_tunnel(argc, argv, &srcs[0].cfg, err, sizeof(err));
	if (rc == CLI_PROFILES) {
		/* The same command line, once for each profile. */
		struct source *first = srcs;
		size_t count = first->cfg.n_profiles;
		if ((srcs = calloc(count, sizeof(*srcs))) == NULL) {
			fprintf(stderr, "error: out of memory\n");
			free_sources(first, 1);
			*status = 1;
			return false;
		}
		for (size_t k = 0; k < count; k++) {
			cli_defaults(&srcs[k].cfg);
			srcs[k].cfg.std_closed = std_closed;
			srcs[k].cfg.profile_index = k + 1;
			srcs[k].cfg.base = &first->cfg;
			rc = cli_parse_tcp_tunnel(argc, argv, &srcs[k].cfg, err, sizeof(err));
			srcs[k].cfg.base = NULL;
			if (rc != CLI_OK) {
				fprintf(stderr, "error: %s\n", err);
				free_sources(srcs, k + 1);
				free_sources(first, 1);
				*status = CLI_EXIT_USAGE;
				return false;
			}
		}
		free_sources(first, 1);
		*out = srcs;
		*n = count;
		return true;
	}
	if (rc == CLI_HELP) {
		cli_print_tcp_tunnel_help(stdout);
		free_sources(srcs, 1);
		*status = 0;
		return false;
	}
	if (rc == CLI_LIST_PROFILES) {
		char path[1024];
		config_profile_path(&srcs[0].cfg, path, sizeof(path));
		rc = config_list_profiles(path, stdout, err, sizeof(err));
		free_sources(srcs, 1);
		if (rc != 0) {
			fprintf(stderr, "error: %s\n", err);
			*status = CLI_EXIT_USAGE;
			return false;
		}
		*status = 0;
		return false;
	}
	if (rc != CLI_OK) {
		fprintf(stderr, "error: %s\n", err);
		free_sources(srcs, 1);
		*status = CLI_EXIT_USAGE;
		return false;
	}
	*out = srcs;
	*n = 1;
	return true;
}

/* --log-format and --log-timestamps, before the run's first line: the
 * first config that sets a format decides (the flag wins over
 * OTOROSHICTL_LOG_FORMAT, which log_init read). */
static void apply_log_options(const struct source *srcs, size_t n)
{
	enum log_format f;
	for (size_t i = 0; i < n; i++) {
		if (srcs[i].cfg.log_format != NULL && log_format_parse(srcs[i].cfg.log_format, &f) == 0) {
			log_set_format(f);
			break;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (srcs[i].cfg.log_timestamps)
			log_set_timestamps(true);
}

static int run_tcp_tunnel(int argc, char **argv, bool verbose, const struct ignored *before, unsigned std_closed,
			  int bad_env)
{
	struct source *srcs = NULL;
	size_t n = 0;
	int status = 0;
	if (!parse_sources(argc, argv, std_closed, &srcs, &n, &status)) {
		say_bad_env(bad_env);
		return status;
	}
	apply_log_options(srcs, n);
	say_bad_env(bad_env);
	/* As a ProxyCommand the tunnel shares the terminal with ssh: it
	 * speaks only when something goes wrong. */
	if (srcs[0].cfg.stdio)
		log_default(LOG_WARN);
	/* --check puts every step, and the failing one's message, on stdout. */
	if (srcs[0].cfg.check)
		log_default(LOG_OFF);
	bool any_verbose = verbose;
	for (size_t i = 0; i < n; i++)
		any_verbose = any_verbose || srcs[i].cfg.verbose;
	if (any_verbose)
		log_raise(LOG_DEBUG);
	say_ignored(before->names, before->n);
	say_ignored(srcs[0].cfg.ignored, srcs[0].cfg.n_ignored);
	for (size_t i = 0; i < n; i++)
		if (srcs[i].cfg.warning[0] != '\0' && (i == 0 || strcmp(srcs[i].cfg.warning, srcs[0].cfg.warning) != 0))
			log_warn("%s", srcs[i].cfg.warning);
	raise_fd_limit();
	if (rng_init() != 0) {
		log_error("cannot seed the random generator from the system's entropy");
		free_sources(srcs, n);
		return 1;
	}
	status = CLI_EXIT_USAGE;
	char err[512];
	struct listener_source *ls = calloc(n, sizeof(*ls));
	if (ls == NULL) {
		log_error("out of memory");
		status = 1;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (build_source(srcs, i, err, sizeof(err)) != 0) {
			if (n > 1)
				fprintf(stderr, "error: profile '%s': %s\n", srcs[i].cfg.profile, err);
			else
				fprintf(stderr, "error: %s\n", err);
			goto out;
		}
		ls[i] = (struct listener_source){&srcs[i].cfg, srcs[i].has_proxy ? &srcs[i].proxy : NULL, srcs[i].tls,
						 srcs[i].proxy_tls};
	}
	status = srcs[0].cfg.check ? check_run(ls, n, log_get_format() == LOG_FORMAT_JSON, stdout) : listener_run(ls, n);
out:
	free(ls);
	bufq_pool_drain();
	free_sources(srcs, n);
	rng_finish();
	return status;
}

static bool is_tcp_tunnel(const char *cmd)
{
	return strcmp(cmd, "tcp-tunnel") == 0 || strcmp(cmd, "tt") == 0;
}

/* The version, and those of the libraries it runs with: mbedTLS's and
 * libuv's as loaded, wslay's as its headers say (it has no other). */
static void print_version(void)
{
	char tls[32] = MBEDTLS_VERSION_STRING;
#ifdef MBEDTLS_VERSION_C
	mbedtls_version_get_string(tls);
#endif
	printf("otoroshictl %s\n", OTOROSHICTL_VERSION);
	printf("libuv %s, wslay %s, mbedTLS %s", uv_version_string(), WSLAY_VERSION, tls);
	if (strcmp(tls, MBEDTLS_VERSION_STRING) != 0)
		printf(" (built with %s)", MBEDTLS_VERSION_STRING);
	printf("\n");
}

int main(int argc, char **argv)
{
	unsigned std_closed = reopen_closed_std();
	/* SIGUSR1 asks a running tunnel for a report (listener.c): one sent
	 * while it starts (loading a trust store, binding) must not end it. */
	signal(SIGUSR1, SIG_IGN);
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
			print_version();
			return 0;
		} else {
			break;
		}
	}
	/* For tcp-tunnel, once its --log-format is known. */
	if (i >= argc || !is_tcp_tunnel(argv[i]))
		say_bad_env(bad_env);
	if (i >= argc) {
		cli_print_main_help(stderr);
		return CLI_EXIT_USAGE;
	}
	const char *cmd = argv[i];
	if (is_tcp_tunnel(cmd))
		return run_tcp_tunnel(argc - i - 1, argv + i + 1, verbose, &before, std_closed, bad_env);
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

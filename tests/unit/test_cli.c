/* Unit tests for cli.h: the tcp-tunnel command line. Every option in both
 * spellings, the defaults of the reference client, and every usage error,
 * which must come back as CLI_USAGE with one line naming the flag. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MAX_ARGS 48

/* Parses a NULL-terminated list of arguments into cfg, after the
 * defaults. argv is copied so that the strings outlive the call, as argv
 * does in main. */
struct parsed {
	char *argv[MAX_ARGS];
	int argc;
	struct tunnel_config cfg;
	char err[512];
	int rc;
};

static char *argbuf[MAX_ARGS];

static void parse_list(struct parsed *p, const char *const *args)
{
	memset(p, 0, sizeof(*p));
	for (p->argc = 0; args[p->argc] != NULL; p->argc++) {
		assert_true(p->argc < MAX_ARGS);
		free(argbuf[p->argc]);
		argbuf[p->argc] = strdup(args[p->argc]);
		p->argv[p->argc] = argbuf[p->argc];
	}
	cli_defaults(&p->cfg);
	memset(p->err, 'Z', sizeof(p->err) - 1);
	p->err[sizeof(p->err) - 1] = '\0';
	p->rc = cli_parse_tcp_tunnel(p->argc, p->argv, &p->cfg, p->err, sizeof(p->err));
}

#define PARSE(p, ...) parse_list((p), (const char *const[]){__VA_ARGS__, NULL})

static int free_args(void **state)
{
	(void)state;
	for (size_t i = 0; i < MAX_ARGS; i++) {
		free(argbuf[i]);
		argbuf[i] = NULL;
	}
	return 0;
}

/* A usage error: CLI_USAGE, and one line that names `flag`. */
static void expect_usage(const struct parsed *p, const char *flag)
{
	if (p->rc != CLI_USAGE)
		fail_msg("expected CLI_USAGE naming %s, got %d (err '%s')", flag, p->rc, p->err);
	assert_true(strlen(p->err) > 0);
	assert_null(strchr(p->err, '\n'));
	if (strstr(p->err, flag) == NULL)
		fail_msg("error '%s' does not name %s", p->err, flag);
}

static void expect_ok(const struct parsed *p)
{
	if (p->rc != CLI_OK)
		fail_msg("expected CLI_OK, got %d (err '%s')", p->rc, p->err);
}

static void test_defaults(void **state)
{
	(void)state;
	struct tunnel_config cfg;
	memset(&cfg, 0x5a, sizeof(cfg));
	cli_defaults(&cfg);
	assert_string_equal(cfg.local_host, "127.0.0.1");
	assert_int_equal(cfg.local_port, 2222);
	assert_int_equal(cfg.access, ACCESS_APIKEY);
	assert_null(cfg.host);
	assert_null(cfg.remote_host);
	assert_int_equal(cfg.remote_port, 0);
	assert_false(cfg.tls);
	assert_false(cfg.verbose);
	assert_null(cfg.apikey_client_id);
	assert_null(cfg.apikey_client_secret);
	assert_null(cfg.bearer_token);
	assert_null(cfg.session_token);
	assert_int_equal(cfg.keepalive, 30);
	assert_int_equal(cfg.linger_ms, 2000);
}

static void test_linger(void **state)
{
	(void)state;
	static const struct {
		const char *value;
		unsigned ms;
	} good[] = {{"0", 0}, {"2", 2000}, {"0.5", 500}, {"1.25", 1250}, {"0.001", 1}, {"3600", 3600000}};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct parsed p;
		PARSE(&p, "--host", "h", "--access-type", "public", "--linger", good[i].value);
		expect_ok(&p);
		assert_int_equal(p.cfg.linger_ms, good[i].ms);
	}
	static const char *const bad[] = {"-1", "3600.5", "3601", "1.", ".5", "1.2345", "2s", "1e3", "1,5", " 1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct parsed p;
		PARSE(&p, "--host", "h", "--access-type", "public", "--linger", bad[i]);
		expect_usage(&p, "--linger");
	}
}

/* The reference client's global options are taken anywhere and ignored,
 * with or without their values, in each of clap's spellings. */
static void test_reference_global_options_are_ignored(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "-o", "json", "--host", "h", "--access-type", "public", "--ouput=yaml", "-ojson", "-c",
	      "/etc/oto.yaml", "--config-file", "x", "--otoroshi-cluster-tls", "--otoroshi-cluster-hostname",
	      "api.oto.tools", "--otoroshi-cluster-port=8443", "--otoroshi-cluster-routing-tls",
	      "--otoroshi-cluster-routing-hostname", "r", "--otoroshi-cluster-routing-port", "9",
	      "--otoroshi-user-client-id", "id", "--otoroshi-user-client-secret", "s", "--otoroshi-user-health-key",
	      "k", "--otoroshi-cluster-cert-location", "c.pem", "--otoroshi-cluster-key-location", "k.pem",
	      "--otoroshi-cluster-ca-location", "ca.pem", "--remote-port", "22");
	expect_ok(&p);
	assert_string_equal(p.cfg.host, "h");
	assert_int_equal(p.cfg.remote_port, 22);
	assert_int_equal(p.cfg.n_ignored, 17);
	assert_string_equal(p.cfg.ignored[0], "ouput");
	assert_string_equal(p.cfg.ignored[16], "otoroshi-cluster-ca-location");
	/* The flags among them take no value: what follows is an option again. */
	PARSE(&p, "--otoroshi-cluster-tls", "--host", "h", "--access-type", "public");
	expect_ok(&p);
	assert_string_equal(p.cfg.host, "h");
	/* A value left out is a usage error naming the option. */
	PARSE(&p, "--host", "h", "--access-type", "public", "--otoroshi-cluster-hostname");
	expect_usage(&p, "--otoroshi-cluster-hostname");
	PARSE(&p, "--host", "h", "--access-type", "public", "--otoroshi-cluster-tls=yes");
	assert_int_equal(p.rc, CLI_USAGE);
	/* A name that only starts like one is not one. */
	PARSE(&p, "--host", "h", "--access-type", "public", "--otoroshi-cluster-hostnames", "x");
	expect_usage(&p, "--otoroshi-cluster-hostnames");
}

static void test_minimal_apikey(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "--host", "gw.example.com", "--apikey-client-id", "id", "--apikey-client-secret", "sec");
	expect_ok(&p);
	assert_string_equal(p.cfg.host, "gw.example.com");
	assert_string_equal(p.cfg.gw_name, "gw.example.com");
	assert_int_equal(p.cfg.gw_port, 80);
	assert_false(p.cfg.tls);
	assert_string_equal(p.cfg.local_host, "127.0.0.1");
	assert_int_equal(p.cfg.local_port, 2222);
	assert_int_equal(p.cfg.access, ACCESS_APIKEY);
	assert_string_equal(p.cfg.apikey_client_id, "id");
	assert_string_equal(p.cfg.apikey_client_secret, "sec");
	assert_null(p.cfg.remote_host);
	assert_int_equal(p.cfg.remote_port, 0);
	assert_false(p.cfg.verbose);
	/* The strings point into argv, as the header says. */
	assert_ptr_equal(p.cfg.host, p.argv[1]);
}

/* Every option with a value, as `--opt value` and as `--opt=value`. */
static void test_every_option_both_forms(void **state)
{
	(void)state;
	for (int form = 0; form < 2; form++) {
		static const char *const names[] = {"host", "local-host", "local-port", "remote-host",
						    "remote-port", "access-type", "bearer-token"};
		static const char *const values[] = {"[::1]:8443", "0.0.0.0", "0", "db.internal",
						     "5432", "bearer", "tok=en"};
		const char *args[MAX_ARGS];
		char joined[7][64];
		int n = 0;
		for (int i = 0; i < 7; i++) {
			if (form == 0) {
				snprintf(joined[i], sizeof(joined[i]), "--%s", names[i]);
				args[n++] = joined[i];
				args[n++] = values[i];
			} else {
				snprintf(joined[i], sizeof(joined[i]), "--%s=%s", names[i], values[i]);
				args[n++] = joined[i];
			}
		}
		args[n++] = "--tls";
		args[n++] = form == 0 ? "-v" : "--verbose";
		args[n] = NULL;
		struct parsed p;
		parse_list(&p, args);
		expect_ok(&p);
		assert_string_equal(p.cfg.host, "[::1]:8443");
		assert_string_equal(p.cfg.gw_name, "::1");
		assert_int_equal(p.cfg.gw_port, 8443);
		assert_true(p.cfg.tls);
		assert_string_equal(p.cfg.local_host, "0.0.0.0");
		assert_int_equal(p.cfg.local_port, 0);
		assert_string_equal(p.cfg.remote_host, "db.internal");
		assert_int_equal(p.cfg.remote_port, 5432);
		assert_int_equal(p.cfg.access, ACCESS_BEARER);
		/* Only the first '=' splits name from value. */
		assert_string_equal(p.cfg.bearer_token, "tok=en");
		assert_true(p.cfg.verbose);
	}

	struct parsed p;
	PARSE(&p, "--host=gw", "--apikey-client-id=the-id", "--apikey-client-secret=the-secret");
	expect_ok(&p);
	assert_string_equal(p.cfg.apikey_client_id, "the-id");
	assert_string_equal(p.cfg.apikey_client_secret, "the-secret");

	PARSE(&p, "--host", "gw", "--access-type", "session", "--session-token", "s3ss");
	expect_ok(&p);
	assert_int_equal(p.cfg.access, ACCESS_SESSION);
	assert_string_equal(p.cfg.session_token, "s3ss");

	PARSE(&p, "--host=gw", "--access-type=session", "--session-token=s=1");
	expect_ok(&p);
	assert_string_equal(p.cfg.session_token, "s=1");

	PARSE(&p, "--host", "gw", "--access-type", "public");
	expect_ok(&p);
	assert_int_equal(p.cfg.access, ACCESS_PUBLIC);
}

static void test_tls_default_port(void **state)
{
	(void)state;
	struct parsed p;
	/* --tls changes the default port whether it comes before or after --host. */
	PARSE(&p, "--host", "gw", "--tls", "--access-type", "public");
	expect_ok(&p);
	assert_int_equal(p.cfg.gw_port, 443);
	PARSE(&p, "--tls", "--host", "gw", "--access-type", "public");
	expect_ok(&p);
	assert_int_equal(p.cfg.gw_port, 443);
	PARSE(&p, "--tls", "--host", "gw:8443", "--access-type", "public");
	expect_ok(&p);
	assert_int_equal(p.cfg.gw_port, 8443);
	assert_string_equal(p.cfg.host, "gw:8443");
}

static void test_access_type_aliases(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "--host", "gw", "--access-type", "jwt", "--bearer-token", "t");
	expect_ok(&p);
	assert_int_equal(p.cfg.access, ACCESS_BEARER);
	PARSE(&p, "--host", "gw", "--access-type", "bearer", "--bearer-token", "t");
	expect_ok(&p);
	assert_int_equal(p.cfg.access, ACCESS_BEARER);
	PARSE(&p, "--host", "gw", "--access-type", "apikey", "--apikey-client-id", "i",
	      "--apikey-client-secret", "s");
	expect_ok(&p);
	assert_int_equal(p.cfg.access, ACCESS_APIKEY);
}

static void test_port_bounds(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "--host", "gw", "--access-type", "public", "--local-port", "65535", "--remote-port", "1");
	expect_ok(&p);
	assert_int_equal(p.cfg.local_port, 65535);
	assert_int_equal(p.cfg.remote_port, 1);
	PARSE(&p, "--host", "gw", "--access-type", "public", "--remote-port", "65535");
	expect_ok(&p);
	assert_int_equal(p.cfg.remote_port, 65535);
}

static void test_help(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "-h");
	assert_int_equal(p.rc, CLI_HELP);
	PARSE(&p, "--help");
	assert_int_equal(p.rc, CLI_HELP);
	/* Help wins over the checks that need every option. */
	PARSE(&p, "--access-type", "bearer", "--help");
	assert_int_equal(p.rc, CLI_HELP);
	PARSE(&p, "--help", "--host", "gw");
	assert_int_equal(p.rc, CLI_HELP);
}

static void test_verbose(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "-v", "--host", "gw", "--access-type", "public");
	expect_ok(&p);
	assert_true(p.cfg.verbose);
	PARSE(&p, "--host", "gw", "--access-type", "public");
	expect_ok(&p);
	assert_false(p.cfg.verbose);
}

static void test_usage_unknown_and_stray(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "--host", "gw", "--access-type", "public", "--frobnicate");
	expect_usage(&p, "--frobnicate");
	PARSE(&p, "--host", "gw", "--access-type", "public", "--frobnicate=1");
	expect_usage(&p, "--frobnicate");
	PARSE(&p, "--host", "gw", "--access-type", "public", "-x");
	expect_usage(&p, "-x");
	PARSE(&p, "--host", "gw", "--access-type", "public", "stray");
	expect_usage(&p, "stray");
	PARSE(&p, "stray", "--host", "gw", "--access-type", "public");
	expect_usage(&p, "stray");
	/* A prefix of an option is not the option. */
	PARSE(&p, "--ho", "gw", "--access-type", "public");
	expect_usage(&p, "--ho");
	PARSE(&p, "--hostx", "gw", "--access-type", "public");
	expect_usage(&p, "--hostx");
}

static void test_usage_missing_or_empty_value(void **state)
{
	(void)state;
	static const char *const with_value[] = {
		"--host", "--local-host", "--local-port", "--remote-host", "--remote-port", "--access-type",
		"--apikey-client-id", "--apikey-client-secret", "--bearer-token", "--session-token",
	};
	for (size_t i = 0; i < sizeof(with_value) / sizeof(with_value[0]); i++) {
		struct parsed p;
		PARSE(&p, "--access-type", "public", "--host", "gw", with_value[i]);
		expect_usage(&p, with_value[i]);

		PARSE(&p, "--access-type", "public", "--host", "gw", with_value[i], "");
		expect_usage(&p, with_value[i]);

		char eq[64];
		snprintf(eq, sizeof(eq), "%s=", with_value[i]);
		PARSE(&p, "--access-type", "public", "--host", "gw", eq);
		expect_usage(&p, with_value[i]);
	}
}

static void test_usage_ports(void **state)
{
	(void)state;
	static const char *const bad_local[] = {"abc", "65536", "-1", "99999", "123456", "22x", " 22", "+22"};
	for (size_t i = 0; i < sizeof(bad_local) / sizeof(bad_local[0]); i++) {
		struct parsed p;
		PARSE(&p, "--host", "gw", "--access-type", "public", "--local-port", bad_local[i]);
		expect_usage(&p, "--local-port");
		char eq[64];
		snprintf(eq, sizeof(eq), "--local-port=%s", bad_local[i]);
		PARSE(&p, "--host", "gw", "--access-type", "public", eq);
		expect_usage(&p, "--local-port");
	}
	static const char *const bad_remote[] = {"0", "65536", "-1", "ssh", "00000"};
	for (size_t i = 0; i < sizeof(bad_remote) / sizeof(bad_remote[0]); i++) {
		struct parsed p;
		PARSE(&p, "--host", "gw", "--access-type", "public", "--remote-port", bad_remote[i]);
		expect_usage(&p, "--remote-port");
	}
}

static void test_usage_host(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "--access-type", "public");
	expect_usage(&p, "--host");
	parse_list(&p, (const char *const[]){NULL});
	expect_usage(&p, "--host");
	static const char *const bad[] = {"gw:0", "gw:65536", "gw:", "[::1", "[::1]x", "gw/x", "a b", ":80"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		PARSE(&p, "--access-type", "public", "--host", bad[i]);
		expect_usage(&p, "--host");
	}
}

static void test_usage_access(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "--host", "gw", "--access-type", "oauth");
	expect_usage(&p, "--access-type");
	assert_non_null(strstr(p.err, "oauth"));

	PARSE(&p, "--host", "gw");
	expect_usage(&p, "--apikey-client-id");
	PARSE(&p, "--host", "gw", "--apikey-client-secret", "s");
	expect_usage(&p, "(missing --apikey-client-id)");
	PARSE(&p, "--host", "gw", "--apikey-client-id", "i");
	expect_usage(&p, "(missing --apikey-client-secret)");
	PARSE(&p, "--host", "gw", "--access-type", "apikey", "--apikey-client-id", "i");
	expect_usage(&p, "--apikey-client-secret");

	PARSE(&p, "--host", "gw", "--access-type", "bearer");
	expect_usage(&p, "--bearer-token");
	PARSE(&p, "--host", "gw", "--access-type", "jwt", "--session-token", "s");
	expect_usage(&p, "--bearer-token");

	PARSE(&p, "--host", "gw", "--access-type", "session");
	expect_usage(&p, "--session-token");
	PARSE(&p, "--host", "gw", "--access-type", "session", "--bearer-token", "t");
	expect_usage(&p, "--session-token");
}

static void test_usage_flag_with_value(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "--host", "gw", "--access-type", "public", "--tls=x");
	expect_usage(&p, "--tls");
	PARSE(&p, "--host", "gw", "--access-type", "public", "--verbose=1");
	expect_usage(&p, "--verbose");
	PARSE(&p, "--host", "gw", "--access-type", "public", "--help=yes");
	expect_usage(&p, "--help");
}

/* The error line fits any buffer: cut, still NUL-terminated. */
static void test_usage_small_err_buffer(void **state)
{
	(void)state;
	char arg[] = "--frobnicate";
	char *argv[] = {arg};
	struct tunnel_config cfg;
	cli_defaults(&cfg);
	char err[8];
	memset(err, 'Z', sizeof(err));
	assert_int_equal(cli_parse_tcp_tunnel(1, argv, &cfg, err, sizeof(err)), CLI_USAGE);
	assert_true(memchr(err, '\0', sizeof(err)) != NULL);
}

static char *capture(void (*print)(FILE *))
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	assert_non_null(f);
	print(f);
	assert_int_equal(fclose(f), 0);
	assert_non_null(text);
	return text;
}

static void test_log_options(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "--host", "gw", "--access-type", "public");
	expect_ok(&p);
	assert_null(p.cfg.log_format);
	assert_false(p.cfg.log_timestamps);
	PARSE(&p, "--host", "gw", "--access-type", "public", "--log-format", "json", "--log-timestamps");
	expect_ok(&p);
	assert_string_equal(p.cfg.log_format, "json");
	assert_true(p.cfg.log_timestamps);
	PARSE(&p, "--host", "gw", "--access-type", "public", "--log-format=Human");
	expect_ok(&p);
	assert_string_equal(p.cfg.log_format, "Human");
	PARSE(&p, "--host", "gw", "--access-type", "public", "--log-format", "xml");
	expect_usage(&p, "--log-format");
	assert_non_null(strstr(p.err, "human or json"));
	PARSE(&p, "--host", "gw", "--access-type", "public", "--log-format");
	expect_usage(&p, "--log-format");
	PARSE(&p, "--host", "gw", "--access-type", "public", "--log-timestamps=yes");
	expect_usage(&p, "--log-timestamps");
}

/* ssh's -L syntax, cut in place. */
static void expect_forward(const char *spec, const char *bind, unsigned port, const char *host, unsigned hostport)
{
	char buf[128], err[256];
	snprintf(buf, sizeof(buf), "%s", spec);
	struct forward_spec f;
	if (cli_parse_forward(buf, &f, err, sizeof(err)) != 0)
		fail_msg("'%s': %s", spec, err);
	assert_string_equal(f.local_host, bind);
	assert_int_equal(f.local_port, port);
	if (host == NULL)
		assert_null(f.remote_host);
	else
		assert_string_equal(f.remote_host, host);
	assert_int_equal(f.remote_port, hostport);
}

static void expect_bad_forward(const char *spec, const char *why)
{
	char buf[128], err[256];
	snprintf(buf, sizeof(buf), "%s", spec);
	struct forward_spec f;
	assert_int_equal(cli_parse_forward(buf, &f, err, sizeof(err)), -1);
	if (strstr(err, why) == NULL || strncmp(err, "-L '", 4) != 0 || strstr(err, spec) == NULL)
		fail_msg("'%s': error '%s' does not say '%s'", spec, err, why);
}

static void test_forward_syntax(void **state)
{
	(void)state;
	expect_forward("5432", "127.0.0.1", 5432, NULL, 0);
	expect_forward("0", "127.0.0.1", 0, NULL, 0);
	expect_forward("0.0.0.0:5432", "0.0.0.0", 5432, NULL, 0);
	expect_forward("15432:db.internal:5432", "127.0.0.1", 15432, "db.internal", 5432);
	expect_forward("127.0.0.2:15432:db:5432", "127.0.0.2", 15432, "db", 5432);
	/* IPv6: the listener reads the brackets, the query gets the address. */
	expect_forward("[::1]:15432:db:5432", "[::1]", 15432, "db", 5432);
	expect_forward("[::1]:15432", "[::1]", 15432, NULL, 0);
	expect_forward("15432:[fd00::5]:5432", "127.0.0.1", 15432, "fd00::5", 5432);
	expect_forward("localhost:65535:h:1", "localhost", 65535, "h", 1);

	expect_bad_forward("", "is not a port number to listen on");
	expect_bad_forward("x", "'x' is not a port number to listen on");
	expect_bad_forward("65536", "'65536' is not a port number");
	expect_bad_forward("-1", "'-1' is not a port number");
	expect_bad_forward("5432:db", "'db' is not a port number to listen on");
	expect_bad_forward("1:2:3:4:5", "more than four parts");
	expect_bad_forward("::1:5432:db:5432", "more than four parts");
	expect_bad_forward("5432:db:0", "'0' is not a remote port");
	expect_bad_forward("5432:db:x", "'x' is not a remote port");
	expect_bad_forward("5432::5432", "'' is not a remote host");
	expect_bad_forward(":5432", "'' is not an address to listen on");
	expect_bad_forward("[::1:5432", "unbalanced brackets");
	expect_bad_forward("]::1[:5432", "unbalanced brackets");
	expect_bad_forward("[[::1]]:5432", "unbalanced brackets");
	expect_bad_forward("a[b]:5432", "is not an address to listen on");
	expect_bad_forward("5432:[db:5432", "unbalanced brackets");
	expect_bad_forward("5432:d\rb:5432", "a line break");
}

static void test_forwards(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "--host", "gw", "--access-type", "public", "-L", "15432:db:5432", "--forward=0",
	      "--forward", "[::1]:0:cache:6379");
	expect_ok(&p);
	assert_int_equal(p.cfg.n_forwards, 3);
	assert_string_equal(p.cfg.forwards[0].spec, "15432:db:5432");
	assert_string_equal(p.cfg.forwards[0].remote_host, "db");
	assert_int_equal(p.cfg.forwards[0].remote_port, 5432);
	assert_string_equal(p.cfg.forwards[1].spec, "0");
	assert_null(p.cfg.forwards[1].remote_host);
	assert_string_equal(p.cfg.forwards[2].local_host, "[::1]");
	config_finish(&p.cfg);

	static const char *const address[] = {"--local-host", "--local-port", "--remote-host", "--remote-port"};
	static const char *const values[] = {"::1", "7", "db", "9"};
	for (int i = 0; i < 4; i++) {
		PARSE(&p, "--host", "gw", "--access-type", "public", address[i], values[i], "-L", "1");
		expect_usage(&p, address[i]);
		assert_non_null(strstr(p.err, "-L/--forward"));
		config_finish(&p.cfg);
	}
	PARSE(&p, "--host", "gw", "--access-type", "public", "-L", "1", "--stdio");
	expect_usage(&p, "--stdio");
	config_finish(&p.cfg);
	PARSE(&p, "--host", "gw", "--access-type", "public", "-L", "1:db");
	expect_usage(&p, "-L '1:db'");
	config_finish(&p.cfg);

	/* 32 forwards, not 33. */
	const char *args[MAX_ARGS];
	int n = 0;
	args[n++] = "--host";
	args[n++] = "gw";
	args[n++] = "--access-type";
	args[n++] = "public";
	for (int i = 0; i < 33 && n < MAX_ARGS - 1; i++)
		args[n++] = i % 2 ? "-L0" : "--forward=0";
	args[n] = NULL;
	parse_list(&p, args);
	expect_usage(&p, "more than 32 forwards");
	config_finish(&p.cfg);
}

static void test_headers(void **state)
{
	(void)state;
	char out[64], err[256];
	bool secret;
	assert_int_equal(cli_parse_header("X-Team:   data  ", out, sizeof(out), &secret, err, sizeof(err)), 0);
	assert_string_equal(out, "X-Team: data");
	assert_false(secret);
	assert_int_equal(cli_parse_header("x-api-KEY:k", out, sizeof(out), &secret, err, sizeof(err)), 0);
	assert_string_equal(out, "x-api-KEY: k");
	assert_true(secret);
	assert_int_equal(cli_parse_header("Cookie: a=b", out, sizeof(out), &secret, err, sizeof(err)), 0);
	assert_true(secret);
	assert_int_equal(cli_parse_header("X-Empty:", out, sizeof(out), &secret, err, sizeof(err)), 0);
	assert_string_equal(out, "X-Empty: ");
	static const char *const own[] = {"Host: x", "CONNECTION: x", "upgrade: x", "Sec-WebSocket-Key: x",
					  "Sec-Websocket-Extensions: x", "Authorization: x", "Content-Length: 1",
					  "Transfer-Encoding: x"};
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++) {
		assert_int_equal(cli_parse_header(own[i], out, sizeof(out), &secret, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "writes this header itself"));
	}
	/* Names that merely start like one of them are the user's. */
	assert_int_equal(cli_parse_header("Hosts: x", out, sizeof(out), &secret, err, sizeof(err)), 0);
	assert_int_equal(cli_parse_header("Sec-WebSocket: x", out, sizeof(out), &secret, err, sizeof(err)), 0);
	assert_int_equal(cli_parse_header("X: a\rb", out, sizeof(out), &secret, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "a line break at byte 2"));
	assert_int_equal(cli_parse_header("X: a\x7f", out, sizeof(out), &secret, err, sizeof(err)), -1);
	assert_int_equal(cli_parse_header("X Y: a", out, sizeof(out), &secret, err, sizeof(err)), -1);
	assert_int_equal(cli_parse_header("X(: a", out, sizeof(out), &secret, err, sizeof(err)), -1);
	assert_int_equal(cli_parse_header("novalue", out, sizeof(out), &secret, err, sizeof(err)), -1);
	assert_int_equal(cli_parse_header(":v", out, sizeof(out), &secret, err, sizeof(err)), -1);
	char small[8];
	assert_int_equal(cli_parse_header("X-Long: 123456", small, sizeof(small), &secret, err, sizeof(err)), -1);

	struct parsed p;
	PARSE(&p, "--host", "gw", "--access-type", "public", "-H", "A: 1", "--header=B:2", "-HC: 3");
	expect_ok(&p);
	assert_int_equal(p.cfg.n_headers, 3);
	assert_string_equal(p.cfg.headers[2], "C: 3");
	config_finish(&p.cfg);
	PARSE(&p, "--host", "gw", "--access-type", "public", "--connect-to", "10.0.0.7:8443");
	expect_ok(&p);
	assert_string_equal(p.cfg.connect_name, "10.0.0.7");
	assert_int_equal(p.cfg.connect_port, 8443);
	PARSE(&p, "--host", "gw:9000", "--access-type", "public", "--connect-to", "[::1]");
	expect_ok(&p);
	assert_string_equal(p.cfg.connect_name, "::1");
	assert_int_equal(p.cfg.connect_port, 9000);
	PARSE(&p, "--host", "gw", "--access-type", "public", "--connect-to", "::1");
	expect_usage(&p, "--connect-to");
}

static void test_check_options(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "--host", "gw", "--access-type", "public", "--check");
	expect_ok(&p);
	assert_true(p.cfg.check);
	assert_int_equal(p.cfg.check_wait_ms, 2000);
	PARSE(&p, "--host", "gw", "--access-type", "public", "--check", "--check-wait=0.25");
	expect_ok(&p);
	assert_int_equal(p.cfg.check_wait_ms, 250);
	PARSE(&p, "--host", "gw", "--access-type", "public", "--check-wait", "1");
	expect_usage(&p, "--check-wait only applies with --check");
	PARSE(&p, "--host", "gw", "--access-type", "public", "--check", "--check-wait", "60.5");
	expect_usage(&p, "--check-wait");
	PARSE(&p, "--host", "gw", "--access-type", "public", "--check", "--stdio");
	expect_usage(&p, "--stdio");
}

static void test_several_profiles(void **state)
{
	(void)state;
	struct parsed p;
	PARSE(&p, "--host", "gw", "-p", "a", "--access-type", "public", "--profile", "b", "-p", "c");
	assert_int_equal(p.rc, CLI_PROFILES);
	assert_int_equal(p.cfg.n_profiles, 3);
	assert_string_equal(p.cfg.profiles[2], "c");
	PARSE(&p, "-p", "a", "-p", "a");
	expect_usage(&p, "-p a is given twice");
	PARSE(&p, "-p", "a", "-p", "b", "--stdio");
	expect_usage(&p, "--stdio");
	PARSE(&p, "-p", "a", "-p", "b", "-L", "1");
	expect_usage(&p, "-L/--forward");
	config_finish(&p.cfg);
}

static void test_help_text(void **state)
{
	(void)state;
	char *text = capture(cli_print_tcp_tunnel_help);
	static const char *const wanted[] = {
		"--host", "--tls", "--local-host", "--local-port", "--remote-host", "--remote-port",
		"--access-type", "--apikey-client-id", "--apikey-client-secret", "--bearer-token",
		"--session-token", "-v, --verbose", "-h, --help",
		"[default: 127.0.0.1]", "[default: 2222]", "[default: apikey]",
		"apikey", "bearer", "jwt", "session", "public", "OTOROSHICTL", "OTOROSHICTL_LOG_STYLE",
		"--linger", "[default: 2]", "--keepalive", "[default: 30]",
		"--log-format <FORMAT>", "[default: human]", "--log-timestamps", "OTOROSHICTL_LOG_FORMAT",
	};
	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
		if (strstr(text, wanted[i]) == NULL)
			fail_msg("the tcp-tunnel help does not mention '%s'", wanted[i]);
	free(text);

	text = capture(cli_print_main_help);
	assert_non_null(strstr(text, "tcp-tunnel"));
	assert_non_null(strstr(text, "--help"));
	assert_non_null(strstr(text, "--version"));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_forward_syntax),
		cmocka_unit_test(test_forwards),
		cmocka_unit_test(test_several_profiles),
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_check_options),
		cmocka_unit_test(test_linger),
		cmocka_unit_test(test_reference_global_options_are_ignored),
		cmocka_unit_test(test_minimal_apikey),
		cmocka_unit_test(test_every_option_both_forms),
		cmocka_unit_test(test_tls_default_port),
		cmocka_unit_test(test_access_type_aliases),
		cmocka_unit_test(test_port_bounds),
		cmocka_unit_test(test_help),
		cmocka_unit_test(test_verbose),
		cmocka_unit_test(test_usage_unknown_and_stray),
		cmocka_unit_test(test_usage_missing_or_empty_value),
		cmocka_unit_test(test_usage_ports),
		cmocka_unit_test(test_usage_host),
		cmocka_unit_test(test_usage_access),
		cmocka_unit_test(test_usage_flag_with_value),
		cmocka_unit_test(test_usage_small_err_buffer),
		cmocka_unit_test(test_log_options),
		cmocka_unit_test(test_help_text),
	};
	return cmocka_run_group_tests_name("cli", tests, NULL, free_args);
}

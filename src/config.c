/* config: profiles (INI, read with inih), secret files and owned strings;
 * see config.h. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <ini.h>

char *config_own(struct tunnel_config *cfg, char *s)
{
	if (s == NULL)
		return NULL;
	if (cfg->n_owned >= sizeof(cfg->owned) / sizeof(cfg->owned[0])) {
		free(s);
		return NULL;
	}
	cfg->owned[cfg->n_owned++] = s;
	return s;
}

void config_finish(struct tunnel_config *cfg)
{
	for (size_t i = 0; i < cfg->n_owned; i++) {
		/* Some of these are secrets: leave nothing behind. */
		memset(cfg->owned[i], 0, strlen(cfg->owned[i]));
		free(cfg->owned[i]);
	}
	cfg->n_owned = 0;
}

void config_profile_path(const struct tunnel_config *cfg, char *out, size_t outlen)
{
	if (cfg->config_file != NULL) {
		snprintf(out, outlen, "%s", cfg->config_file);
		return;
	}
	const char *xdg = getenv("XDG_CONFIG_HOME");
	if (xdg != NULL && xdg[0] == '/') {
		snprintf(out, outlen, "%s/otoroshictl/tunnels.ini", xdg);
		return;
	}
	const char *home = getenv("HOME");
	snprintf(out, outlen, "%s/.config/otoroshictl/tunnels.ini", home ? home : "");
}

static int open_error(const char *path, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s: cannot read the profile file: %s", path, strerror(errno));
	return -1;
}

struct load_ctx {
	const char *name;
	config_apply_fn apply;
	void *apply_ctx;
	bool found;
	bool failed;
	char why[400];
	/* Section names seen, for "no such profile" messages. */
	char seen[300];
	char last_section[128];
};

static void note_section(struct load_ctx *c, const char *section)
{
	if (strcmp(c->last_section, section) == 0)
		return;
	snprintf(c->last_section, sizeof(c->last_section), "%s", section);
	size_t used = strlen(c->seen);
	if (used + strlen(section) + 3 < sizeof(c->seen))
		snprintf(c->seen + used, sizeof(c->seen) - used, "%s%s", used ? ", " : "", section);
}

static int on_key(void *user, const char *section, const char *key, const char *value)
{
	struct load_ctx *c = user;
	note_section(c, section);
	if (c->failed || strcmp(section, c->name) != 0)
		return 1;
	c->found = true;
	if (c->apply(c->apply_ctx, key, value, c->why, sizeof(c->why)) != 0) {
		c->failed = true;
		return 0; /* inih reports this line */
	}
	return 1;
}

int config_load_profile(const char *path, const char *name, config_apply_fn apply, void *ctx, char *err,
			size_t errlen)
{
	struct load_ctx c = {.name = name, .apply = apply, .apply_ctx = ctx};
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return open_error(path, err, errlen);
	int line = ini_parse_file(f, on_key, &c);
	fclose(f);
	if (c.failed) {
		snprintf(err, errlen, "%s:%d: %s", path, line, c.why);
		return -1;
	}
	if (line != 0) {
		snprintf(err, errlen, "%s:%d: not an INI line (expected [profile] or key = value)", path, line);
		return -1;
	}
	if (!c.found) {
		snprintf(err, errlen, "%s: no profile '%s' (profiles there: %s)", path, name,
			 c.seen[0] ? c.seen : "none");
		return -1;
	}
	return 0;
}

struct list_ctx {
	FILE *out;
	char section[128];
	char host[256];
	char remote_host[256];
	char remote_port[16];
	bool any;
};

static void list_flush(struct list_ctx *c)
{
	if (c->section[0] == '\0')
		return;
	if (c->remote_host[0] == '\0' && c->remote_port[0] == '\0')
		fprintf(c->out, "%s\t%s\t(defined in otoroshi target)\n", c->section, c->host[0] ? c->host : "-");
	else
		fprintf(c->out, "%s\t%s\t%s%s%s\n", c->section, c->host[0] ? c->host : "-",
			c->remote_host[0] ? c->remote_host : "(target's host)", c->remote_port[0] ? ":" : "",
			c->remote_port);
	c->any = true;
	c->host[0] = c->remote_host[0] = c->remote_port[0] = '\0';
}

static int on_list_key(void *user, const char *section, const char *key, const char *value)
{
	struct list_ctx *c = user;
	if (strcmp(section, c->section) != 0) {
		list_flush(c);
		snprintf(c->section, sizeof(c->section), "%s", section);
	}
	if (strcmp(key, "host") == 0)
		snprintf(c->host, sizeof(c->host), "%s", value);
	else if (strcmp(key, "remote-host") == 0)
		snprintf(c->remote_host, sizeof(c->remote_host), "%s", value);
	else if (strcmp(key, "remote-port") == 0)
		snprintf(c->remote_port, sizeof(c->remote_port), "%s", value);
	return 1;
}

int config_list_profiles(const char *path, FILE *out, char *err, size_t errlen)
{
	struct list_ctx c = {.out = out};
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return open_error(path, err, errlen);
	int line = ini_parse_file(f, on_list_key, &c);
	fclose(f);
	list_flush(&c);
	if (line != 0) {
		snprintf(err, errlen, "%s:%d: not an INI line (expected [profile] or key = value)", path, line);
		return -1;
	}
	return 0;
}

char *config_read_secret_file(const char *path, const char *what, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		snprintf(err, errlen, "%s: cannot read '%s': %s", what, path, strerror(errno));
		return NULL;
	}
	char buf[4096];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	char *s = buf[0] ? strdup(buf) : NULL;
	memset(buf, 0, sizeof(buf));
	if (s == NULL)
		snprintf(err, errlen, "%s: '%s' is empty: it should hold the secret on its first line", what, path);
	return s;
}

void config_check_private(const char *path, char *warning, size_t warnlen)
{
	struct stat st;
	if (warning[0] != '\0' || stat(path, &st) != 0 || (st.st_mode & 077) == 0)
		return;
	snprintf(warning, warnlen, "%s holds a secret and can be read by %s: make it private with 'chmod 600 %s'",
		 path, (st.st_mode & 007) ? "anyone on this machine" : "its group", path);
}

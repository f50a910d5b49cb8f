/* config: profiles (INI, read with inih), secret files and owned strings;
 * see config.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/platform_util.h>

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

void config_wipe(void *p, size_t len)
{
	mbedtls_platform_zeroize(p, len);
}

void config_finish(struct tunnel_config *cfg)
{
	for (size_t i = 0; i < cfg->n_owned; i++) {
		/* Some of these are secrets: leave nothing behind. */
		config_wipe(cfg->owned[i], strlen(cfg->owned[i]));
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

/* ---- lines for inih ----------------------------------------------------
 *
 * The system's inih reads lines of at most 200 bytes; a JWT or a long host
 * does not fit. So the file is read here, a line at a time, whatever its
 * length, and each line is handed to inih (ini_parse_stream) as one line of
 * its own, so that inih's line numbers stay the file's: a line that fits
 * goes as it is; a long `key = value` goes as `key = \x01N`, the value set
 * aside as long value N and put back by long_value() in the handler; a long
 * comment goes as ";". The reader also refuses what inih would take
 * silently: a section given twice, and an indented line, which inih reads
 * as the continuation of the previous value. */

#define LONG_MARK '\x01'

struct line_reader {
	FILE *f;
	int line;
	char *buf;
	size_t cap;
	char **longs; /* values set aside */
	size_t n_longs;
	/* Sections seen: line, length and name, one after the other. */
	char *sections;
	size_t sections_len;
	bool key_in_section; /* a key was seen since the last section header */
	char why[600];      /* the reader's own error, at line `line` */
};

static void trim_span(const char **p, size_t *n)
{
	while (*n > 0 && (**p == ' ' || **p == '\t')) {
		(*p)++;
		(*n)--;
	}
	while (*n > 0 && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
		(*n)--;
}

/* Records a section header; false (with why) when it was given before.
 * Each entry is its line, its length and its bytes (a name may hold any
 * byte, a NUL too). */
static bool note_header(struct line_reader *r, const char *name, size_t n)
{
	const size_t head = sizeof(int) + sizeof(size_t);
	for (size_t off = 0; off + head <= r->sections_len;) {
		int at;
		size_t len;
		memcpy(&at, r->sections + off, sizeof(at));
		memcpy(&len, r->sections + off + sizeof(at), sizeof(len));
		const char *seen = r->sections + off + head;
		if (len == n && memcmp(seen, name, n) == 0) {
			snprintf(r->why, sizeof(r->why), "the profile [%.*s] is already defined at line %d: give each "
				 "profile once", (int)(n > 100 ? 100 : n), name, at);
			return false;
		}
		off += head + len;
	}
	char *grown = realloc(r->sections, r->sections_len + head + n);
	if (grown == NULL) {
		snprintf(r->why, sizeof(r->why), "out of memory");
		return false;
	}
	r->sections = grown;
	memcpy(r->sections + r->sections_len, &r->line, sizeof(int));
	memcpy(r->sections + r->sections_len + sizeof(int), &n, sizeof(n));
	memcpy(r->sections + r->sections_len + head, name, n);
	r->sections_len += head + n;
	return true;
}

/* Hands inih a long `key = value` line with the value set aside. */
static bool shorten(struct line_reader *r, const char *p, size_t n, char *out, int num)
{
	size_t keylen = strcspn(p, "=:");
	if (keylen >= n) {
		/* No delimiter: inih refuses it, at this line. */
		snprintf(out, (size_t)num, "%.*s\n", num - 2, p);
		return true;
	}
	const char *v = p + keylen + 1;
	size_t vn = n - keylen - 1;
	/* An inline comment is cut as inih cuts it: a ';' after a space. */
	for (size_t i = 1; i < vn; i++)
		if (v[i] == ';' && (v[i - 1] == ' ' || v[i - 1] == '\t')) {
			vn = i;
			break;
		}
	trim_span(&v, &vn);
	char **grown = realloc(r->longs, (r->n_longs + 1) * sizeof(*r->longs));
	char *copy = malloc(vn + 1);
	if (grown != NULL)
		r->longs = grown;
	if (grown == NULL || copy == NULL) {
		free(copy);
		snprintf(r->why, sizeof(r->why), "out of memory");
		return false;
	}
	memcpy(copy, v, vn);
	copy[vn] = '\0';
	r->longs[r->n_longs] = copy;
	snprintf(out, (size_t)num, "%.*s= %c%zu\n", (int)(keylen < 150 ? keylen : 150), p, LONG_MARK, r->n_longs);
	r->n_longs++;
	return true;
}

static char *next_line(char *out, int num, void *stream)
{
	struct line_reader *r = stream;
	if (r->why[0] != '\0')
		return NULL;
	ssize_t got = getline(&r->buf, &r->cap, r->f);
	if (got < 0)
		return NULL;
	r->line++;
	size_t n = (size_t)got;
	while (n > 0 && (r->buf[n - 1] == '\n' || r->buf[n - 1] == '\r'))
		n--;
	const char *p = r->buf;
	if (r->line == 1 && n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
		p += 3;
		n -= 3;
	}
	const char *t = p;
	size_t tn = n;
	trim_span(&t, &tn);
	bool comment = tn > 0 && (*t == ';' || *t == '#');
	if (tn > 0 && !comment && t != p && r->key_in_section) {
		snprintf(r->why, sizeof(r->why), "an indented line continues the value above it in INI, and profile "
			 "values are one line each: join it to the line above, or remove the indentation");
		return NULL;
	}
	if (tn > 1 && *t == '[' && t[tn - 1] == ']') {
		const char *name = t + 1;
		size_t nn = tn - 2;
		trim_span(&name, &nn);
		if (!note_header(r, name, nn))
			return NULL;
		r->key_in_section = false;
	} else if (tn > 0 && !comment) {
		r->key_in_section = true;
	}
	if (n + 2 <= (size_t)num) {
		memcpy(out, p, n);
		out[n] = '\n';
		out[n + 1] = '\0';
		return out;
	}
	if (comment) {
		snprintf(out, (size_t)num, ";\n");
		return out;
	}
	return shorten(r, t, tn, out, num) ? out : NULL;
}

/* The value inih passes, or the long value it stands for. */
static const char *long_value(const struct line_reader *r, const char *value)
{
	if (value[0] != LONG_MARK)
		return value;
	size_t i = (size_t)strtoul(value + 1, NULL, 10);
	return i < r->n_longs ? r->longs[i] : value;
}

static void reader_finish(struct line_reader *r)
{
	for (size_t i = 0; i < r->n_longs; i++) {
		config_wipe(r->longs[i], strlen(r->longs[i]));
		free(r->longs[i]);
	}
	free(r->longs);
	if (r->buf != NULL)
		config_wipe(r->buf, r->cap);
	free(r->buf);
	free(r->sections);
}

/* Parses the file with handler. Returns 0; or -1 with err when the file
 * cannot be read or the reader refused a line; or the number of the first
 * line inih or the handler refused, for the caller to explain. */
static int parse_file(const char *path, ini_handler handler, struct line_reader *r, void *user, char *err,
		      size_t errlen)
{
	r->f = fopen(path, "r");
	if (r->f == NULL)
		return open_error(path, err, errlen);
	int line = ini_parse_stream(next_line, r, handler, user);
	fclose(r->f);
	if (r->why[0] != '\0') {
		snprintf(err, errlen, "%s:%d: %s", path, r->line, r->why);
		return -1;
	}
	return line;
}

static const char not_ini[] = "not an INI line (expected [profile] or key = value)";

struct load_ctx {
	const char *name;
	config_apply_fn apply;
	void *apply_ctx;
	struct line_reader *reader;
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
	if (c->apply(c->apply_ctx, key, long_value(c->reader, value), c->why, sizeof(c->why)) != 0) {
		c->failed = true;
		return 0; /* inih reports this line */
	}
	return 1;
}

int config_load_profile(const char *path, const char *name, config_apply_fn apply, void *ctx, char *err,
			size_t errlen)
{
	struct line_reader r = {0};
	struct load_ctx c = {.name = name, .apply = apply, .apply_ctx = ctx, .reader = &r};
	int line = parse_file(path, on_key, &r, &c, err, errlen);
	reader_finish(&r);
	if (line > 0)
		snprintf(err, errlen, "%s:%d: %s", path, line, c.failed ? c.why : not_ini);
	if (line != 0)
		return -1;
	if (!c.found) {
		snprintf(err, errlen, "%s: no profile '%s' (profiles there: %s)", path, name,
			 c.seen[0] ? c.seen : "none");
		return -1;
	}
	return 0;
}

struct list_ctx {
	FILE *out;
	struct line_reader *reader;
	char section[128];
	char host[256];
	char remote_host[256];
	char remote_port[16];
	char forwards[2048]; /* the forward lines, each ending in '\n' */
	bool any;
};

static void list_flush(struct list_ctx *c)
{
	if (c->section[0] == '\0')
		return;
	const char *host = c->host[0] ? c->host : "-";
	if (c->forwards[0] != '\0') {
		/* One line per forward: each is a listener of its own. */
		for (const char *f = c->forwards, *nl; (nl = strchr(f, '\n')) != NULL; f = nl + 1)
			fprintf(c->out, "%s\t%s\tforward %.*s\n", c->section, host, (int)(nl - f), f);
	} else if (c->remote_host[0] == '\0' && c->remote_port[0] == '\0') {
		fprintf(c->out, "%s\t%s\t(defined in otoroshi target)\n", c->section, host);
	} else {
		fprintf(c->out, "%s\t%s\t%s%s%s\n", c->section, host,
			c->remote_host[0] ? c->remote_host : "(target's host)", c->remote_port[0] ? ":" : "",
			c->remote_port);
	}
	c->any = true;
	c->host[0] = c->remote_host[0] = c->remote_port[0] = c->forwards[0] = '\0';
}

static int on_list_key(void *user, const char *section, const char *key, const char *value)
{
	struct list_ctx *c = user;
	if (strcmp(section, c->section) != 0) {
		list_flush(c);
		snprintf(c->section, sizeof(c->section), "%s", section);
	}
	value = long_value(c->reader, value);
	if (strcmp(key, "host") == 0)
		snprintf(c->host, sizeof(c->host), "%s", value);
	else if (strcmp(key, "remote-host") == 0)
		snprintf(c->remote_host, sizeof(c->remote_host), "%s", value);
	else if (strcmp(key, "remote-port") == 0)
		snprintf(c->remote_port, sizeof(c->remote_port), "%s", value);
	else if (strcmp(key, "forward") == 0) {
		size_t used = strlen(c->forwards);
		if (used + strlen(value) + 2 < sizeof(c->forwards))
			snprintf(c->forwards + used, sizeof(c->forwards) - used, "%s\n", value);
	}
	return 1;
}

int config_list_profiles(const char *path, FILE *out, char *err, size_t errlen)
{
	/* Nothing is printed unless the whole file is right. */
	char *text = NULL;
	size_t text_len = 0;
	FILE *mem = open_memstream(&text, &text_len);
	if (mem == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -1;
	}
	struct line_reader r = {0};
	struct list_ctx c = {.out = mem, .reader = &r};
	int line = parse_file(path, on_list_key, &r, &c, err, errlen);
	reader_finish(&r);
	if (line == 0)
		list_flush(&c);
	fclose(mem);
	if (line > 0)
		snprintf(err, errlen, "%s:%d: %s", path, line, not_ini);
	if (line == 0)
		fwrite(text, 1, text_len, out);
	free(text);
	return line == 0 ? 0 : -1;
}

/* Reads up to the first line end, or the limit plus one byte, from fd: a
 * FIFO gives its first line without waiting for the writer to finish. */
static ssize_t read_first_line(int fd, bool fifo, char *buf, size_t cap)
{
	size_t n = 0;
	while (n < cap) {
		ssize_t r = read(fd, buf + n, fifo ? 1 : cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		n += (size_t)r;
		if (memchr(buf + n - (size_t)r, '\n', (size_t)r) != NULL)
			break;
	}
	return (ssize_t)n;
}

char *config_read_secret_file(const char *path, const char *what, bool *is_file, char *err, size_t errlen)
{
	*is_file = false;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot read '%s': %s", what, path, strerror(errno));
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		snprintf(err, errlen, "%s: cannot read '%s': %s", what, path, strerror(errno));
		close(fd);
		return NULL;
	}
	const char *not_a_file = S_ISDIR(st.st_mode)			       ? "a directory"
				 : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
				 : S_ISSOCK(st.st_mode)			       ? "a socket"
									       : NULL;
	if (not_a_file != NULL) {
		snprintf(err, errlen, "%s: '%s' is %s, not a file: give the file that holds the secret on its first line",
			 what, path, not_a_file);
		close(fd);
		return NULL;
	}
	bool fifo = S_ISFIFO(st.st_mode);
	/* A FIFO is read as it comes, up to its first line end. */
	if (fifo)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	*is_file = S_ISREG(st.st_mode);
	char *buf = malloc(CONFIG_SECRET_MAX + 1);
	if (buf == NULL) {
		snprintf(err, errlen, "%s: out of memory reading '%s'", what, path);
		close(fd);
		return NULL;
	}
	ssize_t n = read_first_line(fd, fifo, buf, CONFIG_SECRET_MAX + 1);
	int read_errno = errno;
	close(fd);
	char *secret = NULL;
	if (n < 0) {
		snprintf(err, errlen, "%s: cannot read '%s': %s", what, path, strerror(read_errno));
		goto out;
	}
	size_t len = (size_t)n;
	char *nl = memchr(buf, '\n', len);
	if (nl == NULL && len > CONFIG_SECRET_MAX) {
		snprintf(err, errlen, "%s: the first line of '%s' is longer than %d KiB: a secret file holds the "
			 "secret alone on its first line", what, path, CONFIG_SECRET_MAX / 1024);
		goto out;
	}
	if (nl != NULL)
		len = (size_t)(nl - buf);
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	size_t start = 0;
	if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
		start = 3; /* a UTF-8 byte order mark, as some editors write */
	if (len == start) {
		snprintf(err, errlen, "%s: '%s' %s: it should hold the secret on its first line", what, path,
			 n == 0 ? "is empty" : "starts with an empty line");
		goto out;
	}
	secret = malloc(len - start + 1);
	if (secret == NULL) {
		snprintf(err, errlen, "%s: out of memory reading '%s'", what, path);
		goto out;
	}
	memcpy(secret, buf + start, len - start);
	secret[len - start] = '\0';
	if (strlen(secret) != len - start) {
		snprintf(err, errlen, "%s: the first line of '%s' holds a NUL byte: it is not a text secret", what, path);
		config_wipe(secret, len - start);
		free(secret);
		secret = NULL;
	}
out:
	config_wipe(buf, CONFIG_SECRET_MAX + 1);
	free(buf);
	return secret;
}

void config_check_private(const char *path, char *warning, size_t warnlen)
{
	struct stat st;
	if (warning[0] != '\0' || stat(path, &st) != 0 || (st.st_mode & 077) == 0)
		return;
	snprintf(warning, warnlen, "%s holds a secret and can be read by %s: make it private with 'chmod 600 %s'",
		 path, (st.st_mode & 007) ? "anyone on this machine" : "its group", path);
}

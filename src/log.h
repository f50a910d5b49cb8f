/* log: the lines people read on stderr, in the reference client's format
 * `[LEVEL otoroshictl::tunnels::tcp] message` (env_logger style), with the
 * time in front of the level when asked for (--log-timestamps); or, for
 * machines (--log-format json, OTOROSHICTL_LOG_FORMAT=json), one JSON object
 * a line: `{"timestamp":"2026-12-01T15:43:03.123Z","level":"INFO",
 * "target":"otoroshictl::tunnels::tcp","message":"..."}` and the fields a
 * caller adds (log_fields), never coloured.
 *
 * The level comes from the OTOROSHICTL environment variable (error, warn,
 * info, debug, trace; default info) and -v raises it to debug. Colour follows
 * OTOROSHICTL_LOG_STYLE (auto: only when stderr is a terminal; always;
 * never), as env_logger's style variable does; NO_COLOR turns it off
 * whatever the style says.
 *
 * Secrets are never handed to this layer: callers log redacted URLs and
 * never format a credential, so nothing here needs to scrub strings. */
#ifndef OTOROSHICTL_LOG_H
#define OTOROSHICTL_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level {
	LOG_OFF = 0, /* as a level to show: nothing (--check says it all on stdout) */
	LOG_ERROR = 1,
	LOG_WARN,
	LOG_INFO,
	LOG_DEBUG,
	LOG_TRACE,
};

/* Reads OTOROSHICTL, OTOROSHICTL_LOG_STYLE and NO_COLOR, and checks whether
 * stderr is a terminal. Returns 0, or LOG_INIT_BAD_LEVEL and/or
 * LOG_INIT_BAD_STYLE when a variable holds an unknown value (the default is
 * then kept and the caller may warn). */
#define LOG_INIT_BAD_LEVEL 1
#define LOG_INIT_BAD_STYLE 2
/* OTOROSHICTL_LOG_FORMAT is read too; LOG_INIT_BAD_FORMAT when unknown. */
#define LOG_INIT_BAD_FORMAT 4
int log_init(void);

enum log_format {
	LOG_FORMAT_HUMAN,
	LOG_FORMAT_JSON,
};
/* Parses "human" or "json" (any case); returns -1 when the name is unknown. */
int log_format_parse(const char *name, enum log_format *out);
/* The format from here on (a flag wins over OTOROSHICTL_LOG_FORMAT). */
void log_set_format(enum log_format format);
enum log_format log_get_format(void);
/* Human lines show the time (UTC, milliseconds) before the level. JSON
 * lines always have it. */
void log_set_timestamps(bool on);
/* Writes `unix_ms` as RFC 3339 in UTC with milliseconds
 * ("2026-12-01T15:43:03.123Z", LOG_TIME_LEN characters) into out; returns
 * the length, or 0 when out is too small (out then holds ""). */
#define LOG_TIME_LEN 24
size_t log_format_time(uint64_t unix_ms, char *out, size_t outlen);
/* The level when OTOROSHICTL does not set one (--stdio keeps quiet). */
void log_default(enum log_level level);
/* Raises the level to at least `level` (used by -v). */
void log_raise(enum log_level level);
bool log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* A named value that a JSON line carries besides its message. A string
 * field whose str is NULL is left out. Keys are plain ASCII names chosen by
 * the caller; values are copied, and bytes that are not UTF-8 become
 * U+FFFD. */
enum log_field_type {
	LOG_FIELD_STR,
	LOG_FIELD_INT,
};
struct log_field {
	const char *key;
	enum log_field_type type;
	const char *str;
	long long num;
};
#define LOG_STR(k, v) ((struct log_field){(k), LOG_FIELD_STR, (v), 0})
#define LOG_INT(k, v) ((struct log_field){(k), LOG_FIELD_INT, NULL, (long long)(v)})
/* Like log_msg; in the JSON format the n fields follow the message (human
 * lines ignore them: the message says it all). */
void log_fields(enum log_level level, const struct log_field *fields, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The message of the last error or warning logged (shown or not), or "":
 * what --check puts on the line of the step that failed. */
const char *log_last_problem(void);
void log_forget_problem(void);
/* A line asked for (SIGUSR1's report): at info level, written whatever the
 * level, since whoever sent the signal wants to read it. */
void log_report(const struct log_field *fields, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Logging never blocks: standard error, when a pipe, FIFO or terminal, is
 * written through a non-blocking description of its own (made here, once
 * descriptors 0 to 2 are known to be open); what it cannot take at once
 * waits in a backlog of LOG_BACKLOG bytes, and lines beyond it are dropped
 * and counted, the count logged once they flow again. */
#define LOG_BACKLOG 65536
void log_stream_setup(void);
/* Called when lines start to wait, so that the loop calls log_flush until
 * it returns true. */
void log_set_backlog_hook(void (*hook)(void *data), void *data);
/* Writes what waits, if standard error takes it; true when nothing waits. */
bool log_flush(void);

/* Parses a level name; returns 0 when the name is unknown. */
enum log_level log_level_parse(const char *name);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_trace(...) do { if (log_enabled(LOG_TRACE)) log_msg(LOG_TRACE, __VA_ARGS__); } while (0)

#endif

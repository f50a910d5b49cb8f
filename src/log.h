/* log: the lines people read on stderr, in the reference client's format
 * `[LEVEL otoroshictl::tunnels::tcp] message` (env_logger style).
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

enum log_level {
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
int log_init(void);
/* The level when OTOROSHICTL does not set one (--stdio keeps quiet). */
void log_default(enum log_level level);
/* Raises the level to at least `level` (used by -v). */
void log_raise(enum log_level level);
bool log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
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

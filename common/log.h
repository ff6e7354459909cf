/*
 * log.h - structured logging: one key=value line per event on stderr.
 *
 *   ts=2026-11-25T12:00:00.123Z level=warn msg="s3 request retried"
 *       bucket=data attempt=2 cause="connection refused"
 *
 * Fields are typed (LOG_S, LOG_I, LOG_U, LOG_F) so that values are quoted
 * and escaped by the logger, not by each caller. A field whose key names a
 * secret (secret, password, token, authorization, credential, signature,
 * session) is always written as [redacted], so a careless call cannot leak
 * one. Lines are written with one write(2) so concurrent threads never
 * interleave within a line. The level and output are process-wide and set
 * once at start-up (log_set_level); logging itself takes no lock.
 */
#ifndef GRANARY_COMMON_LOG_H
#define GRANARY_COMMON_LOG_H

#include <pthread.h>
#include <stdint.h>

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

enum log_field_type { LOG_FIELD_END = 0, LOG_FIELD_STR, LOG_FIELD_INT, LOG_FIELD_UINT, LOG_FIELD_DBL };

struct log_field {
	enum log_field_type type;
	const char *key;
	union {
		const char *s;
		int64_t i;
		uint64_t u;
		double d;
	} v;
};

#define LOG_S(k, val) ((struct log_field){ .type = LOG_FIELD_STR, .key = (k), .v.s = (val) })
#define LOG_I(k, val) ((struct log_field){ .type = LOG_FIELD_INT, .key = (k), .v.i = (int64_t)(val) })
#define LOG_U(k, val) ((struct log_field){ .type = LOG_FIELD_UINT, .key = (k), .v.u = (uint64_t)(val) })
#define LOG_F(k, val) ((struct log_field){ .type = LOG_FIELD_DBL, .key = (k), .v.d = (double)(val) })
#define LOG_END ((struct log_field){ .type = LOG_FIELD_END })

/*
 * Writes one line if level passes the threshold. The variadic arguments are
 * struct log_field values ending with LOG_END; the macros below add it.
 */
void log_write(enum log_level level, const char *msg, ...);

#define log_debug(...) log_write(LOG_LEVEL_DEBUG, __VA_ARGS__, LOG_END)
#define log_info(...) log_write(LOG_LEVEL_INFO, __VA_ARGS__, LOG_END)
#define log_warn(...) log_write(LOG_LEVEL_WARN, __VA_ARGS__, LOG_END)
#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__, LOG_END)

/* Sets the threshold; call before starting threads. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int log_level_parse(const char *name);

/* Sends lines to fd instead of stderr (tests capture with a pipe). */
void log_set_fd(int fd);

/*
 * Formats one line into buf (always NUL-terminated, ends with '\n' when it
 * fits) exactly as log_write would; returns the length. Used by tests and by
 * log_write itself.
 */
int log_format(char *buf, int size, enum log_level level, const char *msg,
	       const struct log_field *fields, int nfields);

/* True when a field key names a secret and its value must be redacted. */
int log_key_is_secret(const char *key);

/*
 * A rate limit for one kind of repeated line: at most one line per
 * interval, the rest counted. A line that passes after others were held
 * back carries suppressed=N, how many since the previous line, so a flood
 * shows up as one line per interval that says how big it was.
 *
 * Give each cause its own limiter (one per call site, or per source at a
 * site that several sources share). Thread-safe: l->mu protects the state.
 * The clock is injectable for tests; NULL means CLOCK_MONOTONIC.
 */
typedef uint64_t (*log_clock_fn)(void *arg); /* milliseconds, never going back */

struct log_limiter {
	pthread_mutex_t mu;
	uint64_t interval_ms;
	log_clock_fn clock;
	void *clock_arg;
	int started;         /* a line has been written; protected by mu */
	uint64_t next_ms;    /* earliest time for the next line; protected by mu */
	uint64_t suppressed; /* held back since the last line; protected by mu */
};

/* Sets up *l for one line per interval_ms; clock may be NULL. */
void log_limiter_init(struct log_limiter *l, uint64_t interval_ms, log_clock_fn clock,
		      void *clock_arg);
void log_limiter_release(struct log_limiter *l);

/*
 * As log_write when l lets a line through now (adding suppressed=N when
 * lines were held back); otherwise counts the line and writes nothing.
 * Returns 1 when the line was let through, 0 when it was held back. A line
 * under the level threshold is neither written nor counted.
 */
int log_limited(struct log_limiter *l, enum log_level level, const char *msg, ...);

#define log_limited_warn(l, ...) log_limited((l), LOG_LEVEL_WARN, __VA_ARGS__, LOG_END)

#endif

/*
 * log.c - key=value lines on stderr, one write(2) per line.
 */
#include "common/log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/retry.h"

#define LOG_LINE_MAX 4096
#define LOG_FIELDS_MAX 32

/* Process-wide settings: written once at start-up, read by every thread. */
static _Atomic int log_level = LOG_LEVEL_INFO;
static _Atomic int log_fd = STDERR_FILENO;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_set_level(enum log_level level)
{
	log_level = level;
}

enum log_level log_get_level(void)
{
	return (enum log_level)log_level;
}

void log_set_fd(int fd)
{
	log_fd = fd;
}

int log_level_parse(const char *name)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (name && strcasecmp(name, level_names[i]) == 0)
			return (int)i;
	return -1;
}

int log_key_is_secret(const char *key)
{
	static const char *const words[] = { "secret", "password", "passwd", "token",
					     "authorization", "credential", "signature",
					     "session", "cookie", NULL };

	for (int i = 0; key && words[i]; i++)
		if (strcasestr(key, words[i]))
			return 1;
	return 0;
}

struct line {
	char *buf;
	int size;
	int len; /* may exceed size: then the line was cut */
};

static void put(struct line *l, const char *s, int n)
{
	int room = l->size - 1 - l->len;

	if (room > 0)
		memcpy(l->buf + l->len, s, (size_t)(n < room ? n : room));
	l->len += n;
}

static void putf(struct line *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void putf(struct line *l, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	put(l, tmp, n < (int)sizeof(tmp) ? n : (int)sizeof(tmp) - 1);
}

/* Bare when safe, else double-quoted with \" \\ \n \t and \xNN escapes, so
 * one event is always one parseable line. */
static void put_value(struct line *l, const char *s)
{
	int bare = *s != '\0';

	for (const char *p = s; *p && bare; p++)
		if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\' ||
		    (unsigned char)*p < 0x20 || *p == 0x7f)
			bare = 0;
	if (bare) {
		put(l, s, (int)strlen(s));
		return;
	}
	put(l, "\"", 1);
	for (const char *p = s; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '"' || c == '\\') {
			char esc[2] = { '\\', (char)c };
			put(l, esc, 2);
		} else if (c == '\n') {
			put(l, "\\n", 2);
		} else if (c == '\t') {
			put(l, "\\t", 2);
		} else if (c < 0x20 || c == 0x7f) {
			putf(l, "\\x%02x", c);
		} else {
			put(l, (const char *)p, 1);
		}
	}
	put(l, "\"", 1);
}

int log_format(char *buf, int size, enum log_level level, const char *msg,
	       const struct log_field *fields, int nfields)
{
	struct line l = { buf, size, 0 };
	struct timeval tv;
	struct tm tm;
	char ts[32];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	put(&l, "ts=", 3);
	put(&l, ts, (int)strlen(ts));
	putf(&l, ".%03ldZ level=%s msg=", (long)(tv.tv_usec / 1000),
	     level_names[level < LOG_LEVEL_DEBUG || level > LOG_LEVEL_ERROR ? LOG_LEVEL_ERROR : level]);
	put_value(&l, msg ? msg : "");
	for (int i = 0; i < nfields; i++) {
		const struct log_field *f = &fields[i];

		put(&l, " ", 1);
		put(&l, f->key, (int)strlen(f->key));
		put(&l, "=", 1);
		if (log_key_is_secret(f->key)) {
			put(&l, "[redacted]", 10);
			continue;
		}
		switch (f->type) {
		case LOG_FIELD_STR:
			put_value(&l, f->v.s ? f->v.s : "");
			break;
		case LOG_FIELD_INT:
			putf(&l, "%lld", (long long)f->v.i);
			break;
		case LOG_FIELD_UINT:
			putf(&l, "%llu", (unsigned long long)f->v.u);
			break;
		case LOG_FIELD_DBL:
			putf(&l, "%.6g", f->v.d);
			break;
		case LOG_FIELD_END:
			break;
		}
	}
	if (l.len >= size - 1) {
		/* Cut lines still end in a newline and say that they were cut. */
		static const char cut[] = " truncated=true\n";
		int at = size - (int)sizeof(cut);

		if (at < 0)
			at = 0;
		snprintf(buf + at, (size_t)(size - at), "%s", cut);
		return (int)strlen(buf);
	}
	buf[l.len++] = '\n';
	buf[l.len] = '\0';
	return l.len;
}

/* Takes the fields up to LOG_END; extra ones past the cap are dropped. */
static int collect_fields(va_list ap, struct log_field *fields, int cap)
{
	int n = 0;

	for (;;) {
		struct log_field f = va_arg(ap, struct log_field);

		if (f.type == LOG_FIELD_END)
			break;
		if (n < cap)
			fields[n++] = f;
	}
	return n;
}

static void write_line(enum log_level level, const char *msg, const struct log_field *fields,
		       int n)
{
	char buf[LOG_LINE_MAX];
	int len = log_format(buf, sizeof(buf), level, msg, fields, n);

	/* One write per line: concurrent lines never interleave. */
	if (write(log_fd, buf, (size_t)len) < 0) {
		/* nowhere left to report it */
	}
}

void log_write(enum log_level level, const char *msg, ...)
{
	struct log_field fields[LOG_FIELDS_MAX];
	int n;
	va_list ap;

	if ((int)level < log_level)
		return;
	va_start(ap, msg);
	n = collect_fields(ap, fields, LOG_FIELDS_MAX);
	va_end(ap);
	write_line(level, msg, fields, n);
}

static uint64_t monotonic_ms(void *arg)
{
	(void)arg;
	return retry_now_ms();
}

void log_limiter_init(struct log_limiter *l, uint64_t interval_ms, log_clock_fn clock,
		      void *clock_arg)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->mu, NULL);
	l->interval_ms = interval_ms;
	l->clock = clock ? clock : monotonic_ms;
	l->clock_arg = clock_arg;
}

void log_limiter_release(struct log_limiter *l)
{
	pthread_mutex_destroy(&l->mu);
}

int log_limited(struct log_limiter *l, enum log_level level, const char *msg, ...)
{
	struct log_field fields[LOG_FIELDS_MAX];
	uint64_t now, suppressed = 0;
	int n, pass = 0;
	va_list ap;

	if ((int)level < log_level)
		return 0;
	now = l->clock(l->clock_arg);
	pthread_mutex_lock(&l->mu);
	if (!l->started || now >= l->next_ms) {
		pass = 1;
		suppressed = l->suppressed;
		l->suppressed = 0;
		l->started = 1;
		l->next_ms = now + l->interval_ms;
	} else {
		l->suppressed++;
	}
	pthread_mutex_unlock(&l->mu);
	if (!pass)
		return 0;
	va_start(ap, msg);
	n = collect_fields(ap, fields, LOG_FIELDS_MAX - 1);
	va_end(ap);
	if (suppressed)
		fields[n++] = LOG_U("suppressed", suppressed);
	write_line(level, msg, fields, n);
	return 1;
}

/*
 * metrics.c - Prometheus text rendering and fixed-bucket histograms.
 */
#include "common/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void metrics_buf_release(struct metrics_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->failed)
		return;
	for (;;) {
		size_t room = b->cap - b->len;

		va_start(ap, fmt);
		n = vsnprintf(b->data ? b->data + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = 1;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap : 4096;

		while (cap - b->len <= (size_t)n)
			cap *= 2;
		char *p = realloc(b->data, cap);

		if (!p) {
			b->failed = 1;
			return;
		}
		b->data = p;
		b->cap = cap;
	}
}

enum error_code metrics_histogram_init(struct metrics_histogram *h, const double *bounds,
				       size_t nbounds)
{
	memset(h, 0, sizeof(*h));
	if (nbounds > METRICS_BUCKETS_MAX)
		return ERR_INVALID;
	for (size_t i = 1; i < nbounds; i++)
		if (!(bounds[i] > bounds[i - 1]))
			return ERR_INVALID;
	memcpy(h->bounds, bounds, nbounds * sizeof(*bounds));
	h->nbounds = nbounds;
	pthread_mutex_init(&h->mu, NULL);
	return ERR_OK;
}

void metrics_histogram_release(struct metrics_histogram *h)
{
	pthread_mutex_destroy(&h->mu);
}

size_t metrics_bucket_index(const double *bounds, size_t nbounds, double value)
{
	size_t i = 0;

	/* A value on a bound belongs to that bucket: le means <=. */
	while (i < nbounds && value > bounds[i])
		i++;
	return i;
}

void metrics_histogram_observe(struct metrics_histogram *h, double value)
{
	size_t i = metrics_bucket_index(h->bounds, h->nbounds, value);

	pthread_mutex_lock(&h->mu);
	h->counts[i]++;
	h->count++;
	h->sum += value;
	pthread_mutex_unlock(&h->mu);
}

void metrics_format_double(double v, char *out, size_t size)
{
	if (isnan(v)) {
		snprintf(out, size, "NaN");
		return;
	}
	if (isinf(v)) {
		snprintf(out, size, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	/* Integers print in full rather than as 1.073741824e+10. */
	if (v == floor(v) && fabs(v) < 1e15) {
		snprintf(out, size, "%.0f", v);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(out, size, "%.*g", prec, v);
		if (strtod(out, NULL) == v)
			return;
	}
}

void metrics_render_family(struct metrics_buf *b, const char *name, const char *help,
			   const char *type)
{
	metrics_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* label="value" with value escaped as the format asks. */
static void render_pair(struct metrics_buf *b, const char *label, const char *value)
{
	metrics_buf_printf(b, "%s=\"", label);
	for (const char *p = value; *p; p++) {
		if (*p == '\\' || *p == '"')
			metrics_buf_printf(b, "\\%c", *p);
		else if (*p == '\n')
			metrics_buf_printf(b, "\\n");
		else
			metrics_buf_printf(b, "%c", *p);
	}
	metrics_buf_printf(b, "\"");
}

/* name{label="value"}; the sample follows. */
static void render_labels(struct metrics_buf *b, const char *name, const char *label,
			  const char *value)
{
	metrics_buf_printf(b, "%s{", name);
	render_pair(b, label, value);
	metrics_buf_printf(b, "}");
}

void metrics_label_add(struct metrics_buf *labels, const char *name, const char *value)
{
	if (labels->len)
		metrics_buf_printf(labels, ",");
	render_pair(labels, name, value);
}

/* name{labels} or name alone; a failed label buffer fails b. */
static void render_name(struct metrics_buf *b, const char *name, const struct metrics_buf *labels)
{
	if (labels && labels->failed)
		b->failed = 1;
	if (labels && labels->len)
		metrics_buf_printf(b, "%s{%s}", name, labels->data);
	else
		metrics_buf_printf(b, "%s", name);
}

void metrics_render_sample(struct metrics_buf *b, const char *name,
			   const struct metrics_buf *labels, uint64_t value)
{
	render_name(b, name, labels);
	metrics_buf_printf(b, " %llu\n", (unsigned long long)value);
}

void metrics_render_sample_double(struct metrics_buf *b, const char *name,
				  const struct metrics_buf *labels, double value)
{
	char num[40];

	metrics_format_double(value, num, sizeof(num));
	render_name(b, name, labels);
	metrics_buf_printf(b, " %s\n", num);
}

void metrics_render_histogram_sample(struct metrics_buf *b, const char *name,
				     const struct metrics_buf *labels, const double *bounds,
				     size_t nbounds, const uint64_t *counts, double sum)
{
	const char *sep = labels && labels->len ? "," : "";
	const char *text = labels && labels->len ? labels->data : "";
	uint64_t cum = 0;
	char num[40];

	if (labels && labels->failed)
		b->failed = 1;
	for (size_t i = 0; i <= nbounds; i++) {
		cum += counts[i];
		if (i < nbounds)
			metrics_format_double(bounds[i], num, sizeof(num));
		else
			snprintf(num, sizeof(num), "+Inf");
		metrics_buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, text, sep, num,
				   (unsigned long long)cum);
	}
	metrics_format_double(sum, num, sizeof(num));
	metrics_buf_printf(b, "%s_sum", name);
	if (*text)
		metrics_buf_printf(b, "{%s}", text);
	metrics_buf_printf(b, " %s\n%s_count", num, name);
	if (*text)
		metrics_buf_printf(b, "{%s}", text);
	metrics_buf_printf(b, " %llu\n", (unsigned long long)cum);
}

void metrics_render_labeled(struct metrics_buf *b, const char *name, const char *label,
			    const char *value, uint64_t n)
{
	render_labels(b, name, label, value);
	metrics_buf_printf(b, " %llu\n", (unsigned long long)n);
}

void metrics_render_labeled_double(struct metrics_buf *b, const char *name, const char *label,
				   const char *value, double v)
{
	char num[64];

	metrics_format_double(v, num, sizeof(num));
	render_labels(b, name, label, value);
	metrics_buf_printf(b, " %s\n", num);
}

void metrics_render_counter(struct metrics_buf *b, const char *name, const char *help,
			    uint64_t value)
{
	metrics_render_family(b, name, help, "counter");
	metrics_buf_printf(b, "%s %llu\n", name, (unsigned long long)value);
}

void metrics_render_gauge(struct metrics_buf *b, const char *name, const char *help,
			  uint64_t value)
{
	metrics_render_family(b, name, help, "gauge");
	metrics_buf_printf(b, "%s %llu\n", name, (unsigned long long)value);
}

void metrics_render_histogram(struct metrics_buf *b, const char *name, const char *help,
			      struct metrics_histogram *h)
{
	uint64_t counts[METRICS_BUCKETS_MAX + 1], count, cum = 0;
	char num[40];
	double sum;

	/* Copy under the lock so that the buckets, _sum and _count agree. */
	pthread_mutex_lock(&h->mu);
	memcpy(counts, h->counts, sizeof(counts));
	count = h->count;
	sum = h->sum;
	pthread_mutex_unlock(&h->mu);

	metrics_render_family(b, name, help, "histogram");
	for (size_t i = 0; i < h->nbounds; i++) {
		cum += counts[i];
		metrics_format_double(h->bounds[i], num, sizeof(num));
		metrics_buf_printf(b, "%s_bucket{le=\"%s\"} %llu\n", name, num,
				   (unsigned long long)cum);
	}
	metrics_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)count);
	metrics_format_double(sum, num, sizeof(num));
	metrics_buf_printf(b, "%s_sum %s\n%s_count %llu\n", name, num, name,
			   (unsigned long long)count);
}

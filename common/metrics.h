/*
 * metrics.h - Prometheus text exposition (format 0.0.4) without a client
 * library: a growable text buffer, counter and gauge lines, and a
 * histogram with fixed bucket bounds.
 *
 * Rendering is pure: the caller gathers the numbers (from its own atomic
 * counters and the stats calls of the modules) and writes them in order;
 * every family gets its "# HELP" and "# TYPE" lines. A histogram may be
 * observed from any number of threads (one mutex per histogram, held for a
 * few instructions); the buffer is not thread-safe.
 */
#ifndef GRANARY_COMMON_METRICS_H
#define GRANARY_COMMON_METRICS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define METRICS_BUCKETS_MAX 24

/* Text being rendered; data is NUL-terminated. Zero-initialise, then
 * metrics_buf_release. On allocation failure the buffer records it
 * (failed = 1) and further appends do nothing. */
struct metrics_buf {
	char *data;
	size_t len, cap;
	int failed;
};

void metrics_buf_release(struct metrics_buf *b);
/* printf-style append. */
void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

struct metrics_histogram {
	pthread_mutex_t mu;
	size_t nbounds;
	double bounds[METRICS_BUCKETS_MAX];     /* ascending upper bounds, +Inf implied */
	uint64_t counts[METRICS_BUCKETS_MAX + 1]; /* per bucket, not cumulative; protected by mu */
	uint64_t count;                          /* protected by mu */
	double sum;                              /* protected by mu */
};

/* Bounds must be strictly ascending and at most METRICS_BUCKETS_MAX;
 * ERR_INVALID otherwise (a bug in the caller's table; h is then unusable).
 * metrics_histogram_release frees nothing but the mutex. */
enum error_code metrics_histogram_init(struct metrics_histogram *h, const double *bounds,
				       size_t nbounds);
void metrics_histogram_release(struct metrics_histogram *h);
void metrics_histogram_observe(struct metrics_histogram *h, double value);

/*
 * One family each. name must be a valid metric name (the caller's
 * constant); help is one line. A counter's name should end in "_total".
 *
 *   # HELP granary_worker_hits_total blocks served from the cache
 *   # TYPE granary_worker_hits_total counter
 *   granary_worker_hits_total 42
 */
void metrics_render_counter(struct metrics_buf *b, const char *name, const char *help,
			    uint64_t value);
void metrics_render_gauge(struct metrics_buf *b, const char *name, const char *help,
			  uint64_t value);
/*
 * A family whose samples carry labels: metrics_render_family writes its
 * "# HELP" and "# TYPE" lines (type "gauge", "counter"), then one
 * metrics_render_labeled per sample:
 *
 *   granary_csi_volume_abnormal{volume="pvc-1"} 1
 *
 * label is the caller's constant; value is escaped as the format asks
 * (backslash, double quote and newline as \\, \" and \n).
 */
void metrics_render_family(struct metrics_buf *b, const char *name, const char *help,
			   const char *type);
void metrics_render_labeled(struct metrics_buf *b, const char *name, const char *label,
			    const char *value, uint64_t n);
/* The same with a sample that need not be whole (metrics_format_double). */
void metrics_render_labeled_double(struct metrics_buf *b, const char *name, const char *label,
				   const char *value, double v);

/* Cumulative _bucket{le="..."} lines, le="+Inf", then _sum and _count. */
void metrics_render_histogram(struct metrics_buf *b, const char *name, const char *help,
			      struct metrics_histogram *h);

/* The bucket a value falls in: the first bound >= value (le means <=),
 * nbounds for +Inf. The one rule for every histogram, locked or not. */
size_t metrics_bucket_index(const double *bounds, size_t nbounds, double value);

/*
 * Samples with any number of labels, for families whose samples come from
 * several sources (the node plugin renders every mount's counters, each
 * with its volume). labels is a buffer of name="value" pairs that
 * metrics_label_add builds (escaping the value as metrics_render_labeled
 * does); an empty one renders no braces:
 *
 *   granary_fuse_source_bytes_total{volume="pvc-1",source="local"} 4194304
 *   granary_fuse_reads_total 12
 */
void metrics_label_add(struct metrics_buf *labels, const char *name, const char *value);
void metrics_render_sample(struct metrics_buf *b, const char *name,
			   const struct metrics_buf *labels, uint64_t value);
void metrics_render_sample_double(struct metrics_buf *b, const char *name,
				  const struct metrics_buf *labels, double value);
/*
 * One histogram's samples from counts the caller keeps (lock-free
 * counters, a shared file): counts[i] per bucket, not cumulative, nbounds
 * + 1 of them (the last is +Inf); the _bucket lines carry labels and le,
 * then _sum and _count. The family lines are metrics_render_family's
 * (type "histogram").
 */
void metrics_render_histogram_sample(struct metrics_buf *b, const char *name,
				     const struct metrics_buf *labels, const double *bounds,
				     size_t nbounds, const uint64_t *counts, double sum);

/* Shortest text of v that reads back as the same double ("0.005", "10",
 * "+Inf", "NaN"), as Prometheus expects; out has at least 32 bytes. */
void metrics_format_double(double v, char *out, size_t size);

#endif

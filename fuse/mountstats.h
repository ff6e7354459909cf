/*
 * mountstats.h - a mount's counters, kept in a file that outlives its
 * daemon: reads, bytes, block reads and bytes by source (local, peer,
 * store; cache in a standalone mount), fallbacks, failed reads by cause, a
 * read latency histogram, the daemon's resident memory.
 *
 * Every read a FUSE daemon serves adds to them without a lock (relaxed
 * atomic adds on 64-bit counters); the page cache's hits never reach the
 * daemon and are not counted. Only reads that reach it are.
 *
 * Where they live. With an init_state (a mount the node plugin or a test
 * holds, that a successor takes over), the counters are a small file
 * beside it, mountstats_path(): "<init_state>.stats", mapped shared into
 * the daemon. A daemon killed by SIGKILL leaves every count it made in the
 * file (the page cache holds it; no write, no flush); its successor
 * (--takeover) maps the same file and continues from the last values, and
 * the node plugin reads it at each scrape whether a daemon runs or not
 * (csi/health.h). Without an init_state they are anonymous memory.
 *
 * The file's contract, shared by granary-fuse and granary-csi (one rule,
 * one place): a header (magic "GRNSTATS", version, size of the whole
 * struct, the source names in the reader's order) then the counters, all
 * 64-bit little-endian in host order (one node, one architecture). A new
 * file is made whole and renamed in place (fileio_replace), so a reader
 * sees none or all of it. A file of another version or size (an upgrade
 * that changed the layout) is replaced by a fresh one: the counters start
 * again from zero, as after any counter reset, and Prometheus' rate()
 * takes that in its stride.
 *
 * Two daemons on one file at once (an upgrade's new mount pod starts
 * beside the old one) add to the same counters; the atomics are
 * process-shared, so nothing is lost, and the sum is the mount's.
 */
#ifndef GRANARY_FUSE_MOUNTSTATS_H
#define GRANARY_FUSE_MOUNTSTATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/metrics.h"

#define MOUNTSTATS_SOURCES 4        /* READER_MAX_SOURCES */
#define MOUNTSTATS_NAME_MAX 16      /* a source's name with its NUL */
#define MOUNTSTATS_LATENCY_BOUNDS 16
#define MOUNTSTATS_VERSION 1
#define MOUNTSTATS_SUFFIX ".stats"

/* Why a read failed (EIO to the application): granary_fuse_read_errors_total{cause}. */
enum mountstats_cause {
	MOUNTSTATS_CAUSE_DEADLINE,  /* "deadline": no source served in store.deadline */
	MOUNTSTATS_CAUSE_SOURCE,    /* "source": the last source failed */
	MOUNTSTATS_CAUSE_CHANGED,   /* "object_changed": the object changed since the snapshot */
	MOUNTSTATS_CAUSES,
};

/* Upper bounds in seconds of the read latency buckets: from a page of the
 * node's cache (~100 us for 1 MiB) to a store deadline. */
extern const double mountstats_latency_bounds[MOUNTSTATS_LATENCY_BOUNDS];

/* Names of the causes as rendered ("deadline", "source", "object_changed"). */
const char *mountstats_cause_name(enum mountstats_cause c);

/* The counters: each written by relaxed atomic adds (stores for the
 * gauges), by any thread of any daemon that maps the file. */
struct mountstats_counters {
	_Atomic uint64_t reads;                           /* FUSE reads served, failed ones too */
	_Atomic uint64_t bytes;                           /* bytes returned */
	_Atomic uint64_t source_blocks[MOUNTSTATS_SOURCES];   /* block pieces each source answered */
	_Atomic uint64_t source_bytes[MOUNTSTATS_SOURCES];    /* their bytes */
	_Atomic uint64_t fallbacks[MOUNTSTATS_SOURCES];   /* failures of each source passed over */
	_Atomic uint64_t errors[MOUNTSTATS_CAUSES];       /* failed reads by cause */
	_Atomic uint64_t changed_objects;  /* streams that met an object changed since the snapshot */
	_Atomic uint64_t corrupt;          /* cached copies of blocks that failed their checksums */
	_Atomic uint64_t latency[MOUNTSTATS_LATENCY_BOUNDS + 1]; /* per bucket, last is +Inf */
	_Atomic uint64_t latency_sum_ns;
	_Atomic uint64_t daemons;          /* daemons that served the mount: 1 + successors */
	_Atomic uint64_t memory_bytes;     /* gauge: resident memory of the daemon (mountstats_tick) */
	_Atomic uint64_t updated_ms;       /* gauge: wall clock of the last tick */
};

/* The file, as mapped. */
struct mountstats {
	char magic[8];                                       /* "GRNSTATS" */
	uint32_t version;                                    /* MOUNTSTATS_VERSION */
	uint32_t size;                                       /* sizeof(struct mountstats) */
	char sources[MOUNTSTATS_SOURCES][MOUNTSTATS_NAME_MAX]; /* "" past the last */
	struct mountstats_counters c;
};

/* "<init_state>.stats" into out; false when it does not fit. */
bool mountstats_path(const char *init_state, char *out, size_t size);

/*
 * The counters of a mount for its daemon: path's file when path is set
 * (continued, *continued = true, when a file of this layout is there;
 * else a new one), anonymous memory otherwise. Records the source names
 * (at most MOUNTSTATS_SOURCES, each cut to MOUNTSTATS_NAME_MAX - 1) and
 * counts this daemon in daemons. Errors name the file (error_from_errno
 * codes); ERR_INVALID for too many sources. Free with mountstats_close.
 */
enum error_code mountstats_open(const char *path, const char *const *sources, unsigned nsources,
				struct mountstats **out, bool *continued, struct error *err);
void mountstats_close(struct mountstats *ms);

/* Records one read that took seconds and returned bytes (the hot path:
 * three relaxed adds and a bucket search of 16 bounds). */
void mountstats_read_done(struct mountstats_counters *c, double seconds, uint64_t bytes);

/* Sets the memory gauge from /proc/self/statm and the tick time; the
 * daemon calls it once a second. */
void mountstats_tick(struct mountstats *ms);

/* The counters as plain numbers, read at one moment (each field atomically). */
struct mountstats_values {
	char sources[MOUNTSTATS_SOURCES][MOUNTSTATS_NAME_MAX];
	uint64_t reads, bytes;
	uint64_t source_blocks[MOUNTSTATS_SOURCES], source_bytes[MOUNTSTATS_SOURCES];
	uint64_t fallbacks[MOUNTSTATS_SOURCES];
	uint64_t errors[MOUNTSTATS_CAUSES];
	uint64_t changed_objects, corrupt;
	uint64_t latency[MOUNTSTATS_LATENCY_BOUNDS + 1];
	uint64_t latency_sum_ns;
	uint64_t daemons, memory_bytes, updated_ms;
};

void mountstats_get(const struct mountstats *ms, struct mountstats_values *out);

/*
 * Reads the file at path (the node plugin, at each scrape) without
 * writing it. ERR_NOT_FOUND when there is none (no daemon kept counters
 * yet), ERR_INVALID when it is of another layout, else error_from_errno
 * codes naming the file.
 */
enum error_code mountstats_load(const char *path, struct mountstats_values *out,
				struct error *err);

/* One mount's counters and the label value that tells it apart (NULL:
 * no label, a daemon rendering its own). */
struct mountstats_view {
	const char *volume;
	struct mountstats_values v;
};

/*
 * The granary_fuse_* families (docs/observability.md) of n mounts, each
 * family once with a sample per mount (label volume="..." when the view
 * has one): reads, bytes, per source block reads, bytes and fallbacks
 * (label source), failed reads by cause, changed objects, corrupt blocks,
 * the read latency histogram, daemons started, resident memory. n = 0
 * renders nothing.
 */
void mountstats_render(struct metrics_buf *b, const struct mountstats_view *views, size_t n);

#endif

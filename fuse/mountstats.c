/*
 * mountstats.c - the counters file: make or continue it, map it, add to
 * it, read it from another process, render it.
 */
#include "fuse/mountstats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/retry.h"

#define MOUNTSTATS_MAGIC "GRNSTATS"

const double mountstats_latency_bounds[MOUNTSTATS_LATENCY_BOUNDS] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
	0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10,
};

static const char *const cause_names[MOUNTSTATS_CAUSES] = {
	[MOUNTSTATS_CAUSE_DEADLINE] = "deadline",
	[MOUNTSTATS_CAUSE_SOURCE] = "source",
	[MOUNTSTATS_CAUSE_CHANGED] = "object_changed",
};

const char *mountstats_cause_name(enum mountstats_cause c)
{
	return (unsigned)c < MOUNTSTATS_CAUSES ? cause_names[c] : "unknown";
}

bool mountstats_path(const char *init_state, char *out, size_t size)
{
	int n = snprintf(out, size, "%s%s", init_state, MOUNTSTATS_SUFFIX);

	return n > 0 && (size_t)n < size;
}

static bool header_ok(const struct mountstats *ms)
{
	return memcmp(ms->magic, MOUNTSTATS_MAGIC, sizeof(ms->magic)) == 0 &&
	       ms->version == MOUNTSTATS_VERSION && ms->size == sizeof(*ms);
}

/* Maps path shared when it holds a file of this layout; NULL with errno
 * (ENOENT: none, EINVAL: another layout or not a regular file) otherwise.
 * The file lies in a directory the mount pods write: a symbolic link is
 * not followed and a FIFO does not block the node plugin's scrape. */
static struct mountstats *map_existing(const char *path, int prot, int flags)
{
	struct mountstats *ms;
	struct stat st;
	int fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK), saved;

	if (fd < 0) {
		if (errno == ELOOP)
			errno = EINVAL;
		return NULL;
	}
	if (fstat(fd, &st) != 0)
		goto fail;
	if (!S_ISREG(st.st_mode) || st.st_size != (off_t)sizeof(*ms)) {
		errno = EINVAL;
		goto fail;
	}
	ms = mmap(NULL, sizeof(*ms), prot, MAP_SHARED, fd, 0);
	if (ms == MAP_FAILED)
		goto fail;
	close(fd);
	if (!header_ok(ms)) {
		munmap(ms, sizeof(*ms));
		errno = EINVAL;
		return NULL;
	}
	return ms;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return NULL;
}

enum error_code mountstats_open(const char *path, const char *const *sources, unsigned nsources,
				struct mountstats **out, bool *continued, struct error *err)
{
	struct mountstats *ms = NULL, fresh;

	*out = NULL;
	*continued = false;
	if (nsources > MOUNTSTATS_SOURCES)
		return error_set(err, ERR_INVALID, "mount stats: %u sources, at most %d", nsources,
				 MOUNTSTATS_SOURCES);
	if (path && *path) {
		ms = map_existing(path, PROT_READ | PROT_WRITE, O_RDWR);
		if (ms) {
			*continued = true;
		} else {
			if (errno != ENOENT && errno != EINVAL)
				return error_set(err, error_from_errno(errno), "open '%s': %s", path,
						 strerror(errno));
			memset(&fresh, 0, sizeof(fresh));
			memcpy(fresh.magic, MOUNTSTATS_MAGIC, sizeof(fresh.magic));
			fresh.version = MOUNTSTATS_VERSION;
			fresh.size = sizeof(fresh);
			if (fileio_replace(path, &fresh, sizeof(fresh), 0600, err) != ERR_OK)
				return err->code;
			ms = map_existing(path, PROT_READ | PROT_WRITE, O_RDWR);
			if (!ms)
				return error_set(err, error_from_errno(errno), "map '%s': %s", path,
						 strerror(errno));
		}
	} else {
		ms = mmap(NULL, sizeof(*ms), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (ms == MAP_FAILED)
			return error_set(err, ERR_NOMEM, "mount stats: out of memory");
		memcpy(ms->magic, MOUNTSTATS_MAGIC, sizeof(ms->magic));
		ms->version = MOUNTSTATS_VERSION;
		ms->size = sizeof(*ms);
	}
	/* The same mount has the same sources; the names are written again
	 * so that a file made by a daemon of other sources says the truth. */
	for (unsigned i = 0; i < MOUNTSTATS_SOURCES; i++)
		snprintf(ms->sources[i], sizeof(ms->sources[i]), "%s",
			 i < nsources && sources[i] ? sources[i] : "");
	atomic_fetch_add_explicit(&ms->c.daemons, 1, memory_order_relaxed);
	*out = ms;
	return ERR_OK;
}

void mountstats_close(struct mountstats *ms)
{
	if (ms)
		munmap(ms, sizeof(*ms));
}

void mountstats_read_done(struct mountstats_counters *c, double seconds, uint64_t bytes)
{
	size_t i = metrics_bucket_index(mountstats_latency_bounds, MOUNTSTATS_LATENCY_BOUNDS,
					seconds);

	atomic_fetch_add_explicit(&c->reads, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&c->bytes, bytes, memory_order_relaxed);
	atomic_fetch_add_explicit(&c->latency[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&c->latency_sum_ns,
				  seconds > 0 ? (uint64_t)(seconds * 1e9) : 0, memory_order_relaxed);
}

void mountstats_tick(struct mountstats *ms)
{
	unsigned long long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "re");

	if (f) {
		if (fscanf(f, "%llu %llu", &size, &resident) == 2)
			atomic_store_explicit(&ms->c.memory_bytes,
					      (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE),
					      memory_order_relaxed);
		fclose(f);
	}
	atomic_store_explicit(&ms->c.updated_ms, (uint64_t)retry_wall_ms(), memory_order_relaxed);
}

#define LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)

void mountstats_get(const struct mountstats *ms, struct mountstats_values *out)
{
	const struct mountstats_counters *c = &ms->c;

	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < MOUNTSTATS_SOURCES; i++) {
		memcpy(out->sources[i], ms->sources[i], MOUNTSTATS_NAME_MAX);
		out->sources[i][MOUNTSTATS_NAME_MAX - 1] = '\0';
		out->source_blocks[i] = LOAD(c->source_blocks[i]);
		out->source_bytes[i] = LOAD(c->source_bytes[i]);
		out->fallbacks[i] = LOAD(c->fallbacks[i]);
	}
	/* Latency first, reads last: a scrape never shows more latency
	 * observations than reads. */
	for (unsigned i = 0; i <= MOUNTSTATS_LATENCY_BOUNDS; i++)
		out->latency[i] = LOAD(c->latency[i]);
	out->latency_sum_ns = LOAD(c->latency_sum_ns);
	for (unsigned i = 0; i < MOUNTSTATS_CAUSES; i++)
		out->errors[i] = LOAD(c->errors[i]);
	out->changed_objects = LOAD(c->changed_objects);
	out->corrupt = LOAD(c->corrupt);
	out->daemons = LOAD(c->daemons);
	out->memory_bytes = LOAD(c->memory_bytes);
	out->updated_ms = LOAD(c->updated_ms);
	out->bytes = LOAD(c->bytes);
	out->reads = LOAD(c->reads);
}

enum error_code mountstats_load(const char *path, struct mountstats_values *out,
				struct error *err)
{
	struct mountstats *ms = map_existing(path, PROT_READ, O_RDONLY);

	if (!ms) {
		if (errno == ENOENT)
			return error_set(err, ERR_NOT_FOUND, "no mount stats at '%s'", path);
		if (errno == EINVAL)
			return error_set(err, ERR_INVALID,
					 "'%s' is not a mount stats file of version %d", path,
					 MOUNTSTATS_VERSION);
		return error_set(err, error_from_errno(errno), "open '%s': %s", path,
				 strerror(errno));
	}
	mountstats_get(ms, out);
	munmap(ms, sizeof(*ms));
	return ERR_OK;
}

/* --- rendering ------------------------------------------------------------ */

/* The volume label of a view, and one more pair when name is set. */
static void labels_of(struct metrics_buf *l, const struct mountstats_view *v, const char *name,
		      const char *value)
{
	l->len = 0;
	if (l->data)
		l->data[0] = '\0';
	if (v->volume)
		metrics_label_add(l, "volume", v->volume);
	if (name)
		metrics_label_add(l, name, value);
}

/* A family with one unlabelled (but for the volume) sample per view;
 * field is the offset of a uint64_t in struct mountstats_values. */
static void family(struct metrics_buf *b, struct metrics_buf *l, const char *name,
		   const char *help, const char *type, const struct mountstats_view *views, size_t n,
		   size_t field)
{
	metrics_render_family(b, name, help, type);
	for (size_t i = 0; i < n; i++) {
		labels_of(l, &views[i], NULL, NULL);
		metrics_render_sample(b, name, l,
				      *(const uint64_t *)((const char *)&views[i].v + field));
	}
}

/* A family with a sample per view and per named source. */
static void per_source(struct metrics_buf *b, struct metrics_buf *l, const char *name,
		       const char *help, const struct mountstats_view *views, size_t n,
		       size_t field)
{
	metrics_render_family(b, name, help, "counter");
	for (size_t i = 0; i < n; i++) {
		const uint64_t *vals = (const uint64_t *)((const char *)&views[i].v + field);

		for (unsigned s = 0; s < MOUNTSTATS_SOURCES; s++) {
			if (!views[i].v.sources[s][0])
				continue;
			labels_of(l, &views[i], "source", views[i].v.sources[s]);
			metrics_render_sample(b, name, l, vals[s]);
		}
	}
}

void mountstats_render(struct metrics_buf *b, const struct mountstats_view *views, size_t n)
{
	struct metrics_buf l = { 0 };

	if (n == 0)
		return;
	family(b, &l, "granary_fuse_reads_total",
	       "FUSE reads the daemon served (page cache hits never reach it), failed ones too",
	       "counter", views, n, offsetof(struct mountstats_values, reads));
	family(b, &l, "granary_fuse_read_bytes_total", "bytes the daemon's reads returned",
	       "counter", views, n, offsetof(struct mountstats_values, bytes));
	per_source(b, &l, "granary_fuse_source_reads_total",
		   "block pieces each source answered (local: the node's cache files; peer: the owner worker; store: the object store; cache: a standalone mount's own cache)",
		   views, n, offsetof(struct mountstats_values, source_blocks));
	per_source(b, &l, "granary_fuse_source_bytes_total", "bytes each source answered", views, n,
		   offsetof(struct mountstats_values, source_bytes));
	per_source(b, &l, "granary_fuse_fallbacks_total",
		   "failures of a source passed over for the next one", views, n,
		   offsetof(struct mountstats_values, fallbacks));
	metrics_render_family(b, "granary_fuse_read_errors_total",
			      "reads failed with EIO, by cause (deadline: no source in time; source: the last source failed; object_changed: changed since the snapshot)",
			      "counter");
	for (size_t i = 0; i < n; i++)
		for (unsigned c = 0; c < MOUNTSTATS_CAUSES; c++) {
			labels_of(&l, &views[i], "cause", cause_names[c]);
			metrics_render_sample(b, "granary_fuse_read_errors_total", &l,
					      views[i].v.errors[c]);
		}
	family(b, &l, "granary_fuse_changed_objects_total",
	       "open files that met an object changed in the store since the snapshot", "counter",
	       views, n, offsetof(struct mountstats_values, changed_objects));
	family(b, &l, "granary_fuse_corrupt_blocks_total",
	       "cached copies of blocks that failed their checksums (read again elsewhere)",
	       "counter", views, n, offsetof(struct mountstats_values, corrupt));
	metrics_render_family(b, "granary_fuse_read_seconds",
			      "time the daemon took to answer a FUSE read", "histogram");
	for (size_t i = 0; i < n; i++) {
		labels_of(&l, &views[i], NULL, NULL);
		metrics_render_histogram_sample(b, "granary_fuse_read_seconds", &l,
						mountstats_latency_bounds, MOUNTSTATS_LATENCY_BOUNDS,
						views[i].v.latency,
						(double)views[i].v.latency_sum_ns / 1e9);
	}
	family(b, &l, "granary_fuse_daemons_total",
	       "granary-fuse daemons that served the mount (1 + successors that took it over)",
	       "counter", views, n, offsetof(struct mountstats_values, daemons));
	family(b, &l, "granary_fuse_resident_memory_bytes",
	       "resident memory of the mount's daemon, as of its last tick (once a second)", "gauge",
	       views, n, offsetof(struct mountstats_values, memory_bytes));
	metrics_buf_release(&l);
}

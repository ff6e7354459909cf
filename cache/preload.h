/*
 * preload.h - warm-up jobs: fetch a dataset's blocks into the cache
 * before the training job reads them.
 *
 * A job names a dataset and either a list of objects (relative keys; their
 * size and ETag come from a HEAD each), a list of prefixes (relative; one
 * listing each, a prefix under another one listed once) or nothing,
 * meaning every object under the dataset's prefix (one listing). It then makes sure every block
 * is cached with fetch_warm, `parallelism` blocks at a time, so a preload
 * shares single flight and the fetch slots with the readers and never
 * holds blocks in memory the cache refuses (those are counted as skipped).
 *
 * A job given a placement (granary-meta's preloads: every worker runs one)
 * fetches only the blocks that rendezvous placement gives this worker, so
 * that the cluster reads each block from the store once and every block
 * lands on the worker the mounts ask for it. Once the listing is in, it
 * splits the blocks by the membership it is given (blocks_total: those
 * placed here; blocks_elsewhere: the others, never fetched here), and it
 * asks again as it hands each block out: a membership that changes while
 * the job runs moves the blocks not handed out yet (a block placed here
 * since is fetched, one placed elsewhere since is left to its new owner).
 * Blocks handed out before the change are the next job's (worker_meta.h
 * runs one after a membership that may place blocks here).
 *
 * Each job runs on its own thread plus its fetch threads; progress is read
 * with preload_get at any time. Finished jobs are kept for inspection (the
 * newest PRELOAD_KEEP_FINISHED). Thread-safe; one mutex guards the job list
 * and every job's counters.
 */
#ifndef GRANARY_CACHE_PRELOAD_H
#define GRANARY_CACHE_PRELOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/placement.h"
#include "cache/fetch.h"
#include "common/error.h"

#define PRELOAD_KEEP_FINISHED 64
#define PRELOAD_MAX_OBJECTS 100000  /* objects one request may name */
/* Jobs running at once: each holds a thread, its fetch threads and its
 * listing, and a token holder may ask for any number. */
#define PRELOAD_RUNNING_MAX 8

enum preload_state { PRELOAD_RUNNING = 0, PRELOAD_DONE, PRELOAD_FAILED };

/* "running", "done", "failed". */
const char *preload_state_name(enum preload_state s);

struct preload_status {
	uint64_t id;
	char dataset[BLOCK_DATASET_MAX + 1];
	enum preload_state state;
	uint64_t objects;
	/* total: the blocks to cache here (with a placement, those it gives
	 * this worker); done: cached now (present or fetched) */
	uint64_t blocks_done, blocks_total;
	uint64_t bytes_done, bytes_total;
	uint64_t blocks_fetched;              /* of blocks_done, those fetched by this job */
	uint64_t blocks_skipped;              /* the cache refused them */
	uint64_t blocks_elsewhere;            /* placed on another worker: not fetched here */
	uint64_t errors;                      /* blocks or objects that failed */
	char error[ERROR_MSG_MAX];            /* the first error, "" if none */
	/* The code of its failure, ERR_OK while none: the first error's,
	 * replaced by a later one's that may pass when the first would come
	 * again (preload_error_lasts), so that a job fails for good only when
	 * each of its errors would. ERR_CANCELLED for a job cancelled or
	 * stopped. */
	enum error_code code;
};

/* Sums over the running jobs, for the /metrics gauges. */
struct preload_totals {
	uint64_t running;
	uint64_t blocks_done, blocks_total, bytes_done, bytes_total;
};

struct preloader;

/* Which blocks a job fetches: those rendezvous placement gives to worker
 * self over members (the membership's ids, as block/placement.h). */
struct preload_placement {
	struct placement *members;  /* borrowed: must outlive the job */
	const char *self;           /* copied */
};

/*
 * parallelism >= 1: blocks fetched at once per job. lim bounds every job's
 * listing (store_list_all_limited; NULL = no bounds): past it the job
 * fails, its error naming the limit's setting (listing.max_pages,
 * listing.max_objects, listing.max_time), so that an endpoint whose
 * listing never ends, or lists more than a worker can hold, costs one job
 * a bounded time. Objects over STORE_OBJECT_MAX, or a total past 2^64
 * bytes, are refused the same way (they are not S3 listings).
 */
enum error_code preload_new(struct fetcher *f, unsigned parallelism,
			    const struct store_list_limits *lim, struct preloader **out,
			    struct error *err);
/* Stops running jobs after the blocks in progress and joins them. */
void preload_free(struct preloader *p);

/*
 * Starts a job. objects NULL (n 0) means the whole dataset. The dataset is
 * resolved now: ERR_NOT_FOUND "unknown dataset 'x'"; a bad object key is
 * ERR_INVALID before anything starts; with PRELOAD_RUNNING_MAX jobs
 * running, ERR_UNAVAILABLE (ask again when one has ended). *id identifies
 * the job (from 1).
 */
enum error_code preload_start(struct preloader *p, const char *dataset,
			      const char *const *objects, size_t n, uint64_t *id,
			      struct error *err);
/* As preload_start, for the objects under n prefixes (at most
 * BLOCK_PRELOAD_PREFIXES_MAX; 0: the whole dataset); a bad prefix is
 * ERR_INVALID (block_preload_prefix_check). placed: fetch only the blocks
 * it gives this worker (see the top); NULL: every block. A placement
 * without members or self is ERR_INVALID. */
enum error_code preload_start_under(struct preloader *p, const char *dataset,
				    const char *const *prefixes, size_t n,
				    const struct preload_placement *placed, uint64_t *id,
				    struct error *err);

/*
 * Cancels the running jobs of dataset (only job id when id is not 0) and
 * waits until they have ended: their blocks in progress (at most
 * parallelism each, one store fetch or listing page, or a few thousand
 * blocks of the split by placement) are finished first, so
 * that once this returns no block of those jobs is written any more. Call
 * it before the dataset is unregistered or replaced. A cancelled job
 * that had blocks left ends PRELOAD_FAILED with why as its error (say
 * what happened: "cancelled: dataset 'x' was removed"). Returns how many
 * jobs it cancelled. Not from a job's own thread.
 */
size_t preload_cancel(struct preloader *p, const char *dataset, uint64_t id, const char *why);

/*
 * Whether a job that failed with code (preload_status.code) would fail the
 * same way if it ran again over the same source: ERR_INVALID (an object no
 * client can ask for, one over 5 TiB, sizes past 2^64, a request the store
 * calls bad), ERR_PERMISSION and ERR_UNAUTHENTICATED (the store refuses
 * the worker's credentials), ERR_NO_SPACE (a listing past
 * listing.max_pages or listing.max_objects) and ERR_UNSUPPORTED. Every
 * other failure may pass: the store unreachable, busy or slow
 * (ERR_UNAVAILABLE, ERR_BUSY, ERR_TIMEOUT, listing.max_time included), an
 * object changed or removed since the listing (ERR_NOT_FOUND), a local
 * I/O error, a cancelled job.
 */
bool preload_error_lasts(enum error_code code);

/* Progress of job id; ERR_NOT_FOUND "unknown preload job 7". */
enum error_code preload_get(struct preloader *p, uint64_t id, struct preload_status *out,
			    struct error *err);

void preload_get_totals(struct preloader *p, struct preload_totals *out);

#endif

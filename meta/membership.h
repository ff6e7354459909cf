/*
 * membership.h - the live set of granary-worker nodes, from heartbeats.
 *
 * Every worker sends a heartbeat (id, address, capacity, used) each
 * interval. The first heartbeat of an id is a join; a worker silent for
 * expiry_ms expires (leaves). Clients compute block placement by rendezvous
 * hashing over the live set, so they need to know when it changes: the
 * membership version increases on every join, every leave and expiry,
 * and every change of a worker's address (placement depends on it), and
 * never otherwise (capacity and usage updates do not move blocks).
 *
 * One worker id, one process. Each worker process draws a random instance
 * at start and sends it with every heartbeat. A heartbeat for a live id
 * with another instance is the same place restarted when it comes from the
 * member's address (two processes cannot hold one address: the old one is
 * gone), and replaces it; from another address it is a second process
 * under that id (two pods of one node during a rolling update, a copy
 * started by hand) and is refused until the member leaves or expires, so
 * that the membership does not flip between the two addresses. A process
 * that stops says so (membership_leave) and is dropped at once; a heartbeat
 * of it answered after that (sent before, held up) is refused
 * (ERR_PRECONDITION) until the expiry, not taken as a join. Instance 0
 * is a worker that sends none: its heartbeats are taken as they come (the
 * last address wins), as before instances existed.
 *
 * The version starts at the wall-clock time in milliseconds at
 * membership_new (unless the options give one), so a restarted meta never
 * hands out a version a client saw before the restart.
 *
 * Expiry is checked lazily: every call first drops the workers whose last
 * heartbeat is older than expiry_ms, so answers are exact at the moment of
 * the call; membership_expire() lets a daemon do it on a timer too, for
 * timely log lines. Time comes from a clock function (monotonic
 * milliseconds) that tests replace.
 *
 * Thread-safe: one mutex guards the set. No gRPC here.
 */
#ifndef GRANARY_META_MEMBERSHIP_H
#define GRANARY_META_MEMBERSHIP_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define MEMBERSHIP_ID_MAX 253

struct membership;

struct membership_options {
	uint64_t interval_ms;      /* how often workers are told to report; > 0 */
	uint64_t expiry_ms;        /* silence after which a worker leaves; > interval_ms */
	uint64_t initial_version;  /* 0 = wall-clock milliseconds now */
	/* Monotonic milliseconds; NULL = retry_now_ms. */
	uint64_t (*clock)(void *arg);
	void *clock_arg;
};

struct membership_worker {
	char id[MEMBERSHIP_ID_MAX + 1];
	char address[272];         /* host:port of its block server */
	uint64_t capacity_bytes;
	uint64_t used_bytes;
	int64_t last_seen_unix_ms; /* wall clock of the last heartbeat */
};

/* ERR_INVALID when expiry_ms <= interval_ms or interval_ms is 0; ERR_NOMEM. */
enum error_code membership_new(const struct membership_options *opt, struct membership **out,
			       struct error *err);
void membership_free(struct membership *m);

/*
 * Records a heartbeat of the worker process instance (joins, or refreshes
 * the worker's last-seen time and figures). *version gets the membership
 * version after it. ERR_INVALID naming the field: worker_id (1-253 of
 * letters, digits, '.', '-', '_'), address (host:port, as
 * common/netaddr.h; not a unix socket: peers on other nodes use it),
 * used_bytes above capacity_bytes. ERR_EXISTS, changing nothing: the
 * address is another live worker's, or the id is another live instance's
 * at another address (the message names the live process and when this
 * one may join).
 */
enum error_code membership_heartbeat(struct membership *m, const char *worker_id,
				     const char *address, uint64_t instance,
				     uint64_t capacity_bytes, uint64_t used_bytes,
				     uint64_t *version, struct error *err);

/*
 * The process instance of worker_id is stopping: it leaves now (the version
 * steps) when it is the member's instance; otherwise (no such member, or
 * another process holds the id now) nothing changes. *version gets the
 * version after it. ERR_INVALID for instance 0: only a process that names
 * itself may leave.
 */
enum error_code membership_leave(struct membership *m, const char *worker_id, uint64_t instance,
				 uint64_t *version, struct error *err);

/*
 * The live workers sorted by id (bytewise), in a malloc'd array *out of *n
 * (free()), and the version they belong to. ERR_NOMEM.
 */
enum error_code membership_list(struct membership *m, struct membership_worker **out, size_t *n,
				uint64_t *version, struct error *err);

/* Drops expired workers now; returns how many left. */
size_t membership_expire(struct membership *m);

/* The current version (after dropping expired workers). */
uint64_t membership_version(struct membership *m);

/* The interval and expiry the options gave, for heartbeat replies. */
uint64_t membership_interval_ms(const struct membership *m);
uint64_t membership_expiry_ms(const struct membership *m);

/* What a worker's cache holds of one dataset, and its preload of it. */
struct membership_usage {
	const char *name;
	uint64_t bytes;
	const char *preload;        /* "", "running", "done", "failed" */
	uint64_t preload_done, preload_total;
};

/*
 * What worker_id's cache holds of each dataset, as its heartbeat said;
 * replaces what it said before and goes with the worker when it expires.
 * Strings are copied. ERR_NOT_FOUND for a worker that is not a member
 * (heartbeat first); ERR_NOMEM.
 */
enum error_code membership_set_usage(struct membership *m, const char *worker_id,
				     const struct membership_usage *u, size_t n,
				     struct error *err);

struct membership_cached {
	char worker[MEMBERSHIP_ID_MAX + 1];
	uint64_t bytes;
	char preload[16];           /* "" when the worker ran none */
	uint64_t preload_done, preload_total;
};

/* The bytes of dataset the live workers' caches hold, in all (returned)
 * and per worker (at most max into out, sorted by worker id; *n). */
uint64_t membership_cached(struct membership *m, const char *dataset,
			   struct membership_cached *out, size_t max, size_t *n);

#endif

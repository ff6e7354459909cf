/*
 * membership.c - live workers from heartbeats; a sorted array under one
 * mutex (a cluster has hundreds of nodes, not millions).
 */
#include "meta/membership.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/array.h"
#include "common/log.h"
#include "common/netaddr.h"
#include "common/retry.h"

struct usage {
	char *name;
	uint64_t bytes;
	char preload[16];
	uint64_t preload_done, preload_total;
};

struct member {
	struct membership_worker w;
	uint64_t instance;     /* its process; 0: the worker sends none */
	uint64_t last_seen_ms; /* monotonic, from the clock */
	struct usage *usage;   /* its cache's bytes per dataset */
	size_t nusage;
};

static void usage_free(struct usage *u, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(u[i].name);
	free(u);
}

/* Processes that left, remembered at once (struct membership.left). */
#define LEFT_MAX 256

struct membership {
	uint64_t interval_ms, expiry_ms;
	uint64_t (*clock)(void *arg);
	void *clock_arg;

	pthread_mutex_t mu;
	struct member *members; /* protected by mu: sorted by id */
	size_t n, cap;          /* protected by mu */
	uint64_t version;       /* protected by mu */
	/* A second process under a live id heartbeats every interval while
	 * it is refused: one line per TWIN_LOG_MS. */
	struct log_limiter twins;
	/* The processes that left last (membership_leave), each until
	 * expiry_ms after: a heartbeat of theirs still on its way (sent
	 * before the leave, answered after it) must not bring them back. */
	struct {
		uint64_t instance, until_ms;
	} left[LEFT_MAX];           /* protected by mu */
	unsigned left_next;         /* protected by mu */
};

#define TWIN_LOG_MS 10000

static uint64_t default_clock(void *arg)
{
	(void)arg;
	return retry_now_ms();
}

enum error_code membership_new(const struct membership_options *opt, struct membership **out,
			       struct error *err)
{
	struct membership *m;

	*out = NULL;
	if (!opt || opt->interval_ms == 0)
		return error_set(err, ERR_INVALID, "membership: heartbeat interval must be more than 0");
	if (opt->expiry_ms <= opt->interval_ms)
		return error_set(err, ERR_INVALID,
				 "membership: expiry (%llums) must be longer than the interval (%llums)",
				 (unsigned long long)opt->expiry_ms,
				 (unsigned long long)opt->interval_ms);
	m = calloc(1, sizeof(*m));
	if (!m)
		return error_set(err, ERR_NOMEM, "membership: out of memory");
	m->interval_ms = opt->interval_ms;
	m->expiry_ms = opt->expiry_ms;
	m->clock = opt->clock ? opt->clock : default_clock;
	m->clock_arg = opt->clock_arg;
	m->version = opt->initial_version ? opt->initial_version : (uint64_t)retry_wall_ms();
	pthread_mutex_init(&m->mu, NULL);
	log_limiter_init(&m->twins, TWIN_LOG_MS, NULL, NULL);
	*out = m;
	return ERR_OK;
}

void membership_free(struct membership *m)
{
	if (!m)
		return;
	pthread_mutex_destroy(&m->mu);
	log_limiter_release(&m->twins);
	for (size_t i = 0; i < m->n; i++)
		usage_free(m->members[i].usage, m->members[i].nusage);
	free(m->members);
	free(m);
}

/* Binary search; *pos is where id is or would go. Called with m->mu held. */
static bool find(const struct membership *m, const char *id, size_t *pos)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(m->members[mid].w.id, id);

		if (c == 0) {
			*pos = mid;
			return true;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*pos = lo;
	return false;
}

/* Called with m->mu held. */
static size_t expire_locked(struct membership *m, uint64_t now)
{
	size_t kept = 0, gone = 0;

	for (size_t i = 0; i < m->n; i++) {
		struct member *x = &m->members[i];

		if (now >= x->last_seen_ms && now - x->last_seen_ms >= m->expiry_ms) {
			log_warn("worker expired", LOG_S("worker", x->w.id),
				 LOG_S("address", x->w.address),
				 LOG_U("silent_ms", now - x->last_seen_ms));
			usage_free(x->usage, x->nusage);
			gone++;
			continue;
		}
		if (kept != i)
			m->members[kept] = *x;
		kept++;
	}
	m->n = kept;
	if (gone)
		m->version++;
	return gone;
}

static enum error_code check_worker(const char *id, const char *address, uint64_t capacity,
				   uint64_t used, struct error *err)
{
	struct netaddr na;
	size_t len = id ? strlen(id) : 0;

	if (len == 0 || len > MEMBERSHIP_ID_MAX)
		return error_set(err, ERR_INVALID, "field 'worker_id': must be 1 to %d characters",
				 MEMBERSHIP_ID_MAX);
	for (size_t i = 0; i < len; i++) {
		char c = id[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '_'))
			return error_set(err, ERR_INVALID,
					 "field 'worker_id' '%s': only letters, digits, '.', '-' and '_' are allowed",
					 id);
	}
	if (netaddr_parse(address, "field 'address'", &na, err) != ERR_OK)
		return ERR_INVALID;
	if (na.is_unix || strlen(address) >= sizeof(((struct membership_worker *)0)->address))
		return error_set(err, ERR_INVALID,
				 "field 'address' '%s': must be host:port, reachable from other nodes",
				 address);
	if (used > capacity)
		return error_set(err, ERR_INVALID,
				 "field 'used_bytes': %llu is more than capacity_bytes %llu",
				 (unsigned long long)used, (unsigned long long)capacity);
	return ERR_OK;
}

/* An instance as its messages and logs write it. */
static void instance_text(uint64_t instance, char out[17])
{
	snprintf(out, 17, "%016llx", (unsigned long long)instance);
}

/* A second process under x's id, at another address: refused while x
 * lives. Called with m->mu held. */
static enum error_code refuse_twin(struct membership *m, const struct member *x,
				   const char *address, uint64_t instance, struct error *err)
{
	char live[17], other[17];

	instance_text(x->instance, live);
	instance_text(instance, other);
	log_limited_warn(&m->twins, "heartbeat refused: the worker id is another live process's",
			 LOG_S("worker", x->w.id), LOG_S("address", address),
			 LOG_S("instance", other), LOG_S("holder_address", x->w.address),
			 LOG_S("holder_instance", live));
	return error_set(err, ERR_EXISTS,
			 "worker id '%s' is held by another live process at %s (instance %s); this one joins once that one leaves or stops heartbeating, within %g s",
			 x->w.id, x->w.address, live, (double)m->expiry_ms / 1000);
}

enum error_code membership_heartbeat(struct membership *m, const char *worker_id,
				     const char *address, uint64_t instance,
				     uint64_t capacity_bytes, uint64_t used_bytes,
				     uint64_t *version, struct error *err)
{
	struct membership_worker w;
	uint64_t now;
	size_t pos;

	if (check_worker(worker_id, address, capacity_bytes, used_bytes, err) != ERR_OK)
		return ERR_INVALID;
	memset(&w, 0, sizeof(w));
	snprintf(w.id, sizeof(w.id), "%s", worker_id);
	snprintf(w.address, sizeof(w.address), "%s", address);
	w.capacity_bytes = capacity_bytes;
	w.used_bytes = used_bytes;
	pthread_mutex_lock(&m->mu);
	now = m->clock(m->clock_arg);
	expire_locked(m, now);
	/* One address, one worker: a second id at a live worker's address
	 * would take blocks placed on it and send them to the other (a worker
	 * restarted at a dead one's address joins once that one expires). */
	for (size_t i = 0; i < m->n; i++) {
		if (strcmp(m->members[i].w.address, w.address) != 0 ||
		    strcmp(m->members[i].w.id, w.id) == 0)
			continue;
		log_warn("heartbeat refused: the address is another live worker's",
				 LOG_S("worker", w.id), LOG_S("address", w.address),
				 LOG_S("holder", m->members[i].w.id));
		error_set(err, ERR_EXISTS,
			  "heartbeat of '%s': address '%s' is live worker '%s''s; one address, one worker (it is free once that one expires)",
			  w.id, w.address, m->members[i].w.id);
		pthread_mutex_unlock(&m->mu);
		return ERR_EXISTS;
	}
	for (size_t i = 0; instance && i < LEFT_MAX; i++) {
		if (m->left[i].instance != instance || now >= m->left[i].until_ms)
			continue;
		pthread_mutex_unlock(&m->mu);
		return error_set(err, ERR_PRECONDITION,
				 "heartbeat of '%s': its process (instance %016llx) has left; one sent before it left is not taken",
				 w.id, (unsigned long long)instance);
	}
	if (find(m, w.id, &pos)) {
		struct member *x = &m->members[pos];
		bool moved = strcmp(x->w.address, w.address) != 0;

		/* Another process under this id: at the member's address it
		 * is the member restarted; elsewhere a second one, which
		 * would flip the membership between the two addresses. */
		if (instance && instance != x->instance) {
			if (moved) {
				enum error_code rc = refuse_twin(m, x, w.address, instance, err);

				pthread_mutex_unlock(&m->mu);
				return rc;
			}
			log_info("worker restarted", LOG_S("worker", w.id),
				 LOG_S("address", w.address));
		} else if (moved) {
			log_info("worker moved", LOG_S("worker", w.id), LOG_S("from", x->w.address),
				 LOG_S("to", w.address));
			m->version++;
		}
		x->w = w;
		x->instance = instance;
	} else {
		if (array_grow((void **)&m->members, &m->cap, m->n + 1, sizeof(*m->members)) < 0) {
			pthread_mutex_unlock(&m->mu);
			return error_set(err, ERR_NOMEM, "heartbeat of '%s': out of memory", w.id);
		}
		memmove(&m->members[pos + 1], &m->members[pos], (m->n - pos) * sizeof(*m->members));
		m->members[pos].w = w;
		m->members[pos].instance = instance;
		m->members[pos].usage = NULL;
		m->members[pos].nusage = 0;
		m->n++;
		m->version++;
		log_info("worker joined", LOG_S("worker", w.id), LOG_S("address", w.address),
			 LOG_U("capacity_bytes", w.capacity_bytes), LOG_U("workers", m->n));
	}
	m->members[pos].last_seen_ms = now;
	m->members[pos].w.last_seen_unix_ms = retry_wall_ms();
	if (version)
		*version = m->version;
	pthread_mutex_unlock(&m->mu);
	return ERR_OK;
}

enum error_code membership_leave(struct membership *m, const char *worker_id, uint64_t instance,
				 uint64_t *version, struct error *err)
{
	uint64_t now;
	size_t pos;

	if (!instance)
		return error_set(err, ERR_INVALID,
				 "field 'instance': a leaving heartbeat of '%s' must name its process (0 names none)",
				 worker_id);
	pthread_mutex_lock(&m->mu);
	now = m->clock(m->clock_arg);
	expire_locked(m, now);
	if (find(m, worker_id, &pos) && m->members[pos].instance == instance) {
		struct member *x = &m->members[pos];

		m->left[m->left_next].instance = instance;
		m->left[m->left_next].until_ms = now + m->expiry_ms;
		m->left_next = (m->left_next + 1) % LEFT_MAX;

		log_info("worker left", LOG_S("worker", x->w.id), LOG_S("address", x->w.address),
			 LOG_U("workers", m->n - 1));
		usage_free(x->usage, x->nusage);
		memmove(x, x + 1, (m->n - pos - 1) * sizeof(*x));
		m->n--;
		m->version++;
	} else {
		/* A process refused under a live id, or replaced since. */
		log_info("a process that is not the worker's member left; nothing changes",
			 LOG_S("worker", worker_id));
	}
	if (version)
		*version = m->version;
	pthread_mutex_unlock(&m->mu);
	return ERR_OK;
}

enum error_code membership_list(struct membership *m, struct membership_worker **out, size_t *n,
				uint64_t *version, struct error *err)
{
	struct membership_worker *list;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&m->mu);
	expire_locked(m, m->clock(m->clock_arg));
	list = malloc((m->n ? m->n : 1) * sizeof(*list));
	if (!list) {
		pthread_mutex_unlock(&m->mu);
		return error_set(err, ERR_NOMEM, "list workers: out of memory");
	}
	for (size_t i = 0; i < m->n; i++)
		list[i] = m->members[i].w;
	*n = m->n;
	if (version)
		*version = m->version;
	pthread_mutex_unlock(&m->mu);
	*out = list;
	return ERR_OK;
}

size_t membership_expire(struct membership *m)
{
	size_t gone;

	pthread_mutex_lock(&m->mu);
	gone = expire_locked(m, m->clock(m->clock_arg));
	pthread_mutex_unlock(&m->mu);
	return gone;
}

uint64_t membership_version(struct membership *m)
{
	uint64_t v;

	pthread_mutex_lock(&m->mu);
	expire_locked(m, m->clock(m->clock_arg));
	v = m->version;
	pthread_mutex_unlock(&m->mu);
	return v;
}

uint64_t membership_interval_ms(const struct membership *m)
{
	return m->interval_ms;
}

uint64_t membership_expiry_ms(const struct membership *m)
{
	return m->expiry_ms;
}

enum error_code membership_set_usage(struct membership *m, const char *worker_id,
				     const struct membership_usage *in, size_t n,
				     struct error *err)
{
	struct usage *u = n ? calloc(n, sizeof(*u)) : NULL;
	size_t pos;

	if (n && !u)
		return error_set(err, ERR_NOMEM, "usage of '%s': out of memory", worker_id);
	for (size_t i = 0; i < n; i++) {
		u[i].bytes = in[i].bytes;
		u[i].preload_done = in[i].preload_done;
		u[i].preload_total = in[i].preload_total;
		snprintf(u[i].preload, sizeof(u[i].preload), "%s", in[i].preload ? in[i].preload : "");
		if (!(u[i].name = strdup(in[i].name ? in[i].name : ""))) {
			usage_free(u, i);
			return error_set(err, ERR_NOMEM, "usage of '%s': out of memory", worker_id);
		}
	}
	pthread_mutex_lock(&m->mu);
	if (!find(m, worker_id, &pos)) {
		pthread_mutex_unlock(&m->mu);
		usage_free(u, n);
		return error_set(err, ERR_NOT_FOUND, "worker '%s' is not a member", worker_id);
	}
	usage_free(m->members[pos].usage, m->members[pos].nusage);
	m->members[pos].usage = u;
	m->members[pos].nusage = n;
	pthread_mutex_unlock(&m->mu);
	return ERR_OK;
}

uint64_t membership_cached(struct membership *m, const char *dataset,
			   struct membership_cached *out, size_t max, size_t *n)
{
	uint64_t total = 0;

	*n = 0;
	pthread_mutex_lock(&m->mu);
	expire_locked(m, m->clock(m->clock_arg));
	for (size_t i = 0; i < m->n; i++) {
		const struct member *x = &m->members[i];

		for (size_t j = 0; j < x->nusage; j++) {
			if (strcmp(x->usage[j].name, dataset) != 0)
				continue;
			total += x->usage[j].bytes;
			if (*n < max) {
				snprintf(out[*n].worker, sizeof(out[*n].worker), "%s", x->w.id);
				out[*n].bytes = x->usage[j].bytes;
				memcpy(out[*n].preload, x->usage[j].preload, sizeof(out[*n].preload));
				out[*n].preload_done = x->usage[j].preload_done;
				out[*n].preload_total = x->usage[j].preload_total;
				(*n)++;
			}
			break;
		}
	}
	pthread_mutex_unlock(&m->mu);
	return total;
}

/*
 * placement.c - rendezvous hashing over the worker membership.
 */
#include "block/placement.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct member {
	char *id;
	char *address;
	uint64_t seed;   /* XXH3-64 of the id: the worker's hash seed */
};

struct placement {
	pthread_rwlock_t lock;
	struct member *members; /* protected by lock */
	size_t n;               /* protected by lock */
	uint64_t version;       /* protected by lock */
};

enum error_code placement_new(struct placement **out, struct error *err)
{
	struct placement *p = calloc(1, sizeof(*p));

	*out = NULL;
	if (!p)
		return error_set(err, ERR_NOMEM, "placement: out of memory");
	pthread_rwlock_init(&p->lock, NULL);
	*out = p;
	return ERR_OK;
}

static void free_members(struct member *m, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(m[i].id);
		free(m[i].address);
	}
	free(m);
}

void placement_free(struct placement *p)
{
	if (!p)
		return;
	free_members(p->members, p->n);
	pthread_rwlock_destroy(&p->lock);
	free(p);
}

enum error_code placement_update(struct placement *p, const struct placement_worker *workers,
				 size_t n, uint64_t version, struct error *err)
{
	struct member *m = n ? calloc(n, sizeof(*m)) : NULL, *old;
	size_t old_n;

	if (n && !m)
		return error_set(err, ERR_NOMEM, "placement: out of memory");
	for (size_t i = 0; i < n; i++) {
		if (strlen(workers[i].address) >= PLACEMENT_ADDRESS_MAX) {
			free_members(m, n);
			return error_set(err, ERR_INVALID, "worker '%s': address too long", workers[i].id);
		}
		m[i].id = strdup(workers[i].id);
		m[i].address = strdup(workers[i].address);
		m[i].seed = XXH3_64bits(workers[i].id, strlen(workers[i].id));
		if (!m[i].id || !m[i].address) {
			free_members(m, n);
			return error_set(err, ERR_NOMEM, "placement: out of memory");
		}
	}
	pthread_rwlock_wrlock(&p->lock);
	old = p->members;
	old_n = p->n;
	p->members = m;
	p->n = n;
	p->version = version;
	pthread_rwlock_unlock(&p->lock);
	free_members(old, old_n);
	return ERR_OK;
}

enum error_code placement_owner(struct placement *p, const uint8_t hash[BLOCK_HASH_LEN],
				char *addr, char *id, size_t id_size)
{
	enum error_code rc = ERR_NOT_FOUND;
	uint64_t best = 0;
	size_t win = 0;

	pthread_rwlock_rdlock(&p->lock);
	for (size_t i = 0; i < p->n; i++) {
		uint64_t score = XXH3_64bits_withSeed(hash, BLOCK_HASH_LEN, p->members[i].seed);

		/* Ties (never in practice) go to the smaller id, so every
		 * client picks the same owner. */
		if (rc != ERR_OK || score > best ||
		    (score == best && strcmp(p->members[i].id, p->members[win].id) < 0)) {
			best = score;
			win = i;
			rc = ERR_OK;
		}
	}
	if (rc == ERR_OK) {
		snprintf(addr, PLACEMENT_ADDRESS_MAX, "%s", p->members[win].address);
		if (id)
			snprintf(id, id_size, "%s", p->members[win].id);
	}
	pthread_rwlock_unlock(&p->lock);
	return rc;
}

bool placement_has(struct placement *p, const char *id)
{
	bool found = false;

	pthread_rwlock_rdlock(&p->lock);
	for (size_t i = 0; i < p->n && !found; i++)
		found = strcmp(p->members[i].id, id) == 0;
	pthread_rwlock_unlock(&p->lock);
	return found;
}

bool placement_all_among(struct placement *p, const struct placement_worker *workers, size_t n)
{
	bool among = true;

	pthread_rwlock_rdlock(&p->lock);
	for (size_t j = 0; among && j < p->n; j++) {
		among = false;
		for (size_t i = 0; i < n && !among; i++)
			among = strcmp(p->members[j].id, workers[i].id) == 0;
	}
	pthread_rwlock_unlock(&p->lock);
	return among;
}

uint64_t placement_version(struct placement *p)
{
	uint64_t v;

	pthread_rwlock_rdlock(&p->lock);
	v = p->version;
	pthread_rwlock_unlock(&p->lock);
	return v;
}

size_t placement_count(struct placement *p)
{
	size_t n;

	pthread_rwlock_rdlock(&p->lock);
	n = p->n;
	pthread_rwlock_unlock(&p->lock);
	return n;
}

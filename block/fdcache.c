/*
 * fdcache.c - a bounded LRU of open, checked block files.
 */
#include "block/fdcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uthash.h>
#include <utlist.h>

#include "common/retry.h"

struct block_fdref {
	uint8_t hash[BLOCK_HASH_LEN];
	int fd;
	struct block_sums sums;       /* from the header, immutable */
	unsigned refs;                /* readers holding it; protected by c->mu */
	bool cached;                  /* in the table and the list; protected by c->mu */
	uint64_t used_ms, checked_ms; /* protected by c->mu */
	struct block_fdref *prev, *next; /* LRU (utlist), most recent first; protected by c->mu */
	UT_hash_handle hh;
};

struct block_fdcache {
	char *dir;
	unsigned capacity;
	uint64_t check_ms, idle_ms;
	bool direct;
	pthread_mutex_t mu;
	struct block_fdref *table;         /* by hash; protected by mu */
	struct block_fdref *lru;           /* most recent first; protected by mu */
	unsigned count;                    /* cached entries; protected by mu */
	struct block_fdcache_stats st;     /* protected by mu */
};

enum error_code block_fdcache_new(const struct block_fdcache_config *cfg,
				  struct block_fdcache **out, struct error *err)
{
	struct block_fdcache *c = calloc(1, sizeof(*c));

	*out = NULL;
	if (!c || !(c->dir = strdup(cfg->dir))) {
		free(c);
		return error_set(err, ERR_NOMEM, "block file cache: out of memory");
	}
	c->capacity = cfg->capacity ? cfg->capacity : BLOCK_FDCACHE_CAPACITY;
	c->check_ms = cfg->check_ms;
	c->idle_ms = cfg->idle_ms;
	c->direct = cfg->direct;
	pthread_mutex_init(&c->mu, NULL);
	*out = c;
	return ERR_OK;
}

static void entry_close(struct block_fdref *e)
{
	if (e->fd >= 0)
		close(e->fd);
	free(e);
}

void block_fdcache_free(struct block_fdcache *c)
{
	struct block_fdref *e, *tmp;

	if (!c)
		return;
	HASH_ITER(hh, c->table, e, tmp) {
		HASH_DEL(c->table, e);
		entry_close(e);
	}
	pthread_mutex_destroy(&c->mu);
	free(c->dir);
	free(c);
}

/* The least recently used entry (utlist keeps it as the head's prev). */
static struct block_fdref *lru_tail(const struct block_fdcache *c)
{
	return c->lru ? c->lru->prev : NULL;
}

/* Takes e out of the table (c->mu held); true when nothing holds it and
 * the caller must close it. */
static bool uncache_locked(struct block_fdcache *c, struct block_fdref *e)
{
	if (e->cached) {
		HASH_DEL(c->table, e);
		DL_DELETE(c->lru, e);
		e->next = NULL;
		e->cached = false;
		c->count--;
	}
	return e->refs == 0;
}

/* Takes out the idle entries past idle_ms, oldest first, onto *closing
 * (c->mu held). */
static void sweep_locked(struct block_fdcache *c, uint64_t now, struct block_fdref **closing)
{
	struct block_fdref *e;

	while (c->idle_ms && (e = lru_tail(c)) && e->refs == 0 && now - e->used_ms >= c->idle_ms) {
		uncache_locked(c, e);
		e->next = *closing;
		*closing = e;
	}
}

static void close_all(struct block_fdref *closing)
{
	while (closing) {
		struct block_fdref *next = closing->next;

		entry_close(closing);
		closing = next;
	}
}

/* Whether e's file is still linked in the directory: an evicted or
 * replaced block's is not (fdcache.h). */
static bool still_linked(const struct block_fdref *e)
{
	struct stat st;

	return fstat(e->fd, &st) == 0 && st.st_nlink > 0;
}

enum error_code block_fdcache_take(struct block_fdcache *c, const struct block_key *key,
				   const uint8_t hash[BLOCK_HASH_LEN], struct block_fdref **ref,
				   struct error *err)
{
	struct block_fdref *e = NULL, *made = NULL, *closing = NULL;
	uint64_t now;
	enum error_code rc;
	bool check, drop;

	*ref = NULL;
	pthread_mutex_lock(&c->mu);
	/* Read under the lock, as every used_ms and checked_ms stamp is:
	 * none is then later than now and the unsigned differences below
	 * never wrap (a clock read before the lock could precede another
	 * thread's put, and close the entry it had just used). */
	now = retry_now_ms();
	sweep_locked(c, now, &closing);
	HASH_FIND(hh, c->table, hash, BLOCK_HASH_LEN, e);
	if (e) {
		e->refs++;
		e->used_ms = now;
		DL_DELETE(c->lru, e);
		DL_PREPEND(c->lru, e);
		check = !c->check_ms || now - e->checked_ms >= c->check_ms;
		if (check)
			e->checked_ms = now;
		c->st.hits++;
	}
	pthread_mutex_unlock(&c->mu);
	close_all(closing);
	closing = NULL;
	if (e && (!check || still_linked(e))) {
		*ref = e;
		return ERR_OK;
	}
	if (e) {
		/* Evicted or replaced since it was opened: whatever the path
		 * holds now is the block, or nothing is. */
		pthread_mutex_lock(&c->mu);
		c->st.reopened++;
		e->refs--;
		drop = uncache_locked(c, e);
		pthread_mutex_unlock(&c->mu);
		if (drop)
			entry_close(e);
	}

	made = calloc(1, sizeof(*made));
	if (!made)
		return error_set(err, ERR_NOMEM, "block file cache: out of memory");
	rc = block_file_open_hashed(c->dir, key, hash, &made->fd, &made->sums, err);
	if (rc != ERR_OK) {
		free(made);
		return rc;
	}
	if (c->direct)
		block_file_read_direct(made->fd, made->sums.data_len);
	memcpy(made->hash, hash, BLOCK_HASH_LEN);
	made->refs = 1;
	made->used_ms = made->checked_ms = now;

	pthread_mutex_lock(&c->mu);
	c->st.opens++;
	HASH_FIND(hh, c->table, hash, BLOCK_HASH_LEN, e);
	if (e) {
		/* another reader opened it meanwhile: keep one descriptor */
		e->refs++;
		e->used_ms = now;
		pthread_mutex_unlock(&c->mu);
		entry_close(made);
		*ref = e;
		return ERR_OK;
	}
	if (c->count >= c->capacity) {
		struct block_fdref *victim = lru_tail(c);

		while (victim && victim->refs > 0)
			victim = victim == c->lru ? NULL : victim->prev;
		if (victim) {
			uncache_locked(c, victim);
			victim->next = closing;
			closing = victim;
			c->st.evictions++;
		}
	}
	/* Full of entries in use: this one serves its read and is closed
	 * at put, so the bound holds. */
	if (c->count < c->capacity) {
		HASH_ADD(hh, c->table, hash, BLOCK_HASH_LEN, made);
		DL_PREPEND(c->lru, made);
		made->cached = true;
		c->count++;
	}
	pthread_mutex_unlock(&c->mu);
	close_all(closing);
	*ref = made;
	return ERR_OK;
}

int block_fdref_fd(const struct block_fdref *ref)
{
	return ref->fd;
}

const struct block_sums *block_fdref_sums(const struct block_fdref *ref)
{
	return &ref->sums;
}

void block_fdcache_put(struct block_fdcache *c, struct block_fdref *ref, bool bad)
{
	bool drop;

	if (!ref)
		return;
	pthread_mutex_lock(&c->mu);
	ref->refs--;
	ref->used_ms = retry_now_ms();
	drop = bad || !ref->cached ? uncache_locked(c, ref) : false;
	pthread_mutex_unlock(&c->mu);
	if (drop)
		entry_close(ref);
}

void block_fdcache_sweep(struct block_fdcache *c)
{
	struct block_fdref *closing = NULL;

	pthread_mutex_lock(&c->mu);
	sweep_locked(c, retry_now_ms(), &closing);
	pthread_mutex_unlock(&c->mu);
	close_all(closing);
}

void block_fdcache_get_stats(struct block_fdcache *c, struct block_fdcache_stats *out)
{
	pthread_mutex_lock(&c->mu);
	*out = c->st;
	out->open_fds = c->count;
	pthread_mutex_unlock(&c->mu);
}

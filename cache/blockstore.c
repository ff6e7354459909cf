/*
 * blockstore.c - block files under DIR/blocks, an in-memory index (uthash
 * keyed by the 16-byte block hash), two LRU lists and TinyLFU admission;
 * the rebuild at open and the writers are in blockstore_rebuild.c and
 * blockstore_write.c (see blockstore_impl.h).
 *
 * An entry moves through three states, always under bs->mu:
 *   WRITING  reserved by write_begin. It is in the index only so that a
 *            second writer of the same block gets ERR_EXISTS; get misses.
 *   LIVE     committed: in the index and in bs->lru or bs->pinned.
 *   DYING    chosen for removal (eviction, drop, failed verify). It stays
 *            in the index until its file is unlinked, outside the mutex:
 *            were it gone from the index first, a new writer of the same
 *            block could rename its file into place just before that unlink
 *            and lose it.
 * An entry that refs still hold outlives the index and is freed at the last
 * put. Pinned blocks live on their own list, so that looking for victims
 * never walks over them.
 *
 * Space: used counts the files of LIVE entries, reserved the reservations
 * of writers; victims leave used when they turn DYING, and write_begin
 * unlinks them before it returns, so the bytes on disk stay within
 * used + reserved <= capacity.
 */
#include "cache/blockstore_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/retry.h"

#define DEFAULT_BLOCK_SIZE (4u << 20)
/* One warning per interval for blocks that fail their checksums. */
#define CORRUPT_LOG_MS 10000

/* --- datasets; all *_locked under bs->mu --- */

static struct dataset *dataset_find_locked(struct blockstore *bs, const char *name, size_t len)
{
	struct dataset *ds = NULL;

	HASH_FIND(hh, bs->datasets, name, len, ds);
	return ds;
}

struct dataset *blockstore_dataset_get_locked(struct blockstore *bs, const char *name, size_t len)
{
	struct dataset *ds = dataset_find_locked(bs, name, len);

	if (ds)
		return ds;
	ds = calloc(1, sizeof(*ds));
	if (!ds)
		return NULL;
	ds->name = strndup(name, len);
	if (!ds->name)
		goto fail;
	ds->policy = BLOCKSTORE_LRU;
	HASH_ADD_KEYPTR(hh, bs->datasets, ds->name, len, ds);
	if (!ds->hh.tbl)
		goto fail;
	return ds;
fail:
	free(ds->name);
	free(ds);
	return NULL;
}

/* Removes the files of the dying entries of chain, then takes them out of
 * the index, BLOCKSTORE_LOCK_SLICE at a time, so that a read waits behind
 * a slice of a long chain and not all of it (a sweep of 100,000 blocks held
 * the lock for 6 ms listing them, 6 killing half and more taking those
 * out of the index: bench/blockstore_rebuild.c --sweep). */
void blockstore_remove_dying(struct blockstore *bs, struct entry *chain)
{
	char rel[BLOCK_REL_PATH_LEN];

	while (chain) {
		struct entry *e = chain;
		unsigned k = 0;

		for (; e && k < BLOCKSTORE_LOCK_SLICE; e = e->next, k++) {
			block_file_rel_path(e->hash, rel);
			if (unlinkat(bs->blocks_fd, rel, 0) < 0 && errno != ENOENT) {
				int saved = errno;

				log_warn("remove cached block failed", LOG_S("dir", bs->dir),
					 LOG_S("block", rel), LOG_S("cause", strerror(saved)));
			}
		}
		pthread_mutex_lock(&bs->mu);
		while (k-- > 0) {
			e = chain;
			chain = e->next;
			e->next = NULL;
			if (index_remove_locked(bs, e))
				free(e);
		}
		pthread_mutex_unlock(&bs->mu);
	}
}

/* --- open --- */

/*
 * One process owns a cache directory: the start-up cleanup of tmp/ would
 * remove another owner's blocks in flight, and two owners would each fill
 * the same disk up to their capacity. A flock on DIR/.lock, held until
 * blockstore_free, marks the owner; the kernel drops it when the process
 * dies, so a crash leaves no stale lock. flock locks belong to the open
 * file description: a second open in the same process is refused too.
 */
static enum error_code lock_dir(struct blockstore *bs, int dir_fd, struct error *err)
{
	int saved;

	bs->lock_fd = openat(dir_fd, BLOCKSTORE_LOCK_FILE,
			     O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, BLOCKSTORE_FILE_MODE);
	if (bs->lock_fd < 0) {
		saved = errno;
		return error_set(err, error_from_errno(saved), "open block store '%s': '%s/%s': %s",
				 bs->dir, bs->dir, BLOCKSTORE_LOCK_FILE, strerror(saved));
	}
	if (flock(bs->lock_fd, LOCK_EX | LOCK_NB) == 0) {
		struct error id_err;

		/* Without an id the store works; mounts just get the bytes. */
		if (block_dir_id_ensure(bs->lock_fd, bs->dir_id, &id_err) != ERR_OK) {
			bs->dir_id[0] = '\0';
			log_warn("cache directory has no id; the node's mounts get blocks over HTTP",
				 LOG_S("dir", bs->dir), LOG_S("cause", id_err.msg));
		}
		return ERR_OK;
	}
	saved = errno;
	if (saved == EWOULDBLOCK)
		return error_set(err, ERR_UNAVAILABLE,
				 "open block store '%s': another process owns this cache directory "
				 "(a granary-worker or a standalone granary-fuse): give this one its "
				 "own cache.dir, or stop the other",
				 bs->dir);
	return error_set(err, error_from_errno(saved), "open block store '%s': lock '%s/%s': %s",
			 bs->dir, bs->dir, BLOCKSTORE_LOCK_FILE, strerror(saved));
}

const char *blockstore_dir_id(const struct blockstore *bs)
{
	return bs->dir_id;
}

/*
 * The cached blocks are datasets' bytes, for the owner alone (the worker
 * and the node's mounts run as one user): the store's own subdirectory
 * name (blocks/, tmp/) made open before (by an older release, whose files
 * were 0644) is closed to others, which keeps them from every file below.
 * cache.dir itself is left as it is: it may be a directory others use
 * (a tmpfs, a disk's mount point). Only the owner's own subdirectory is
 * changed; another's is left as its owner set it, with a warning.
 */
static void make_private(struct blockstore *bs, int fd, const char *name)
{
	struct stat sb;
	char was[8];

	if (fstat(fd, &sb) != 0 || (sb.st_mode & 077) == 0)
		return;
	snprintf(was, sizeof(was), "%04o", (unsigned)(sb.st_mode & 07777));
	if (sb.st_uid != geteuid() || fchmod(fd, sb.st_mode & 07700) != 0) {
		log_warn("a cache directory is open to other users; its blocks are readable by them",
			 LOG_S("dir", bs->dir), LOG_S("subdir", name), LOG_S("mode", was));
		return;
	}
	log_info("cache directory closed to other users", LOG_S("dir", bs->dir),
		 LOG_S("subdir", name), LOG_S("mode_was", was));
}

static enum error_code open_subdir(struct blockstore *bs, int dir_fd, const char *name, int *out,
				   struct error *err)
{
	int saved = 0;

	if (mkdirat(dir_fd, name, BLOCKSTORE_DIR_MODE) < 0 && errno != EEXIST)
		goto fail;
	*out = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*out < 0)
		goto fail;
	make_private(bs, *out, name);
	return ERR_OK;
fail:
	saved = errno;
	return error_set(err, error_from_errno(saved), "open block store '%s': '%s/%s': %s",
			 bs->dir, bs->dir, name, strerror(saved));
}

enum error_code blockstore_open(const struct blockstore_config *cfg, struct blockstore **out,
				struct error *err)
{
	struct blockstore *bs = NULL;
	double t0;
	uint32_t block_size = 0;
	int dir_fd = -1;
	int saved = 0;
	enum error_code rc = ERR_OK;

	*out = NULL;
	t0 = retry_now_s();
	if (!cfg || !cfg->dir || !*cfg->dir)
		return error_set(err, ERR_INVALID, "open block store: no directory given");
	if (cfg->capacity < disk_size(0))
		return error_set(err, ERR_INVALID,
				 "open block store '%s': capacity %llu is below one block file (%llu bytes)",
				 cfg->dir, (unsigned long long)cfg->capacity,
				 (unsigned long long)disk_size(0));
	bs = calloc(1, sizeof(*bs));
	if (!bs)
		return error_set(err, ERR_NOMEM, "open block store '%s': out of memory", cfg->dir);
	bs->lock_fd = -1;
	bs->blocks_fd = -1;
	bs->tmp_fd = -1;
	bs->capacity = cfg->capacity;
	atomic_init(&bs->direct_write, cfg->direct_write);
	bs->direct_write_min = cfg->direct_write_min;
	bs->direct_read = cfg->direct_read;
	bs->st.capacity = cfg->capacity;
	atomic_init(&bs->tmp_seq, 0);
	pthread_mutex_init(&bs->mu, NULL);
	log_limiter_init(&bs->corrupt_log, CORRUPT_LOG_MS, NULL, NULL);
	bs->dir = strdup(cfg->dir);
	block_size = cfg->block_size ? cfg->block_size : DEFAULT_BLOCK_SIZE;
	bs->block_file = disk_size(block_size);
	bs->sketch = sketch_new(cfg->capacity / disk_size(block_size));
	if (!bs->dir || !bs->sketch) {
		rc = error_set(err, ERR_NOMEM, "open block store '%s': out of memory", cfg->dir);
		goto fail;
	}
	rc = fileio_mkdirs(bs->dir, BLOCKSTORE_DIR_MODE, err);
	if (rc != ERR_OK) {
		error_wrap(err, "open block store '%s'", bs->dir);
		goto fail;
	}
	dir_fd = open(bs->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0) {
		saved = errno;
		rc = error_set(err, error_from_errno(saved), "open block store '%s': %s", bs->dir,
			       strerror(saved));
		goto fail;
	}
	rc = lock_dir(bs, dir_fd, err);
	if (rc != ERR_OK)
		goto fail;
	rc = open_subdir(bs, dir_fd, "blocks", &bs->blocks_fd, err);
	if (rc != ERR_OK)
		goto fail;
	rc = open_subdir(bs, dir_fd, "tmp", &bs->tmp_fd, err);
	if (rc != ERR_OK)
		goto fail;
	close(dir_fd);
	dir_fd = -1;
	rc = blockstore_clear_tmp(bs, err);
	if (rc != ERR_OK)
		goto fail;
	rc = blockstore_rebuild_index(bs, err);
	if (rc != ERR_OK)
		goto fail;
	log_info("block store opened", LOG_S("dir", bs->dir), LOG_U("blocks", bs->st.blocks),
		 LOG_U("used", bs->used), LOG_U("capacity", bs->capacity),
		 LOG_U("removed_bad", bs->st.corrupt), LOG_U("evicted", bs->st.evictions),
		 LOG_F("seconds", retry_now_s() - t0));
	*out = bs;
	return ERR_OK;
fail:
	if (dir_fd >= 0)
		close(dir_fd);
	blockstore_free(bs);
	return rc;
}

void blockstore_free(struct blockstore *bs)
{
	struct entry *e = NULL, *etmp = NULL;
	struct dataset *ds = NULL, *dtmp = NULL;

	if (!bs)
		return;
	HASH_ITER(hh, bs->index, e, etmp) {
		HASH_DEL(bs->index, e);
		if (e->fd >= 0)
			close(e->fd);
		free(e);
	}
	HASH_ITER(hh, bs->datasets, ds, dtmp) {
		HASH_DEL(bs->datasets, ds);
		free(ds->name);
		free(ds);
	}
	sketch_free(bs->sketch);
	for (unsigned i = 0; i < bs->nspare; i++)
		free(bs->spare[i]);
	if (bs->blocks_fd >= 0)
		close(bs->blocks_fd);
	if (bs->tmp_fd >= 0)
		close(bs->tmp_fd);
	if (bs->lock_fd >= 0)
		close(bs->lock_fd); /* releases the directory */
	log_limiter_release(&bs->corrupt_log);
	pthread_mutex_destroy(&bs->mu);
	free(bs->dir);
	free(bs);
}

/* Moves the dataset's LIVE blocks between bs->lru and bs->pinned. */
static void dataset_pin_locked(struct blockstore *bs, struct dataset *ds, bool pin)
{
	struct lru *from = pin ? &bs->lru : &bs->pinned;
	struct lru *to = pin ? &bs->pinned : &bs->lru;

	if (ds->pin == pin)
		return;
	/* Tail to head, pushing at the head: the moved blocks keep their
	 * order among themselves and count as recently used. */
	for (struct entry *e = from->tail, *prev = NULL; e; e = prev) {
		prev = e->prev;
		if (e->ds != ds)
			continue;
		lru_remove(from, e);
		lru_push_head(to, e);
	}
	ds->pin = pin;
}

enum error_code blockstore_set_dataset(struct blockstore *bs, const char *dataset,
				       enum blockstore_policy policy, bool pin, struct error *err)
{
	struct dataset *ds = NULL;
	enum error_code rc = check_dataset_name(dataset, "set dataset", err);

	if (rc != ERR_OK)
		return rc;
	if (policy != BLOCKSTORE_LRU && policy != BLOCKSTORE_SCAN_RESISTANT)
		return error_set(err, ERR_INVALID, "set dataset '%s': unknown policy %d", dataset,
				 (int)policy);
	pthread_mutex_lock(&bs->mu);
	ds = blockstore_dataset_get_locked(bs, dataset, strlen(dataset));
	if (!ds) {
		pthread_mutex_unlock(&bs->mu);
		return error_set(err, ERR_NOMEM, "set dataset '%s': out of memory", dataset);
	}
	ds->policy = policy;
	dataset_pin_locked(bs, ds, pin);
	pthread_mutex_unlock(&bs->mu);
	return ERR_OK;
}

/*
 * Where a walk of the LRU in slices goes on after one: cursor, the entry
 * it stopped at, held across the release of the lock (cursor->refs taken
 * by the caller, given back here), while it is still a live entry of the
 * LRU; NULL when it left it (evicted, dropped, its dataset pinned) and the
 * walk stops there. A read meanwhile moves it to the LRU's head, and the
 * walk ends early too: blockstore_drop_unless leaves the blocks it did
 * not judge until evicted or the next sweep, a dataset's removal walks
 * again. The last reference given back frees it as blockstore_ref_put
 * would, here under the lock (a descriptor a reader opened meanwhile is
 * closed: a read-only regular file's close does not wait).
 */
static struct entry *sweep_resume_locked(struct blockstore *bs, struct entry *cursor)
{
	if (--cursor->refs == 0) {
		if (cursor->fd >= 0)
			close(cursor->fd);
		cursor->fd = -1;
		if (!cursor->in_index) {
			free(cursor);
			return NULL;
		}
	}
	if (cursor->state == ENTRY_LIVE && entry_list_locked(bs, cursor) == &bs->lru)
		return cursor;
	return NULL;
}

/*
 * Kills the blocks of ds that nothing holds, then removes their files, a
 * slice of the LRU (BLOCKSTORE_LOCK_SLICE entries) at a time: the walk
 * goes on from the entry it stopped at, held across the release of the
 * lock. Where that entry may have moved meanwhile (its neighbour towards
 * the tail is another: read, so now at the head, or the neighbour went)
 * and the walk dropped something, another walk follows, so that a read
 * of another dataset's block does not leave blocks of ds behind. Called
 * with bs->mu held and ds unpinned, returns with it released; how many.
 */
static uint64_t drop_dataset_locked(struct blockstore *bs, struct dataset *ds)
{
	uint64_t count = 0, pass;
	bool moved;

	do {
		struct entry *e = bs->lru.tail;

		pass = 0;
		moved = false;
		while (e) {
			struct entry *chain = NULL, *cursor, *behind;

			for (unsigned k = 0; e && k < BLOCKSTORE_LOCK_SLICE; k++) {
				struct entry *prev = e->prev;

				if (e->ds == ds && e->refs == 0) {
					entry_kill_locked(bs, e);
					e->next = chain;
					chain = e;
					pass++;
				}
				e = prev;
			}
			cursor = e;
			behind = cursor ? cursor->next : NULL;
			if (cursor)
				cursor->refs++;
			pthread_mutex_unlock(&bs->mu);
			if (chain)
				blockstore_remove_dying(bs, chain);
			pthread_mutex_lock(&bs->mu);
			if (cursor && cursor->next != behind)
				moved = true;
			e = cursor ? sweep_resume_locked(bs, cursor) : NULL;
			if (cursor && !e)
				moved = true;
		}
		count += pass;
	} while (moved && pass > 0);
	pthread_mutex_unlock(&bs->mu);
	return count;
}

uint64_t blockstore_drop_dataset(struct blockstore *bs, const char *dataset)
{
	struct dataset *ds;

	if (!dataset)
		return 0;
	pthread_mutex_lock(&bs->mu);
	ds = dataset_find_locked(bs, dataset, strlen(dataset));
	if (!ds) {
		pthread_mutex_unlock(&bs->mu);
		return 0;
	}
	/* The dataset is gone: the blocks a request still holds, and any
	 * written after this, must stay evictable, or nothing could ever
	 * remove them. A new definition pins again (blockstore_set_dataset). */
	dataset_pin_locked(bs, ds, false);
	return drop_dataset_locked(bs, ds);
}

/* A block the sweep of blockstore_drop_unless looks at: its dataset lives
 * as long as the store, so its name may be read without the lock. */
struct sweep_block {
	uint8_t hash[BLOCK_HASH_LEN];
	struct dataset *ds;
	bool drop;
};

/*
 * A slice at a time, LRU end first, so that the store's lock is held for
 * neither keep (placing a block costs a hash per member) nor the whole
 * pass (a cache holds millions of blocks): up to BLOCKSTORE_LOCK_SLICE
 * unpinned blocks nothing holds are listed under the lock, keep judges
 * them without it, and those to drop are killed under the lock again if
 * they are still there, live, unpinned and not held, then removed.
 */
uint64_t blockstore_drop_unless(struct blockstore *bs, blockstore_keep_fn keep, void *arg)
{
	struct sweep_block *b = malloc(BLOCKSTORE_LOCK_SLICE * sizeof(*b));
	struct entry *e;
	uint64_t count = 0;

	if (!b)
		return 0; /* out of memory: the blocks stay until the next sweep */
	pthread_mutex_lock(&bs->mu);
	e = bs->lru.tail;
	while (e) {
		struct entry *chain = NULL, *cursor;
		size_t n = 0;

		for (; e && n < BLOCKSTORE_LOCK_SLICE; e = e->prev) {
			if (e->refs > 0)
				continue;
			memcpy(b[n].hash, e->hash, BLOCK_HASH_LEN);
			b[n++].ds = e->ds;
		}
		cursor = e;
		if (cursor)
			cursor->refs++;
		pthread_mutex_unlock(&bs->mu);
		for (size_t i = 0; i < n; i++)
			b[i].drop = !keep(b[i].ds->name, b[i].hash, arg);
		pthread_mutex_lock(&bs->mu);
		for (size_t i = 0; i < n; i++) {
			if (!b[i].drop)
				continue;
			HASH_FIND(hh, bs->index, b[i].hash, BLOCK_HASH_LEN, e);
			if (!e || e->ds != b[i].ds || e->state != ENTRY_LIVE || e->refs > 0 ||
			    entry_list_locked(bs, e) != &bs->lru)
				continue;
			entry_kill_locked(bs, e);
			e->next = chain;
			chain = e;
			count++;
			bs->st.unowned++;
		}
		if (chain) {
			pthread_mutex_unlock(&bs->mu);
			blockstore_remove_dying(bs, chain);
			pthread_mutex_lock(&bs->mu);
		}
		e = cursor ? sweep_resume_locked(bs, cursor) : NULL;
	}
	pthread_mutex_unlock(&bs->mu);
	free(b);
	return count;
}

/* --- lookups and refs --- */

enum error_code blockstore_get(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN],
			       struct blockstore_ref **ref)
{
	return blockstore_lookup(bs, hash, true, ref);
}

enum error_code blockstore_lookup(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN],
				  bool access, struct blockstore_ref **ref)
{
	char rel[BLOCK_REL_PATH_LEN];
	struct entry *e = NULL;
	int fd = -1;
	int saved = 0;
	bool free_it = false;

	*ref = NULL;
	pthread_mutex_lock(&bs->mu);
	if (access)
		sketch_increment(bs->sketch, hash);
	HASH_FIND(hh, bs->index, hash, BLOCK_HASH_LEN, e);
	if (!e || e->state != ENTRY_LIVE) {
		if (access)
			bs->st.misses++;
		pthread_mutex_unlock(&bs->mu);
		return ERR_NOT_FOUND;
	}
	if (access) {
		lru_remove(entry_list_locked(bs, e), e);
		lru_push_head(entry_list_locked(bs, e), e);
	}
	e->refs++; /* from here on it cannot be evicted */
	if (e->fd >= 0) {
		if (access)
			bs->st.hits++;
		pthread_mutex_unlock(&bs->mu);
		*ref = &e->ref;
		return ERR_OK;
	}
	pthread_mutex_unlock(&bs->mu);

	block_file_rel_path(e->hash, rel);
	fd = block_file_open_read(bs->blocks_fd, rel, 0);
	saved = errno;
	if (fd >= 0 && !(bs->direct_read && block_file_read_direct(fd, e->data_len)))
		block_file_read_advice(fd);

	pthread_mutex_lock(&bs->mu);
	if (fd < 0) {
		e->refs--;
		bs->st.misses++;
		/* Gone behind our back (an operator cleaning up): forget it. No
		 * unlink is needed, so it can leave the index at once. */
		if (saved == ENOENT && e->state == ENTRY_LIVE && e->refs == 0) {
			entry_kill_locked(bs, e);
			free_it = index_remove_locked(bs, e);
		}
		pthread_mutex_unlock(&bs->mu);
		if (free_it)
			free(e);
		log_warn("open cached block failed", LOG_S("dir", bs->dir), LOG_S("block", rel),
			 LOG_S("cause", strerror(saved)));
		return saved == ENOENT ? ERR_NOT_FOUND : ERR_IO;
	}
	/* Another reader may have opened it meanwhile: keep one descriptor. */
	if (e->fd < 0) {
		e->fd = fd;
		fd = -1;
	}
	bs->st.hits++;
	pthread_mutex_unlock(&bs->mu);
	if (fd >= 0)
		close(fd);
	*ref = &e->ref;
	return ERR_OK;
}

bool blockstore_has(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN])
{
	struct entry *e = NULL;
	bool live;

	pthread_mutex_lock(&bs->mu);
	HASH_FIND(hh, bs->index, hash, BLOCK_HASH_LEN, e);
	live = e && e->state == ENTRY_LIVE;
	pthread_mutex_unlock(&bs->mu);
	return live;
}

bool blockstore_touch(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN])
{
	struct entry *e = NULL;
	bool live;

	pthread_mutex_lock(&bs->mu);
	sketch_increment(bs->sketch, hash);
	HASH_FIND(hh, bs->index, hash, BLOCK_HASH_LEN, e);
	live = e && e->state == ENTRY_LIVE;
	if (live) {
		lru_remove(entry_list_locked(bs, e), e);
		lru_push_head(entry_list_locked(bs, e), e);
		bs->st.hits++;
	}
	pthread_mutex_unlock(&bs->mu);
	return live;
}

int blockstore_ref_fd(const struct blockstore_ref *ref)
{
	/* Set before get returned the ref and unchanged until the last put. */
	return ref->e->fd;
}

const uint8_t *blockstore_ref_hash(const struct blockstore_ref *ref)
{
	return ref->e->hash;
}

void blockstore_drop_pages(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN], uint64_t off,
			   uint64_t len)
{
	char rel[BLOCK_REL_PATH_LEN];
	struct stat st;
	int fd;

	block_file_rel_path(hash, rel);
	fd = openat(bs->blocks_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= BLOCK_HEADER_SIZE)
		block_file_drop(fd, off, len, (uint64_t)st.st_size - BLOCK_HEADER_SIZE);
	close(fd);
}

uint64_t blockstore_ref_offset(const struct blockstore_ref *ref)
{
	return BLOCK_HEADER_SIZE;
}

uint64_t blockstore_ref_length(const struct blockstore_ref *ref)
{
	return ref->e->data_len;
}

void blockstore_ref_put(struct blockstore *bs, struct blockstore_ref *ref)
{
	struct entry *e = NULL;
	int fd = -1;
	bool free_it = false;

	if (!ref)
		return;
	e = ref->e;
	pthread_mutex_lock(&bs->mu);
	if (--e->refs == 0) {
		fd = e->fd;
		e->fd = -1;
		free_it = !e->in_index;
	}
	pthread_mutex_unlock(&bs->mu);
	if (fd >= 0)
		close(fd);
	if (free_it)
		free(e);
}

/*
 * The header of ref's file, read now and checked: its checksum, and that
 * it still describes the entry. NULL, or why not.
 */
static const char *ref_header(const struct entry *e, uint8_t *h, struct block_sums *out,
			      int *read_errno)
{
	struct block_header info;
	const char *why = NULL;
	ssize_t n = fileio_pread_all(e->fd, h, BLOCK_HEADER_SIZE, 0);

	*read_errno = 0;
	if (n < 0) {
		*read_errno = errno;
		return strerror(errno);
	}
	if (n != BLOCK_HEADER_SIZE)
		return "short header";
	why = block_header_parse(h, &info);
	if (!why && info.data_len != e->data_len)
		why = "data length changed";
	if (!why)
		block_header_sums(&info, out);
	return why;
}

/* Drops a block that failed a check: counted, logged (rate limited), its
 * file unlinked; the caller's ref keeps the entry until put. */
static void drop_corrupt(struct blockstore *bs, struct entry *e, const char *why)
{
	char hex[BLOCK_HASH_HEX];
	bool live;

	pthread_mutex_lock(&bs->mu);
	live = e->state == ENTRY_LIVE;
	if (live) {
		entry_kill_locked(bs, e);
		e->next = NULL;
		bs->st.corrupt++;
	}
	pthread_mutex_unlock(&bs->mu);
	if (!live)
		return;
	block_hash_hex(e->hash, hex);
	log_limited_warn(&bs->corrupt_log, "cached block failed its checksum, removed",
			 LOG_S("dir", bs->dir), LOG_S("block", hex), LOG_S("cause", why));
	blockstore_remove_dying(bs, e);
}

enum error_code blockstore_ref_sums(struct blockstore *bs, struct blockstore_ref *ref,
				    struct block_sums *out, bool *corrupt, struct error *err)
{
	uint8_t *h = malloc(BLOCK_HEADER_SIZE);
	char hex[BLOCK_HASH_HEX];
	const char *why;
	int read_errno = 0;

	*corrupt = false;
	if (!h)
		return error_set(err, ERR_NOMEM, "read block header: out of memory");
	block_hash_hex(ref->e->hash, hex);
	why = ref_header(ref->e, h, out, &read_errno);
	free(h);
	if (!why)
		return ERR_OK;
	/* The disk failed, not the bytes: nothing says the block is bad. */
	if (read_errno)
		return error_set(err, error_from_errno(read_errno),
				 "read the header of block '%s' in '%s': %s", hex, bs->dir, why);
	*corrupt = true;
	drop_corrupt(bs, ref->e, why);
	return error_set(err, ERR_IO, "block '%s' in '%s': header %s, removed", hex, bs->dir, why);
}

enum error_code blockstore_ref_verify(struct blockstore *bs, struct blockstore_ref *ref,
				      bool *corrupt, struct error *err)
{
	struct entry *e = ref->e;
	struct block_sums sums;
	char hex[BLOCK_HASH_HEX], why[ERROR_MSG_MAX];
	enum error_code rc;
	bool live;
	char *buf = NULL;

	*corrupt = false;
	pthread_mutex_lock(&bs->mu);
	live = e->state == ENTRY_LIVE;
	pthread_mutex_unlock(&bs->mu);
	block_hash_hex(e->hash, hex);
	if (!live) {
		*corrupt = true;
		return error_set(err, ERR_IO, "verify block '%s' in '%s': removed as corrupt", hex,
				 bs->dir);
	}
	rc = blockstore_ref_sums(bs, ref, &sums, corrupt, err);
	if (rc != ERR_OK)
		return rc;
	buf = malloc(e->data_len ? (size_t)e->data_len : 1);
	if (!buf)
		return error_set(err, ERR_NOMEM, "verify block '%s' in '%s': out of memory", hex,
				 bs->dir);
	rc = block_read_checked(e->fd, &sums, 0, (size_t)e->data_len, buf, corrupt, err);
	free(buf);
	if (rc == ERR_OK)
		return ERR_OK;
	/* A failed read says nothing about the bytes: keep the block. */
	if (!*corrupt)
		return error_wrap(err, "verify block '%s' in '%s'", hex, bs->dir);
	snprintf(why, sizeof(why), "%s", err->msg);
	drop_corrupt(bs, e, why);
	return error_set(err, ERR_IO, "verify block '%s' in '%s': %s, removed", hex, bs->dir, why);
}

/* --- policies --- */

/*
 * The policies' verdict on need more bytes for a block of hash in ds,
 * evicting nothing: ERR_OK with *last the LRU-tail victim up to which the
 * unheld blocks must go to free them (NULL: there is room already), or
 * ERR_NO_SPACE with *why. For a scan-resistant candidate every victim
 * must be less frequent than the candidate.
 *
 * The candidate's estimate includes the miss that led to this write
 * (blockstore_get counts it), while an incumbent not yet reached in the
 * current pass of a scan lacks its turn's access: compared as they are, in
 * a cyclic scan every candidate would beat such incumbents by exactly that
 * one access and the cache would churn like plain LRU. So the candidate is
 * compared without the current access.
 */
static enum error_code room_plan_locked(struct blockstore *bs, const uint8_t *hash,
					const struct dataset *ds, uint64_t need,
					struct entry **last, const char **why)
{
	uint64_t room = bs->capacity - bs->used - bs->reserved;
	unsigned freq = 0;
	bool tinylfu = ds->policy == BLOCKSTORE_SCAN_RESISTANT;

	*last = NULL;
	if (tinylfu) {
		freq = sketch_estimate(bs->sketch, hash);
		freq = freq ? freq - 1 : 0;
	}
	for (struct entry *v = bs->lru.tail; v && room < need; v = v->prev) {
		if (v->refs > 0)
			continue;
		if (tinylfu && freq <= sketch_estimate(bs->sketch, v->hash)) {
			*why = "admission refused: not more frequent than the blocks it would evict";
			return ERR_NO_SPACE;
		}
		room += v->disk;
		*last = v;
	}
	if (room < need) {
		*why = "the rest is pinned, held by readers or reserved";
		return ERR_NO_SPACE;
	}
	return ERR_OK;
}

bool blockstore_admits(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN],
		       const char *dataset, uint64_t data_len, unsigned count)
{
	const uint64_t need = disk_size(data_len) * count;
	struct dataset *ds = NULL;
	struct entry *last = NULL;
	const char *why = NULL;
	bool yes = false;

	/* A dataset not seen yet has the defaults (LRU). More than the
	 * whole cache finds too few victims: no. */
	const struct dataset lru = { .policy = BLOCKSTORE_LRU };

	pthread_mutex_lock(&bs->mu);
	ds = dataset_find_locked(bs, dataset, strlen(dataset));
	yes = room_plan_locked(bs, hash, ds ? ds : &lru, need, &last, &why) == ERR_OK;
	pthread_mutex_unlock(&bs->mu);
	return yes;
}

/* Evicts what room_plan_locked finds: marks the victims DYING and chains
 * them into *victims; nothing when the candidate may not come in. */
enum error_code blockstore_make_room_locked(struct blockstore *bs, const struct entry *cand,
					    uint64_t need, struct entry **victims, const char **why)
{
	struct entry *last = NULL;
	enum error_code rc = room_plan_locked(bs, cand->hash, cand->ds, need, &last, why);

	if (rc != ERR_OK)
		return rc;
	for (struct entry *v = bs->lru.tail, *prev = NULL; last; v = prev) {
		prev = v->prev;
		if (v->refs > 0)
			continue;
		entry_kill_locked(bs, v);
		v->next = *victims;
		*victims = v;
		bs->st.evictions++;
		if (v == last)
			break;
	}
	return ERR_OK;
}

size_t blockstore_dataset_bytes(struct blockstore *bs, struct blockstore_usage *out, size_t max)
{
	struct dataset *ds, *tmp;
	size_t n = 0;

	pthread_mutex_lock(&bs->mu);
	HASH_ITER(hh, bs->datasets, ds, tmp) {
		size_t at;

		if (!ds->bytes)
			continue;
		/* Kept sorted by bytes, largest first; past max, the smallest go. */
		for (at = n; at > 0 && out[at - 1].bytes < ds->bytes; at--)
			;
		if (at >= max)
			continue;
		if (n == max)
			n--;
		memmove(&out[at + 1], &out[at], (n - at) * sizeof(*out));
		snprintf(out[at].name, sizeof(out[at].name), "%s", ds->name);
		out[at].bytes = ds->bytes;
		n++;
	}
	pthread_mutex_unlock(&bs->mu);
	return n;
}

void blockstore_get_stats(struct blockstore *bs, struct blockstore_stats *out)
{
	pthread_mutex_lock(&bs->mu);
	*out = bs->st;
	out->used = bs->used;
	out->reserved = bs->reserved;
	out->capacity = bs->capacity;
	pthread_mutex_unlock(&bs->mu);
}

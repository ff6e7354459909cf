/*
 * blockstore_impl.h - the block store's state, private to cache/blockstore*.c.
 *
 * The module is one file pair to its users (cache/blockstore.h); inside it
 * is split along its seams:
 *   blockstore.c          the index, the lists and the datasets, the
 *                         eviction and admission policies, lookups and refs,
 *                         open and free; the entry states and the space
 *                         rule are described at its top
 *   blockstore_rebuild.c  the index rebuilt from the block files at open
 *   blockstore_write.c    writers (reserve, append, commit) and disk space
 * Everything here is under bs->mu where a comment says so.
 */
#ifndef GRANARY_CACHE_BLOCKSTORE_IMPL_H
#define GRANARY_CACHE_BLOCKSTORE_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Out of memory while adding leaves the element's hh.tbl NULL instead of
 * exiting the process. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "block/name.h"
#include "cache/blockstore.h"
#include "cache/sketch.h"
#include "common/log.h"

#define DISK_UNIT 4096
#define BYTES_SPARE 8  /* direct_write buffers kept for reuse */

enum entry_state { ENTRY_WRITING, ENTRY_LIVE, ENTRY_DYING };

struct dataset {
	char *name;                    /* immutable; the key in bs->datasets */
	enum blockstore_policy policy; /* protected by bs->mu */
	bool pin;                      /* protected by bs->mu */
	uint64_t bytes;                /* data of its LIVE blocks; protected by bs->mu */
	UT_hash_handle hh;             /* protected by bs->mu */
};

struct entry;

struct blockstore_ref {
	struct entry *e; /* immutable: the entry this is embedded in */
};

struct entry {
	uint8_t hash[BLOCK_HASH_LEN]; /* immutable; the index key */
	UT_hash_handle hh;                 /* protected by bs->mu */
	/* LRU neighbours while LIVE (head = most recent); while DYING, next
	 * chains the victims one caller is removing. Protected by bs->mu. */
	struct entry *prev, *next;
	struct dataset *ds;        /* immutable; datasets live as long as bs */
	enum entry_state state;    /* protected by bs->mu */
	bool in_index;             /* protected by bs->mu */
	uint32_t refs;             /* protected by bs->mu */
	int fd;                    /* protected by bs->mu; open while refs > 0 */
	uint64_t data_len;         /* set before LIVE, then immutable */
	uint64_t disk;             /* file bytes rounded up to DISK_UNIT; as data_len */
	int64_t mtime_ns;          /* only while rebuilding */
	struct blockstore_ref ref; /* what get hands out; counted by refs */
};

struct lru {
	struct entry *head, *tail;
};

struct blockstore {
	char *dir;                  /* immutable */
	int lock_fd;                /* immutable: DIR/.lock, flock'd while open */
	char dir_id[BLOCK_DIR_ID_LEN + 1]; /* immutable: the id in DIR/.lock, or "" */
	int blocks_fd;              /* immutable: DIR/blocks */
	int tmp_fd;                 /* immutable: DIR/tmp */
	uint64_t capacity;          /* lowered by blockstore_disk_full; protected by mu */
	uint64_t block_file;        /* immutable: disk bytes of a usual block */
	pthread_mutex_t mu;
	struct entry *index;        /* protected by mu */
	struct dataset *datasets;   /* protected by mu */
	struct lru lru;             /* unpinned LIVE entries; protected by mu */
	struct lru pinned;          /* pinned LIVE entries; protected by mu */
	struct sketch *sketch;      /* protected by mu */
	uint64_t used, reserved;    /* bytes; protected by mu */
	struct blockstore_stats st; /* counters only; protected by mu */
	atomic_uint_fast64_t tmp_seq; /* makes temp names unique */
	atomic_bool direct_write;   /* blockstore_config.direct_write, until refused */
	uint64_t direct_write_min;  /* blockstore_config.direct_write_min */
	bool direct_read;           /* blockstore_config.direct_read */
	/* direct_write buffers of a usual block (block_file bytes), free for
	 * the next writer: a fresh one costs a page fault per page and the
	 * zeroing of it. */
	void *spare[BYTES_SPARE];   /* protected by mu */
	unsigned nspare;            /* protected by mu */
	struct log_limiter corrupt_log;
};

/* --- sizes --- */

static inline uint64_t disk_size(uint64_t data_len)
{
	return (BLOCK_HEADER_SIZE + data_len + DISK_UNIT - 1) / DISK_UNIT * DISK_UNIT;
}

/* --- lists and index; all *_locked under bs->mu --- */

static inline struct lru *dataset_list_locked(struct blockstore *bs, const struct dataset *ds)
{
	return ds->pin ? &bs->pinned : &bs->lru;
}

static inline struct lru *entry_list_locked(struct blockstore *bs, const struct entry *e)
{
	return dataset_list_locked(bs, e->ds);
}

static inline void lru_remove(struct lru *l, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		l->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		l->tail = e->prev;
	e->prev = e->next = NULL;
}

static inline void lru_push_head(struct lru *l, struct entry *e)
{
	e->prev = NULL;
	e->next = l->head;
	if (l->head)
		l->head->prev = e;
	else
		l->tail = e;
	l->head = e;
}

static inline struct entry *entry_new(void)
{
	struct entry *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->fd = -1;
	e->ref.e = e;
	return e;
}

/* Adds e to the index; -1 if out of memory. */
static inline int index_add_locked(struct blockstore *bs, struct entry *e)
{
	HASH_ADD(hh, bs->index, hash, BLOCK_HASH_LEN, e);
	if (!e->hh.tbl)
		return -1;
	e->in_index = true;
	return 0;
}

/* Takes e out of the index; true if nothing holds it and it can be freed. */
static inline bool index_remove_locked(struct blockstore *bs, struct entry *e)
{
	HASH_DEL(bs->index, e);
	e->in_index = false;
	return e->refs == 0;
}

/* A LIVE entry turns DYING: off its list and out of the space count. */
static inline void entry_kill_locked(struct blockstore *bs, struct entry *e)
{
	lru_remove(entry_list_locked(bs, e), e);
	e->state = ENTRY_DYING;
	bs->used -= e->disk;
	e->ds->bytes -= e->data_len;
	bs->st.blocks--;
}

static inline enum error_code check_dataset_name(const char *dataset, const char *what,
						 struct error *err)
{
	if (block_dataset_name_check(dataset, err) != ERR_OK)
		return error_wrap(err, "%s", what);
	return ERR_OK;
}

/* Finds or creates (LRU, unpinned) the record of a dataset; NULL if out of
 * memory. */
struct dataset *blockstore_dataset_get_locked(struct blockstore *bs, const char *name, size_t len);

/*
 * Unlinks the files of a chain of DYING entries (linked by next), then
 * takes them out of the index and frees those nothing holds. Called
 * without bs->mu.
 */
void blockstore_remove_dying(struct blockstore *bs, struct entry *chain);

/*
 * The eviction and admission policies: finds LRU-tail victims that free
 * need bytes for cand, marks them DYING and chains them into *victims;
 * ERR_NO_SPACE with *why when the candidate may not come in.
 */
enum error_code blockstore_make_room_locked(struct blockstore *bs, const struct entry *cand,
					    uint64_t need, struct entry **victims,
					    const char **why);

/* blockstore_rebuild.c, at open: removes what writers left in DIR/tmp. */
enum error_code blockstore_clear_tmp(struct blockstore *bs, struct error *err);

/* blockstore_rebuild.c, at open: indexes the valid block files, removes
 * the bad ones, and evicts down to the capacity. */
enum error_code blockstore_rebuild_index(struct blockstore *bs, struct error *err);

#endif

/*
 * snapshot.c - the namespace snapshot: builder, queries, encoding, files.
 *
 * Encoding, version 1, all integers little-endian:
 *
 *   0   magic "GRNYSNAP"
 *   8   u32 version (1)
 *   12  u32 flags (0; any other value is a format this build does not read)
 *   16  u64 generation
 *   24  u64 number of entries (the root included)
 *   32  u64 bytes of all entry names, a NUL counted after each
 *   40  u64 bytes of all non-empty ETags, a NUL counted after each
 *       (both checked against what follows; the decoder allocates the
 *       string pool once from them)
 *   48  u64 skipped files
 *   56  dataset name, source URI, key prefix: each a varint length + bytes
 *       then per entry, breadth-first (the in-memory order):
 *         u8 kind (0 file, 1 directory), varint name length + bytes,
 *         zigzag varint mtime, then
 *         file: varint size, varint ETag length + bytes
 *         directory: varint number of children
 *   end-8  u64 XXH3-64 of every byte before it
 *
 * Parents and first children are not stored: in breadth-first order the
 * children of the directories follow one another from index 1 on, so the
 * counts alone give the layout. The checksum sits last in every version,
 * so it is verified before the version is read.
 *
 * The string pool holds "" first, then the names in entry order (the
 * siblings a lookup compares sit side by side), then the ETags.
 */
#include "meta/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/array.h"
#include "common/bytes.h"
#include "common/fileio.h"
#include "common/log.h"
#include "store/store.h"

#define ENT_DIR 1u
/* Indices are uint32_t; UINT32_MAX marks "none" while building. */
#define MAX_ENTRIES ((uint64_t)UINT32_MAX - 1)
#define NONE UINT32_MAX

#define MAGIC "GRNYSNAP"
#define FORMAT_VERSION 1u
#define HEADER_SIZE 56
#define TRAILER_SIZE 8
#define URI_MAX 4096
#define PREFIX_MAX 1024
/* Folder/file conflicts logged one by one before a summary line. */
#define SKIP_LOG_MAX 10

struct entry {
	uint64_t name;  /* offset into the pool */
	uint64_t size;  /* files; 0 for directories */
	int64_t mtime;
	union {
		uint64_t etag; /* files: offset into the pool */
		struct {
			uint32_t first; /* index of the first child */
			uint32_t count;
		} dir;
	} u;
	uint32_t parent; /* index; the root's is 0 */
	uint32_t flags;  /* ENT_DIR */
};

_Static_assert(sizeof(struct entry) == 40, "entry layout grew");

struct snapshot {
	char *name;
	char *uri;
	char *prefix;
	uint64_t generation;
	struct entry *ents; /* ents[0] is the root */
	uint32_t n;
	char *pool;         /* "", names, then ETags; "" serves the root and empty ETags */
	size_t names_end;   /* where the ETags start */
	size_t pool_len;
	struct snapshot_totals totals;
	size_t mem;
};

struct snapshot_builder {
	char *name;
	char *uri;
	char *prefix;
	uint64_t generation;
	struct entry *ents; /* in order of arrival; ents[0] is the root */
	size_t n, cap;
	char *pool;
	size_t pool_len, pool_cap;
	uint32_t *dirs;     /* open addressing on (parent, name): index + 1, 0 = free */
	size_t dirs_cap, ndirs;
	uint64_t added;
	uint64_t bytes;     /* sizes of the files added; never wraps (see add) */
};

/* Whether s[0..len) can be one path segment (no '/', checked by callers
 * that split on it). */
static const char *segment_problem(const char *s, size_t len)
{
	if (len == 0)
		return "empty path segment";
	if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
		return "'.' or '..' segment";
	if (len > SNAPSHOT_NAME_MAX)
		return "path segment longer than 255 bytes";
	return NULL;
}

/* ---- builder ----------------------------------------------------------- */

/* Appends s[0..len) and a NUL; *off gets its offset. */
static int pool_add(struct snapshot_builder *b, const char *s, size_t len, uint64_t *off)
{
	if (array_grow((void **)&b->pool, &b->pool_cap, b->pool_len + len + 1, 1) < 0)
		return -1;
	memcpy(b->pool + b->pool_len, s, len);
	b->pool[b->pool_len + len] = '\0';
	*off = b->pool_len;
	b->pool_len += len + 1;
	return 0;
}

static uint64_t dir_hash(uint32_t parent, const char *name, size_t len)
{
	return XXH3_64bits_withSeed(name, len, parent);
}

/* Slot of (parent, name) in b->dirs: the one holding it, or the free one
 * where it would go. */
static size_t dir_slot(const struct snapshot_builder *b, uint32_t parent, const char *name,
		       size_t len)
{
	size_t mask = b->dirs_cap - 1;
	size_t i = (size_t)dir_hash(parent, name, len) & mask;

	for (; b->dirs[i]; i = (i + 1) & mask) {
		const struct entry *e = &b->ents[b->dirs[i] - 1];
		const char *en = b->pool + e->name;

		if (e->parent == parent && memcmp(en, name, len) == 0 && en[len] == '\0')
			break;
	}
	return i;
}

static int dirs_grow(struct snapshot_builder *b)
{
	size_t ncap = b->dirs_cap ? b->dirs_cap * 2 : 1024;
	uint32_t *old = b->dirs;
	size_t ocap = b->dirs_cap;

	b->dirs = calloc(ncap, sizeof(*b->dirs));
	if (!b->dirs) {
		b->dirs = old;
		return -1;
	}
	b->dirs_cap = ncap;
	for (size_t i = 0; i < ocap; i++) {
		const struct entry *e = NULL;
		const char *en = NULL;

		if (!old[i])
			continue;
		e = &b->ents[old[i] - 1];
		en = b->pool + e->name;
		b->dirs[dir_slot(b, e->parent, en, strlen(en))] = old[i];
	}
	free(old);
	return 0;
}

/* Appends an entry; returns its index or NONE when out of memory. */
static uint32_t ent_add(struct snapshot_builder *b, uint32_t parent, const char *name,
			size_t len, uint32_t flags)
{
	struct entry *e = NULL;
	uint64_t off = 0;

	if (array_grow((void **)&b->ents, &b->cap, b->n + 1, sizeof(*b->ents)) < 0 ||
	    pool_add(b, name, len, &off) < 0)
		return NONE;
	e = &b->ents[b->n];
	memset(e, 0, sizeof(*e));
	e->name = off;
	e->parent = parent;
	e->flags = flags;
	return (uint32_t)b->n++;
}

/* Index of directory name under parent, made when missing. */
static uint32_t dir_get(struct snapshot_builder *b, uint32_t parent, const char *name, size_t len)
{
	size_t slot = 0;
	uint32_t idx = 0;

	if ((b->ndirs + 1) * 2 > b->dirs_cap && dirs_grow(b) < 0)
		return NONE;
	slot = dir_slot(b, parent, name, len);
	if (b->dirs[slot])
		return b->dirs[slot] - 1;
	idx = ent_add(b, parent, name, len, ENT_DIR);
	if (idx == NONE)
		return NONE;
	b->dirs[slot] = idx + 1;
	b->ndirs++;
	return idx;
}

void snapshot_builder_free(struct snapshot_builder *b)
{
	if (!b)
		return;
	free(b->name);
	free(b->uri);
	free(b->prefix);
	free(b->ents);
	free(b->pool);
	free(b->dirs);
	free(b);
}

enum error_code snapshot_builder_new(const char *name, const char *uri, uint64_t generation,
				     struct snapshot_builder **out, struct error *err)
{
	struct snapshot_builder *b = NULL;
	char *scheme = NULL, *bucket = NULL, *prefix = NULL;
	enum error_code rc;

	*out = NULL;
	rc = block_dataset_name_check(name, err);
	if (rc != ERR_OK)
		return rc;
	rc = store_uri_parse(uri, &scheme, &bucket, &prefix, err);
	if (rc != ERR_OK)
		return error_wrap(err, "snapshot '%s'", name);
	free(scheme);
	free(bucket);
	if (strlen(uri) > URI_MAX || strlen(prefix) > PREFIX_MAX) {
		free(prefix);
		return error_set(err, ERR_INVALID, "snapshot '%s': source URI '%.64s...' too long",
				 name, uri);
	}
	b = calloc(1, sizeof(*b));
	if (!b)
		goto nomem;
	b->prefix = prefix;
	prefix = NULL;
	b->name = strdup(name);
	b->uri = strdup(uri);
	b->generation = generation;
	if (!b->name || !b->uri || ent_add(b, 0, "", 0, ENT_DIR) != 0)
		goto nomem;
	*out = b;
	return ERR_OK;
nomem:
	free(prefix);
	snapshot_builder_free(b);
	return error_set(err, ERR_NOMEM, "snapshot '%s': out of memory", name);
}

uint64_t snapshot_builder_count(const struct snapshot_builder *b)
{
	return b->added;
}

enum error_code snapshot_builder_add_len(struct snapshot_builder *b, const char *key,
					 size_t key_len, uint64_t size, const char *etag,
					 int64_t mtime, struct error *err)
{
	size_t path_len = key_len, nseg = 0, etag_len = etag ? strlen(etag) : 0;
	bool marker = key_len > 0 && key[key_len - 1] == '/';
	uint32_t parent = 0;

	if (key_len == 0)
		return error_set(err, ERR_INVALID, "snapshot '%s': empty object key", b->name);
	if (memchr(key, '\0', key_len))
		return error_set(err, ERR_INVALID, "snapshot '%s': key '%.*s': contains a NUL byte",
				 b->name, (int)key_len, key);
	if (etag_len > SNAPSHOT_ETAG_MAX)
		return error_set(err, ERR_INVALID,
				 "snapshot '%s': key '%.*s': etag longer than %d bytes", b->name,
				 (int)key_len, key, SNAPSHOT_ETAG_MAX);
	if (!marker && size > STORE_OBJECT_MAX)
		return error_set(err, ERR_INVALID,
				 "snapshot '%s': key '%.*s': size %llu is over 5 TiB, the largest "
				 "object S3 stores",
				 b->name, (int)key_len, key, (unsigned long long)size);
	if (!marker && size > UINT64_MAX - b->bytes)
		return error_set(err, ERR_INVALID,
				 "snapshot '%s': key '%.*s': the dataset's total size would pass "
				 "2^64 bytes",
				 b->name, (int)key_len, key);
	if (marker)
		path_len--;
	/* Check every segment before adding any directory, so that a refused
	 * key leaves nothing behind. */
	for (size_t s = 0; s <= path_len; nseg++) {
		const char *slash = memchr(key + s, '/', path_len - s);
		size_t e = slash ? (size_t)(slash - key) : path_len;
		const char *why = segment_problem(key + s, e - s);

		if (why)
			return error_set(err, ERR_INVALID, "snapshot '%s': key '%.*s': %s", b->name,
					 (int)key_len, key, why);
		s = e + 1;
	}
	if (b->n + nseg > MAX_ENTRIES)
		return error_set(err, ERR_NO_SPACE, "snapshot '%s': more than %llu entries",
				 b->name, (unsigned long long)MAX_ENTRIES);
	for (size_t s = 0; s <= path_len;) {
		const char *slash = memchr(key + s, '/', path_len - s);
		size_t e = slash ? (size_t)(slash - key) : path_len;

		if (slash || marker) {
			parent = dir_get(b, parent, key + s, e - s);
		} else {
			parent = ent_add(b, parent, key + s, e - s, 0);
			if (parent != NONE) {
				struct entry *f = &b->ents[parent];
				uint64_t off = 0;

				f->size = size;
				f->mtime = mtime;
				if (etag_len == 0)
					f->u.etag = 0; /* "" at the front of the pool */
				else if (pool_add(b, etag, etag_len, &off) < 0)
					parent = NONE;
				else
					b->ents[parent].u.etag = off;
			}
		}
		if (parent == NONE)
			return error_set(err, ERR_NOMEM, "snapshot '%s': out of memory", b->name);
		s = e + 1;
	}
	if (marker && mtime > b->ents[parent].mtime)
		b->ents[parent].mtime = mtime;
	if (!marker)
		b->bytes += size;
	b->added++;
	return ERR_OK;
}

enum error_code snapshot_builder_add(struct snapshot_builder *b, const char *key, uint64_t size,
				     const char *etag, int64_t mtime, struct error *err)
{
	return snapshot_builder_add_len(b, key, key ? strlen(key) : 0, size, etag, mtime, err);
}

/* Children sorted by name; on a tie the directory first, then arrival. */
static int child_cmp(const void *pa, const void *pb, void *arg)
{
	const struct snapshot_builder *b = arg;
	uint32_t ia = *(const uint32_t *)pa, ib = *(const uint32_t *)pb;
	const struct entry *a = &b->ents[ia], *c = &b->ents[ib];
	int r = strcmp(b->pool + a->name, b->pool + c->name);

	if (r)
		return r;
	if ((a->flags & ENT_DIR) != (c->flags & ENT_DIR))
		return (a->flags & ENT_DIR) ? -1 : 1;
	return ia < ib ? -1 : ia > ib;
}

/*
 * Copies the names, then the ETags, of s->ents from the builder's pool
 * into a pool of their exact size, in entry order, rewriting the offsets:
 * the skipped files' strings go, and siblings' names end up adjacent.
 */
static int pool_compact(struct snapshot *s, const char *old)
{
	size_t names = 1, etags = 0, at = 1;

	for (uint32_t i = 1; i < s->n; i++) {
		names += strlen(old + s->ents[i].name) + 1;
		if (!(s->ents[i].flags & ENT_DIR) && s->ents[i].u.etag)
			etags += strlen(old + s->ents[i].u.etag) + 1;
	}
	s->pool = malloc(names + etags);
	if (!s->pool)
		return -1;
	s->pool[0] = '\0';
	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t i = 1; i < s->n; i++) {
			struct entry *e = &s->ents[i];
			uint64_t *off = pass == 0 ? &e->name : &e->u.etag;
			size_t len;

			if (pass == 1 && ((e->flags & ENT_DIR) || e->u.etag == 0))
				continue;
			len = strlen(old + *off) + 1;
			memcpy(s->pool + at, old + *off, len);
			*off = at;
			at += len;
		}
		if (pass == 0)
			s->names_end = at;
	}
	s->pool_len = at;
	return 0;
}

/* prefix + path of builder entry idx, for messages. */
static void builder_key(const struct snapshot_builder *b, uint32_t idx, char *buf, size_t size)
{
	size_t len = strlen(b->prefix), end = 0;

	for (uint32_t i = idx; i != 0; i = b->ents[i].parent)
		len += strlen(b->pool + b->ents[i].name) + 1;
	if (idx != 0)
		len--; /* no '/' after the last segment */
	if (len + 1 > size) {
		snprintf(buf, size, "%s...", b->pool + b->ents[idx].name);
		return;
	}
	buf[len] = '\0';
	end = len;
	for (uint32_t i = idx; i != 0; i = b->ents[i].parent) {
		const char *nm = b->pool + b->ents[i].name;
		size_t l = strlen(nm);

		end -= l;
		memcpy(buf + end, nm, l);
		if (b->ents[i].parent != 0)
			buf[--end] = '/';
	}
	memcpy(buf, b->prefix, strlen(b->prefix));
}

enum error_code snapshot_builder_finish(struct snapshot_builder *b, struct snapshot **out,
					struct error *err)
{
	struct snapshot *s = NULL;
	uint32_t *start = NULL, *order = NULL, *bfs = NULL, *newidx = NULL;
	size_t n = b->n, m = 0, tail = 1;
	uint64_t skipped = 0;
	enum error_code rc = ERR_NOMEM;
	char key[1200];

	*out = NULL;
	free(b->dirs); /* not needed past this point: lower the peak */
	b->dirs = NULL;
	start = calloc(n + 1, sizeof(*start));
	order = malloc(n * sizeof(*order));
	newidx = malloc(n * sizeof(*newidx));
	if (!start || !order || !newidx)
		goto fail;

	/* Group the children by parent (a counting sort), then sort each
	 * group by name. */
	for (size_t i = 1; i < n; i++)
		start[b->ents[i].parent + 1]++;
	for (size_t i = 0; i < n; i++)
		start[i + 1] += start[i];
	memcpy(newidx, start, n * sizeof(*newidx)); /* fill cursors */
	for (size_t i = 1; i < n; i++)
		order[newidx[b->ents[i].parent]++] = (uint32_t)i;
	for (size_t d = 0; d < n; d++) {
		size_t cnt = start[d + 1] - start[d];

		if (cnt > 1)
			qsort_r(order + start[d], cnt, sizeof(*order), child_cmp, b);
	}

	/* Equal names among siblings (the directory sorts first): a
	 * directory beside a file keeps the directory; two files with one
	 * key is a caller's bug. A dropped file's slot becomes NONE. */
	for (size_t d = 0; d < n; d++) {
		for (size_t k = start[d] + 1; k < start[d + 1]; k++) {
			const struct entry *prev = &b->ents[order[k - 1]];
			const struct entry *cur = &b->ents[order[k]];

			if (strcmp(b->pool + prev->name, b->pool + cur->name) != 0)
				continue;
			builder_key(b, order[k], key, sizeof(key));
			if (!(prev->flags & ENT_DIR)) {
				rc = error_set(err, ERR_INVALID,
					       "snapshot '%s': duplicate key '%s'", b->name, key);
				goto fail;
			}
			skipped++;
			if (skipped <= SKIP_LOG_MAX)
				log_warn("snapshot: key is both a file and a directory; "
					 "keeping the directory",
					 LOG_S("dataset", b->name), LOG_S("key", key));
			/* Drop the file; compare what follows with the directory. */
			order[k] = order[k - 1];
			order[k - 1] = NONE;
		}
	}
	if (skipped > SKIP_LOG_MAX)
		log_warn("snapshot: more keys were both files and directories",
			 LOG_S("dataset", b->name), LOG_U("skipped", skipped));
	m = n - skipped;

	s = calloc(1, sizeof(*s));
	bfs = malloc(m * sizeof(*bfs));
	if (!s || !bfs)
		goto fail;
	s->ents = malloc(m * sizeof(*s->ents));
	if (!s->ents)
		goto fail;

	/* Breadth-first layout: each directory's kept children, in order,
	 * right after those of the directories before it. */
	bfs[0] = 0;
	newidx[0] = 0;
	for (size_t head = 0; head < tail; head++) {
		const struct entry *e = &b->ents[bfs[head]];
		struct entry *f = &s->ents[head];

		*f = *e;
		f->parent = newidx[e->parent];
		if (!(e->flags & ENT_DIR))
			continue;
		f->u.dir.first = (uint32_t)tail;
		for (size_t k = start[bfs[head]]; k < start[bfs[head] + 1]; k++) {
			if (order[k] == NONE)
				continue;
			newidx[order[k]] = (uint32_t)tail;
			bfs[tail++] = order[k];
		}
		f->u.dir.count = (uint32_t)(tail - f->u.dir.first);
	}
	if (tail != m) {
		rc = error_set(err, ERR_INTERNAL, "snapshot '%s': laid out %zu of %zu entries",
			       b->name, tail, m);
		goto fail;
	}

	s->n = (uint32_t)m;
	for (size_t i = m; i-- > 1;) {
		struct entry *p = &s->ents[s->ents[i].parent];

		if (s->ents[i].mtime > p->mtime)
			p->mtime = s->ents[i].mtime;
		if (s->ents[i].flags & ENT_DIR) {
			s->totals.dirs++;
		} else {
			s->totals.files++;
			s->totals.bytes += s->ents[i].size;
		}
	}
	s->totals.dirs++; /* the root */
	s->totals.skipped = skipped;
	if (pool_compact(s, b->pool) < 0)
		goto fail;
	s->name = b->name;
	s->uri = b->uri;
	s->prefix = b->prefix;
	b->name = b->uri = b->prefix = NULL;
	s->generation = b->generation;
	s->mem = sizeof(*s) + m * sizeof(*s->ents) + s->pool_len + strlen(s->name) + 1 +
		 strlen(s->uri) + 1 + strlen(s->prefix) + 1;
	*out = s;
	s = NULL;
	rc = ERR_OK;
fail:
	if (rc == ERR_NOMEM)
		error_set(err, rc, "snapshot '%s': out of memory", b->name ? b->name : "");
	free(start);
	free(order);
	free(bfs);
	free(newidx);
	snapshot_free(s);
	snapshot_builder_free(b);
	return rc;
}

void snapshot_free(struct snapshot *snap)
{
	if (!snap)
		return;
	free(snap->name);
	free(snap->uri);
	free(snap->prefix);
	free(snap->ents);
	free(snap->pool);
	free(snap);
}

/* ---- building from a store --------------------------------------------- */

struct from_store {
	struct snapshot_builder *b;
	const char *prefix;
	size_t plen;
	enum error_code rc;
	struct error err; /* store_list_all overwrites the caller's on a stop */
};

static int from_store_add(const struct store_object *obj, void *arg)
{
	struct from_store *fs = arg;

	if (strncmp(obj->key, fs->prefix, fs->plen) != 0) {
		fs->rc = error_set(&fs->err, ERR_INTERNAL,
				   "snapshot: listing of '%s' returned key '%s' outside it",
				   fs->prefix, obj->key);
		return 1;
	}
	if (obj->key[fs->plen] == '\0')
		return 0; /* the prefix's own folder marker: the root */
	fs->rc = snapshot_builder_add(fs->b, obj->key + fs->plen, obj->size, obj->etag, obj->mtime,
				      &fs->err);
	if (fs->rc != ERR_OK)
		error_wrap(&fs->err, "object '%s'", obj->key);
	return fs->rc != ERR_OK;
}

enum error_code snapshot_build_from_store(struct store *st, const char *prefix, const char *name,
					  const char *uri, uint64_t generation,
					  struct snapshot **out, struct error *err)
{
	return snapshot_build_from_store_limited(st, prefix, name, uri, generation, NULL, out,
						 err);
}

enum error_code snapshot_build_from_store_limited(struct store *st, const char *prefix,
						  const char *name, const char *uri,
						  uint64_t generation,
						  const struct store_list_limits *lim,
						  struct snapshot **out, struct error *err)
{
	struct from_store fs = { 0 };
	char *copy = NULL;
	size_t plen = prefix ? strlen(prefix) : 0;
	enum error_code rc;

	*out = NULL;
	if (plen > 0 && prefix[plen - 1] != '/')
		return error_set(err, ERR_INVALID,
				 "snapshot '%s': prefix '%s' must be empty or end with '/'",
				 name ? name : "", prefix);
	if (plen > PREFIX_MAX)
		return error_set(err, ERR_INVALID, "snapshot '%s': prefix longer than %d bytes",
				 name ? name : "", PREFIX_MAX);
	rc = snapshot_builder_new(name, uri, generation, &fs.b, err);
	if (rc != ERR_OK)
		return rc;
	copy = strdup(prefix ? prefix : "");
	if (!copy) {
		snapshot_builder_free(fs.b);
		return error_set(err, ERR_NOMEM, "snapshot '%s': out of memory", name);
	}
	free(fs.b->prefix);
	fs.b->prefix = copy;
	fs.prefix = copy;
	fs.plen = plen;
	error_clear(&fs.err);
	rc = store_list_all_limited(st, copy, lim, from_store_add, &fs, err);
	if (rc == ERR_CANCELLED && fs.rc != ERR_OK) {
		rc = fs.rc;
		if (err)
			*err = fs.err;
	}
	if (rc != ERR_OK) {
		snapshot_builder_free(fs.b);
		return rc;
	}
	return snapshot_builder_finish(fs.b, out, err);
}

/* ---- queries ----------------------------------------------------------- */

const char *snapshot_name(const struct snapshot *snap)
{
	return snap->name;
}

const char *snapshot_uri(const struct snapshot *snap)
{
	return snap->uri;
}

const char *snapshot_prefix(const struct snapshot *snap)
{
	return snap->prefix;
}

uint64_t snapshot_generation(const struct snapshot *snap)
{
	return snap->generation;
}

void snapshot_totals(const struct snapshot *snap, struct snapshot_totals *out)
{
	*out = snap->totals;
}

uint64_t snapshot_count(const struct snapshot *snap)
{
	return snap->n;
}

size_t snapshot_memory_bytes(const struct snapshot *snap)
{
	return snap->mem;
}

static const struct entry *ent_of(const struct snapshot *snap, uint64_t ino)
{
	return ino >= 1 && ino <= snap->n ? &snap->ents[ino - 1] : NULL;
}

/* Index of the child of directory d named name[0..len), or NONE. */
static uint32_t child_find(const struct snapshot *snap, const struct entry *d, const char *name,
			   size_t len)
{
	size_t lo = d->u.dir.first, hi = lo + d->u.dir.count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *en = snap->pool + snap->ents[mid].name;
		int r = strncmp(name, en, len);

		if (r == 0)
			r = en[len] == '\0' ? 0 : -1; /* name is a prefix of en */
		if (r == 0)
			return (uint32_t)mid;
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NONE;
}

uint64_t snapshot_lookup(const struct snapshot *snap, uint64_t parent, const char *name)
{
	const struct entry *d = ent_of(snap, parent);
	size_t len = name ? strlen(name) : 0;
	uint32_t i;

	if (!d || !(d->flags & ENT_DIR) || len == 0 || len > SNAPSHOT_NAME_MAX)
		return 0;
	i = child_find(snap, d, name, len);
	return i == NONE ? 0 : (uint64_t)i + 1;
}

enum error_code snapshot_stat(const struct snapshot *snap, uint64_t ino,
			      struct snapshot_entry_info *out)
{
	const struct entry *e = ent_of(snap, ino);
	bool dir;

	if (!e)
		return ERR_NOT_FOUND;
	dir = e->flags & ENT_DIR;
	out->ino = ino;
	out->parent = (uint64_t)e->parent + 1;
	out->is_dir = dir;
	out->size = dir ? 0 : e->size;
	out->mtime = e->mtime;
	out->name = snap->pool + e->name;
	out->etag = dir ? "" : snap->pool + e->u.etag;
	out->nchildren = dir ? e->u.dir.count : 0;
	return ERR_OK;
}

uint64_t snapshot_resolve_path(const struct snapshot *snap, const char *path)
{
	const struct entry *d = &snap->ents[0];
	uint32_t idx = 0;

	if (!path)
		return 0;
	while (*path) {
		const char *slash = strchr(path, '/');
		size_t len = slash ? (size_t)(slash - path) : strlen(path);

		if (len > 0) {
			if (!(d->flags & ENT_DIR) || len > SNAPSHOT_NAME_MAX)
				return 0;
			idx = child_find(snap, d, path, len);
			if (idx == NONE)
				return 0;
			d = &snap->ents[idx];
		}
		path += len;
		if (*path == '/')
			path++;
	}
	return (uint64_t)idx + 1;
}

enum error_code snapshot_children(const struct snapshot *snap, uint64_t dir, uint64_t *first,
				  uint64_t *count)
{
	const struct entry *d = ent_of(snap, dir);

	if (!d)
		return ERR_NOT_FOUND;
	if (!(d->flags & ENT_DIR))
		return ERR_INVALID;
	*first = (uint64_t)d->u.dir.first + 1;
	*count = d->u.dir.count;
	return ERR_OK;
}

enum error_code snapshot_readdir(const struct snapshot *snap, uint64_t dir, uint64_t offset,
				 snapshot_readdir_fn fn, void *arg)
{
	uint64_t first = 0, count = 0;
	enum error_code rc = snapshot_children(snap, dir, &first, &count);

	if (rc != ERR_OK)
		return rc;
	for (uint64_t k = offset; k < count; k++) {
		const struct entry *e = &snap->ents[first - 1 + k];

		if (fn(snap->pool + e->name, first + k, e->flags & ENT_DIR, k + 1, arg) != 0)
			break;
	}
	return ERR_OK;
}

/* Writes head + path of ino + tail into buf. */
static enum error_code write_path(const struct snapshot *snap, uint64_t ino, const char *head,
				  const char *tail, char *buf, size_t size)
{
	const struct entry *e = ent_of(snap, ino);
	size_t hlen = strlen(head), tlen = strlen(tail), len = 0, end = 0;
	uint32_t idx = (uint32_t)(ino - 1);

	if (!e)
		return ERR_NOT_FOUND;
	/* Parents have lower indices than their children (breadth-first), so
	 * these walks end at the root. */
	for (uint32_t i = idx; i != 0; i = snap->ents[i].parent)
		len += strlen(snap->pool + snap->ents[i].name) + 1;
	if (len)
		len--;
	if (hlen + len + tlen + 1 > size) {
		if (size)
			buf[0] = '\0';
		return ERR_RANGE;
	}
	memcpy(buf, head, hlen);
	end = hlen + len;
	memcpy(buf + end, tail, tlen + 1);
	for (uint32_t i = idx; i != 0; i = snap->ents[i].parent) {
		const char *nm = snap->pool + snap->ents[i].name;
		size_t l = strlen(nm);

		end -= l;
		memcpy(buf + end, nm, l);
		if (snap->ents[i].parent != 0)
			buf[--end] = '/';
	}
	return ERR_OK;
}

enum error_code snapshot_path(const struct snapshot *snap, uint64_t ino, char *buf, size_t size)
{
	return write_path(snap, ino, "", "", buf, size);
}

enum error_code snapshot_object_key(const struct snapshot *snap, uint64_t ino, char *buf,
				    size_t size)
{
	const struct entry *e = ent_of(snap, ino);
	bool slash = e && (e->flags & ENT_DIR) && ino != SNAPSHOT_ROOT_INO;

	return write_path(snap, ino, snap->prefix, slash ? "/" : "", buf, size);
}

/* ---- encoding ---------------------------------------------------------- */

struct encoder {
	unsigned char buf[SNAPSHOT_ENCODE_PIECE];
	size_t used;
	snapshot_write_fn fn;
	void *arg;
	XXH3_state_t *xxh;
	int failed;
};

static void enc_flush(struct encoder *en, bool hash)
{
	if (en->failed || en->used == 0)
		return;
	if (hash)
		XXH3_64bits_update(en->xxh, en->buf, en->used);
	if (en->fn(en->buf, en->used, en->arg) != 0)
		en->failed = 1;
	en->used = 0;
}

static void enc_bytes(struct encoder *en, const void *data, size_t len)
{
	const unsigned char *p = data;

	while (len > 0) {
		size_t k = sizeof(en->buf) - en->used;

		if (k > len)
			k = len;
		memcpy(en->buf + en->used, p, k);
		en->used += k;
		p += k;
		len -= k;
		if (en->used == sizeof(en->buf))
			enc_flush(en, true);
	}
}

static void enc_u32(struct encoder *en, uint32_t v)
{
	unsigned char b[4];

	bytes_put_le32(b, v);
	enc_bytes(en, b, sizeof(b));
}

static void enc_u64(struct encoder *en, uint64_t v)
{
	unsigned char b[8];

	bytes_put_le64(b, v);
	enc_bytes(en, b, sizeof(b));
}

static void enc_varint(struct encoder *en, uint64_t v)
{
	unsigned char b[10];
	size_t n = 0;

	do {
		b[n] = (unsigned char)(v & 0x7f);
		v >>= 7;
		if (v)
			b[n] |= 0x80;
		n++;
	} while (v);
	enc_bytes(en, b, n);
}

static void enc_string(struct encoder *en, const char *s)
{
	size_t len = strlen(s);

	enc_varint(en, len);
	enc_bytes(en, s, len);
}

enum error_code snapshot_encode(const struct snapshot *snap, snapshot_write_fn fn, void *arg,
				struct error *err)
{
	struct encoder *en = calloc(1, sizeof(*en));
	unsigned char sum[8];
	uint64_t h;
	enum error_code rc = ERR_OK;

	if (!en || !(en->xxh = XXH3_createState()) || XXH3_64bits_reset(en->xxh) != XXH_OK) {
		rc = error_set(err, ERR_NOMEM, "encode snapshot '%s': out of memory", snap->name);
		goto out;
	}
	en->fn = fn;
	en->arg = arg;
	enc_bytes(en, MAGIC, 8);
	enc_u32(en, FORMAT_VERSION);
	enc_u32(en, 0);
	enc_u64(en, snap->generation);
	enc_u64(en, snap->n);
	enc_u64(en, snap->names_end - 1);
	enc_u64(en, snap->pool_len - snap->names_end);
	enc_u64(en, snap->totals.skipped);
	enc_string(en, snap->name);
	enc_string(en, snap->uri);
	enc_string(en, snap->prefix);
	for (uint32_t i = 0; i < snap->n && !en->failed; i++) {
		const struct entry *e = &snap->ents[i];
		bool dir = e->flags & ENT_DIR;
		unsigned char kind = dir ? 1 : 0;

		enc_bytes(en, &kind, 1);
		enc_string(en, snap->pool + e->name);
		enc_varint(en, ((uint64_t)e->mtime << 1) ^ (uint64_t)(e->mtime >> 63));
		if (dir) {
			enc_varint(en, e->u.dir.count);
		} else {
			enc_varint(en, e->size);
			enc_string(en, snap->pool + e->u.etag);
		}
	}
	enc_flush(en, true);
	h = XXH3_64bits_digest(en->xxh);
	bytes_put_le64(sum, h);
	memcpy(en->buf, sum, sizeof(sum));
	en->used = sizeof(sum);
	enc_flush(en, false);
	if (en->failed)
		rc = error_set(err, ERR_IO, "encode snapshot '%s': write failed", snap->name);
out:
	if (en)
		XXH3_freeState(en->xxh);
	free(en);
	return rc;
}

struct membuf {
	char *data;
	size_t len, cap;
};

static int membuf_write(const void *data, size_t len, void *arg)
{
	struct membuf *m = arg;

	if (array_grow((void **)&m->data, &m->cap, m->len + len, 1) < 0)
		return -1;
	memcpy(m->data + m->len, data, len);
	m->len += len;
	return 0;
}

enum error_code snapshot_encode_to_buffer(const struct snapshot *snap, void **buf, size_t *len,
					  struct error *err)
{
	/* Names, ETags and a few bytes of numbers per entry: start close. */
	struct membuf m = { NULL, 0, 0 };
	enum error_code rc;

	*buf = NULL;
	*len = 0;
	if (array_grow((void **)&m.data, &m.cap, snap->pool_len + (size_t)snap->n * 12 + 4096,
		       1) < 0)
		return error_set(err, ERR_NOMEM, "encode snapshot '%s': out of memory", snap->name);
	rc = snapshot_encode(snap, membuf_write, &m, err);
	if (rc != ERR_OK) {
		free(m.data);
		if (rc == ERR_IO)
			rc = error_set(err, ERR_NOMEM, "encode snapshot '%s': out of memory",
				       snap->name);
		return rc;
	}
	*buf = m.data;
	*len = m.len;
	return ERR_OK;
}

/* ---- decoding ---------------------------------------------------------- */

struct decoder {
	const unsigned char *p;
	size_t pos, end;
	struct error *err;
};

static enum error_code bad(struct decoder *d, const char *what)
{
	return error_set(d->err, ERR_IO, "snapshot: corrupt at byte %zu: %s", d->pos, what);
}

static int dec_varint(struct decoder *d, uint64_t *v)
{
	uint64_t r = 0;

	for (int shift = 0; shift < 64; shift += 7) {
		unsigned char c;

		if (d->pos >= d->end)
			return -1;
		c = d->p[d->pos++];
		if (shift == 63 && (c & 0xfe))
			return -1; /* more than 64 bits */
		r |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

/* A length-prefixed byte string of at most max bytes, without NUL. */
static int dec_bytes(struct decoder *d, size_t max, const unsigned char **s, size_t *len)
{
	uint64_t l = 0;

	if (dec_varint(d, &l) < 0 || l > max || l > d->end - d->pos)
		return -1;
	*s = d->p + d->pos;
	*len = (size_t)l;
	d->pos += (size_t)l;
	return memchr(*s, '\0', *len) ? -1 : 0;
}

static char *dec_string(struct decoder *d, size_t max)
{
	const unsigned char *s = NULL;
	size_t len = 0;

	if (dec_bytes(d, max, &s, &len) < 0)
		return NULL;
	return strndup((const char *)s, len);
}

/* Copies str[0..len) and a NUL into the pool at *at, below end. */
static int dec_pool(struct snapshot *s, size_t *at, size_t end, const unsigned char *str,
		    size_t len, uint64_t *off)
{
	if (len + 1 > end - *at)
		return -1;
	memcpy(s->pool + *at, str, len);
	s->pool[*at + len] = '\0';
	*off = *at;
	*at += len + 1;
	return 0;
}

enum error_code snapshot_decode(const void *buf, size_t len, struct snapshot **out,
				struct error *err)
{
	struct decoder d = { buf, HEADER_SIZE, 0, err };
	struct snapshot *s = NULL;
	uint64_t version, flags, n, name_bytes, etag_bytes, next = 1;
	size_t name_at = 1, etag_at = 0;
	enum error_code rc = ERR_NOMEM;
	struct error ignored;

	*out = NULL;
	if (len < HEADER_SIZE + TRAILER_SIZE)
		return error_set(err, ERR_IO,
				 "snapshot: truncated: %zu bytes, at least %d expected", len,
				 HEADER_SIZE + TRAILER_SIZE);
	if (memcmp(d.p, MAGIC, 8) != 0)
		return error_set(err, ERR_IO, "snapshot: not a snapshot (bad magic)");
	if (XXH3_64bits(d.p, len - TRAILER_SIZE) != bytes_get_le64(d.p + len - TRAILER_SIZE))
		return error_set(err, ERR_IO,
				 "snapshot: checksum mismatch: truncated or corrupted (%zu bytes)",
				 len);
	version = bytes_get_le32(d.p + 8);
	flags = bytes_get_le32(d.p + 12);
	if (version != FORMAT_VERSION || flags != 0)
		return error_set(err, ERR_UNSUPPORTED,
				 "snapshot: format version %llu flags %#llx; this build reads "
				 "version %u",
				 (unsigned long long)version, (unsigned long long)flags,
				 FORMAT_VERSION);
	d.end = len - TRAILER_SIZE;
	n = bytes_get_le64(d.p + 24);
	name_bytes = bytes_get_le64(d.p + 32);
	etag_bytes = bytes_get_le64(d.p + 40);
	/* Every entry takes at least 4 bytes and every pool byte but the
	 * first stands for an input byte (a NUL for a length byte): nothing
	 * is allocated beyond a multiple of the input's size. */
	if (n == 0 || n > MAX_ENTRIES || n > (d.end - d.pos) / 4)
		return error_set(err, ERR_IO, "snapshot: corrupt: %llu entries in %zu bytes",
				 (unsigned long long)n, len);
	if (name_bytes > len || etag_bytes > len || name_bytes + etag_bytes > len)
		return error_set(err, ERR_IO, "snapshot: corrupt: %llu + %llu string bytes in %zu",
				 (unsigned long long)name_bytes, (unsigned long long)etag_bytes,
				 len);

	s = calloc(1, sizeof(*s));
	if (!s)
		goto fail;
	s->generation = bytes_get_le64(d.p + 16);
	s->totals.skipped = bytes_get_le64(d.p + 48);
	s->n = (uint32_t)n;
	s->ents = calloc((size_t)n, sizeof(*s->ents));
	s->names_end = 1 + (size_t)name_bytes;
	s->pool_len = s->names_end + (size_t)etag_bytes;
	s->pool = malloc(s->pool_len);
	if (!s->ents || !s->pool)
		goto fail;
	s->pool[0] = '\0';
	etag_at = s->names_end;

	s->name = dec_string(&d, BLOCK_DATASET_MAX);
	if (!s->name || block_dataset_name_check(s->name, &ignored) != ERR_OK) {
		rc = bad(&d, "dataset name");
		goto fail;
	}
	s->uri = dec_string(&d, URI_MAX);
	s->prefix = dec_string(&d, PREFIX_MAX);
	if (!s->uri || !s->prefix ||
	    (s->prefix[0] && s->prefix[strlen(s->prefix) - 1] != '/')) {
		rc = bad(&d, "source URI or prefix");
		goto fail;
	}

	for (uint64_t i = 0; i < n; i++) {
		struct entry *e = &s->ents[i];
		const unsigned char *str = NULL;
		size_t slen = 0;
		uint64_t v = 0, zz = 0;

		if (d.pos >= d.end || d.p[d.pos] > 1) {
			rc = bad(&d, "entry kind");
			goto fail;
		}
		e->flags = d.p[d.pos++] ? ENT_DIR : 0;
		if (dec_bytes(&d, SNAPSHOT_NAME_MAX, &str, &slen) < 0 ||
		    (i == 0 && (slen != 0 || !(e->flags & ENT_DIR))) ||
		    (i > 0 && (segment_problem((const char *)str, slen) ||
			       memchr(str, '/', slen)))) {
			rc = bad(&d, "entry name");
			goto fail;
		}
		if (i == 0)
			e->name = 0;
		else if (dec_pool(s, &name_at, s->names_end, str, slen, &e->name) < 0)
			goto pool_overflow;
		if (dec_varint(&d, &zz) < 0) {
			rc = bad(&d, "mtime");
			goto fail;
		}
		e->mtime = (int64_t)((zz >> 1) ^ (~(zz & 1) + 1));
		if (e->flags & ENT_DIR) {
			if (dec_varint(&d, &v) < 0 || v > n - next || (v > 0 && next <= i)) {
				rc = bad(&d, "directory children");
				goto fail;
			}
			e->u.dir.first = (uint32_t)next;
			e->u.dir.count = (uint32_t)v;
			next += v;
		} else {
			if (dec_varint(&d, &e->size) < 0 || e->size > STORE_OBJECT_MAX) {
				rc = bad(&d, "size");
				goto fail;
			}
			if (dec_bytes(&d, SNAPSHOT_ETAG_MAX, &str, &slen) < 0) {
				rc = bad(&d, "etag");
				goto fail;
			}
			if (slen == 0)
				e->u.etag = 0;
			else if (dec_pool(s, &etag_at, s->pool_len, str, slen, &e->u.etag) < 0)
				goto pool_overflow;
		}
	}
	if (d.pos != d.end) {
		rc = bad(&d, "bytes after the last entry");
		goto fail;
	}
	if (next != n || name_at != s->names_end || etag_at != s->pool_len) {
		rc = error_set(err, ERR_IO, "snapshot: corrupt: entries do not form one tree");
		goto fail;
	}

	/* Parents, sibling order and totals. */
	s->totals.dirs = 1;
	for (uint32_t i = 0; i < s->n; i++) {
		const struct entry *e = &s->ents[i];

		if (!(e->flags & ENT_DIR))
			continue;
		for (uint32_t k = e->u.dir.first; k < e->u.dir.first + e->u.dir.count; k++) {
			struct entry *c = &s->ents[k];

			c->parent = i;
			if (k > e->u.dir.first &&
			    strcmp(s->pool + s->ents[k - 1].name, s->pool + c->name) >= 0) {
				rc = error_set(err, ERR_IO,
					       "snapshot: corrupt: names of directory entry %u "
					       "not sorted or repeated",
					       i);
				goto fail;
			}
			if (c->flags & ENT_DIR) {
				s->totals.dirs++;
			} else if (c->size > UINT64_MAX - s->totals.bytes) {
				rc = error_set(err, ERR_IO,
					       "snapshot: corrupt: file sizes add up past 2^64");
				goto fail;
			} else {
				s->totals.files++;
				s->totals.bytes += c->size;
			}
		}
	}
	s->mem = sizeof(*s) + (size_t)n * sizeof(*s->ents) + s->pool_len + strlen(s->name) + 1 +
		 strlen(s->uri) + 1 + strlen(s->prefix) + 1;
	*out = s;
	return ERR_OK;
pool_overflow:
	rc = bad(&d, "string pool larger than declared");
fail:
	if (rc == ERR_NOMEM)
		error_set(err, rc, "snapshot: out of memory decoding %zu bytes", len);
	snapshot_free(s);
	return rc;
}

/* ---- files ------------------------------------------------------------- */

char *snapshot_file_path(const char *dir, const char *name, uint64_t generation)
{
	char *p = NULL;

	if (asprintf(&p, "%s/%s/%llu.snap", dir, name, (unsigned long long)generation) < 0)
		return NULL;
	return p;
}

static int fd_write(const void *data, size_t len, void *arg)
{
	return fileio_write_all(*(int *)arg, data, len);
}

/* fileio_replace_with's writer: the snapshot's encoding. */
struct save_arg {
	const struct snapshot *snap;
	struct error *err;
};

static int save_write(int fd, void *arg)
{
	struct save_arg *a = arg;
	enum error_code rc;

	errno = 0;
	rc = snapshot_encode(a->snap, fd_write, &fd, a->err);
	if (rc == ERR_OK)
		return 0;
	if (rc == ERR_NOMEM)
		errno = ENOMEM;
	return -1;
}

enum error_code snapshot_save(const struct snapshot *snap, const char *dir, struct error *err)
{
	struct save_arg arg = { snap, err };
	char *sub = NULL, *path = NULL;
	enum error_code rc = ERR_OK;
	int saved;

	path = snapshot_file_path(dir, snap->name, snap->generation);
	if (!path || asprintf(&sub, "%s/%s", dir, snap->name) < 0) {
		sub = NULL;
		rc = error_set(err, ERR_NOMEM, "save snapshot '%s': out of memory", snap->name);
		goto out;
	}
	/* A new dataset directory is made durable before a file goes in it. */
	if (mkdir(sub, 0755) == 0) {
		rc = fileio_sync_dir(dir, err);
		if (rc != ERR_OK)
			goto out;
	} else if (errno != EEXIST) {
		saved = errno;
		rc = error_set(err, error_from_errno(saved), "save snapshot: mkdir '%s': %s", sub,
			       strerror(saved));
		goto out;
	}
	rc = fileio_replace_with(path, 0600, save_write, &arg, err);
	if (rc != ERR_OK)
		error_wrap(err, "save snapshot '%s'", path);
out:
	free(sub);
	free(path);
	return rc;
}

enum error_code snapshot_load(const char *path, struct snapshot **out, struct error *err)
{
	char *buf = NULL;
	size_t got = 0;
	enum error_code rc;

	*out = NULL;
	rc = fileio_read_small(path, SIZE_MAX / 2, &buf, &got, err);
	if (rc == ERR_OK)
		rc = snapshot_decode(buf, got, out, err);
	if (rc != ERR_OK)
		error_wrap(err, "load snapshot '%s'", path);
	free(buf);
	return rc;
}

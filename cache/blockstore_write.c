/*
 * blockstore_write.c - the block store's writers: room reserved at begin
 * (evicting by the dataset's policy), data appended to DIR/tmp with its
 * chunk checksums, the header written last and the file renamed into
 * place at commit; and the checks of the disk's free space.
 *
 * Two ways to write (blockstore.h): buffered, written back as it goes and
 * waited for at commit; or direct_write, where the writer keeps the block
 * in a buffer of its own (header first, then the data, 4 KiB aligned) and
 * writes it from there with O_DIRECT, WRITEBACK_STEP at a time as it
 * fills, the tail padded to 4 KiB and the file cut back to size at
 * commit.
 */
#include "cache/blockstore_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/fileio.h"
#include "common/retry.h"

/* A writer starts the writeback of its data every this many bytes, so
 * that little is left to wait for at its commit (see there). */
#define WRITEBACK_STEP (1u << 20)

struct blockstore_writer {
	struct blockstore *bs;
	struct entry *e; /* WRITING, in the index */
	int fd;
	/* direct_write: header + data (room rounded up to DISK_UNIT),
	 * DISK_UNIT aligned, written from there; NULL for a buffered writer. */
	unsigned char *buf;
	uint64_t room;   /* data bytes buf holds: the expected length, grown
			  * to max_len should more come (direct_grow) */
	/* fd has O_DIRECT; false for a block expected under direct_write_min,
	 * collected in buf all the same and written in one piece through the
	 * page cache at commit */
	bool direct;
	bool failed;     /* an append failed: commit must not publish */
	/* reserved: the capacity held, the expected length's file until
	 * more came (reserve_rest) */
	uint64_t max_len, written, reserved;
	uint64_t flushing; /* data bytes whose writeback has been started */
	uint32_t chunk_size;
	uint32_t crc;    /* CRC32C state of the chunk being written */
	uint32_t crcs[BLOCK_CHUNKS_MAX];
	char tmp_name[BLOCK_HASH_HEX + 48];
	/* Filled at write_begin but for data length, checksums and time. */
	uint8_t header[BLOCK_HEADER_SIZE];
};

/* direct_write buffers for room data bytes: a usual block's are kept for
 * reuse (BYTES_SPARE). */
static void *bytes_get(struct blockstore *bs, uint64_t room)
{
	uint64_t size = disk_size(room);
	void *p = NULL;

	if (size == bs->block_file) {
		pthread_mutex_lock(&bs->mu);
		if (bs->nspare > 0)
			p = bs->spare[--bs->nspare];
		pthread_mutex_unlock(&bs->mu);
		if (p)
			return p;
	}
	return fileio_buf_alloc((size_t)size);
}

void blockstore_bytes_put(struct blockstore *bs, void *bytes, uint64_t room)
{
	if (!bytes)
		return;
	if (disk_size(room) == bs->block_file) {
		pthread_mutex_lock(&bs->mu);
		if (bs->nspare < BYTES_SPARE) {
			bs->spare[bs->nspare++] = bytes;
			bytes = NULL;
		}
		pthread_mutex_unlock(&bs->mu);
	}
	free(bytes);
}

static enum error_code check_key(const struct block_key *key, const char *dataset,
				 uint64_t max_len, struct error *err)
{
	const char *fields[4] = { key->bucket, key->object, key->etag, dataset };
	const char *names[4] = { "bucket", "object", "etag", "dataset" };
	enum error_code rc = ERR_OK;

	for (int i = 0; i < 4; i++)
		if (!fields[i] || !*fields[i])
			return error_set(err, ERR_INVALID, "cache block: empty %s", names[i]);
	if (!key->endpoint)
		return error_set(err, ERR_INVALID, "cache block of '%s': no endpoint", key->object);
	rc = check_dataset_name(dataset, "cache block", err);
	if (rc != ERR_OK)
		return rc;
	if (key->block_size == 0)
		return error_set(err, ERR_INVALID, "cache block of '%s': block size 0", key->object);
	if (max_len > key->block_size)
		return error_set(err, ERR_INVALID,
				 "cache block %llu of '%s': length %llu exceeds the block size %u",
				 (unsigned long long)key->index, key->object,
				 (unsigned long long)max_len, key->block_size);
	return block_header_fits(key, dataset, err);
}

enum error_code blockstore_write_begin(struct blockstore *bs, const struct block_key *key,
				       const char *dataset, uint64_t max_len,
				       struct blockstore_writer **out, struct error *err)
{
	return blockstore_write_begin_expect(bs, key, dataset, max_len, max_len, out, err);
}

enum error_code blockstore_write_begin_expect(struct blockstore *bs, const struct block_key *key,
					      const char *dataset, uint64_t max_len,
					      uint64_t expect_len,
					      struct blockstore_writer **out, struct error *err)
{
	struct blockstore_writer *w = NULL;
	struct entry *victims = NULL;
	struct entry *e = NULL;
	char hex[BLOCK_HASH_HEX];
	const char *why = NULL;
	const uint64_t reserve_len = expect_len < max_len ? expect_len : max_len;
	uint64_t need = disk_size(reserve_len);
	bool indexed = false;
	bool free_it = false;
	int saved = 0;
	enum error_code rc = ERR_OK;

	*out = NULL;
	rc = check_key(key, dataset, max_len, err);
	if (rc != ERR_OK)
		return rc;
	w = calloc(1, sizeof(*w));
	e = entry_new();
	if (!w || !e)
		goto oom;
	w->fd = -1;
	w->bs = bs;
	w->e = e;
	w->max_len = max_len;
	w->chunk_size = block_chunk_size(key->block_size);
	w->crc = CRC32C_INIT;
	e->state = ENTRY_WRITING;
	block_key_hash(key, e->hash);
	block_hash_hex(e->hash, hex);
	block_header_prepare(w->header, key, dataset);
	snprintf(w->tmp_name, sizeof(w->tmp_name), "%s.%ld.%llu", hex, (long)getpid(),
		 (unsigned long long)atomic_fetch_add(&bs->tmp_seq, 1));

	pthread_mutex_lock(&bs->mu);
	{
		struct entry *found = NULL;

		HASH_FIND(hh, bs->index, e->hash, BLOCK_HASH_LEN, found);
		if (found) {
			enum entry_state state = found->state;

			pthread_mutex_unlock(&bs->mu);
			rc = error_set(err, ERR_EXISTS, "cache block '%s' in '%s': %s", hex,
				       bs->dir,
				       state == ENTRY_WRITING ? "being written"
				       : state == ENTRY_LIVE  ? "already cached"
							      : "being removed");
			goto fail;
		}
	}
	e->ds = blockstore_dataset_get_locked(bs, dataset, strlen(dataset));
	if (!e->ds || index_add_locked(bs, e) < 0) {
		pthread_mutex_unlock(&bs->mu);
		goto oom;
	}
	indexed = true;
	if (need > bs->capacity) {
		why = "larger than the whole cache";
		rc = ERR_NO_SPACE;
	} else if (bs->capacity - bs->used - bs->reserved < need) {
		rc = blockstore_make_room_locked(bs, e, need, &victims, &why);
	}
	if (rc != ERR_OK) {
		bs->st.rejected++;
		index_remove_locked(bs, e);
		indexed = false;
		pthread_mutex_unlock(&bs->mu);
		rc = error_set(err, rc, "cache block '%s' (%llu bytes) in '%s': %s", hex,
			       (unsigned long long)need, bs->dir, why);
		goto fail;
	}
	bs->reserved += need;
	w->reserved = need;
	bs->st.admitted++;
	pthread_mutex_unlock(&bs->mu);

	if (victims)
		blockstore_remove_dying(bs, victims);
	if (atomic_load(&bs->direct_write)) {
		/* NULL: no memory, this block goes buffered. A store sends a
		 * small file in pieces (16 KiB over chunked encoding): kept
		 * here, they make one write at commit instead of one each. */
		w->room = reserve_len;
		w->buf = bytes_get(bs, w->room);
		w->direct = w->buf && max_len >= bs->direct_write_min &&
			    expect_len >= bs->direct_write_min;
	}
	w->fd = openat(bs->tmp_fd, w->tmp_name,
		       O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | (w->direct ? O_DIRECT : 0),
		       BLOCKSTORE_FILE_MODE);
	if (w->fd < 0 && w->direct && errno == EINVAL) {
		/* The filesystem has no O_DIRECT (the file may exist by now):
		 * the block is written from the buffer through the page cache. */
		if (atomic_exchange(&bs->direct_write, false))
			log_warn("the cache directory's filesystem refuses O_DIRECT: blocks are written through the page cache",
				 LOG_S("dir", bs->dir));
		w->direct = false;
		w->fd = openat(bs->tmp_fd, w->tmp_name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
			       BLOCKSTORE_FILE_MODE);
	}
	if (w->fd < 0) {
		saved = errno;
		rc = error_set(err, saved == ENOSPC || saved == EDQUOT ? ERR_NO_SPACE : ERR_IO,
			       "cache block '%s': create '%s/tmp/%s': %s", hex, bs->dir,
			       w->tmp_name, strerror(saved));
		goto fail;
	}
	*out = w;
	return ERR_OK;
oom:
	rc = error_set(err, ERR_NOMEM, "cache block of '%s' in '%s': out of memory", key->object,
		       bs->dir);
fail:
	if (indexed) {
		pthread_mutex_lock(&bs->mu);
		bs->reserved -= w->reserved;
		free_it = index_remove_locked(bs, e);
		pthread_mutex_unlock(&bs->mu);
	} else {
		free_it = true;
	}
	if (free_it)
		free(e);
	if (w)
		blockstore_bytes_put(bs, w->buf, w->room);
	free(w);
	return rc;
}

/* Advances the writer's chunk checksums over data appended at w->written. */
static void writer_crc(struct blockstore_writer *w, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		uint64_t in_chunk = w->written % w->chunk_size;
		size_t n = len < w->chunk_size - in_chunk ? len : (size_t)(w->chunk_size - in_chunk);

		w->crc = crc32c_update(w->crc, p, n);
		w->written += n;
		p += n;
		len -= n;
		if (w->written % w->chunk_size == 0) {
			w->crcs[w->written / w->chunk_size - 1] = w->crc ^ CRC32C_INIT;
			w->crc = CRC32C_INIT;
		}
	}
}

/* A failed write of the block's data: ERR_NO_SPACE for a full disk. */
static enum error_code write_failed(struct blockstore_writer *w, int saved, struct error *err)
{
	char hex[BLOCK_HASH_HEX];

	w->failed = true;
	block_hash_hex(w->e->hash, hex);
	return error_set(err, saved == ENOSPC || saved == EDQUOT ? ERR_NO_SPACE : ERR_IO,
			 "cache block '%s': write '%s/tmp/%s': %s", hex, w->bs->dir, w->tmp_name,
			 strerror(saved));
}

/*
 * More bytes came than the writer expected (its object's size was not
 * what the caller was told): its reservation grows to max_len's room,
 * making room as a new block's would. Refused, the writer fails with
 * ERR_NO_SPACE and its bytes so far can still be read back (the fetcher
 * serves them from memory).
 */
static enum error_code reserve_rest(struct blockstore_writer *w, struct error *err)
{
	struct blockstore *bs = w->bs;
	const uint64_t more = disk_size(w->max_len) - w->reserved;
	struct entry *victims = NULL;
	const char *why = "larger than the whole cache";
	char hex[BLOCK_HASH_HEX];
	enum error_code rc = ERR_NO_SPACE;

	pthread_mutex_lock(&bs->mu);
	if (disk_size(w->max_len) <= bs->capacity) {
		rc = ERR_OK;
		if (bs->capacity - bs->used - bs->reserved < more)
			rc = blockstore_make_room_locked(bs, w->e, more, &victims, &why);
	}
	if (rc == ERR_OK) {
		bs->reserved += more;
		w->reserved += more;
	} else {
		bs->st.rejected++;
	}
	pthread_mutex_unlock(&bs->mu);
	if (victims)
		blockstore_remove_dying(bs, victims);
	if (rc == ERR_OK)
		return ERR_OK;
	w->failed = true;
	block_hash_hex(w->e->hash, hex);
	return error_set(err, rc,
			 "cache block '%s' in '%s': more bytes came after %llu than expected, and no room for up to %llu: %s",
			 hex, bs->dir, (unsigned long long)w->written,
			 (unsigned long long)w->max_len, why);
}

/* More bytes came than the writer expected: its buffer becomes one of
 * max_len, what it holds copied over. */
static enum error_code direct_grow(struct blockstore_writer *w, struct error *err)
{
	unsigned char *big = bytes_get(w->bs, w->max_len);
	char hex[BLOCK_HASH_HEX];

	if (!big) {
		w->failed = true;
		block_hash_hex(w->e->hash, hex);
		return error_set(err, ERR_NOMEM,
				 "cache block '%s': out of memory for its %llu bytes", hex,
				 (unsigned long long)w->max_len);
	}
	memcpy(big, w->buf, (size_t)(BLOCK_HEADER_SIZE + w->written));
	blockstore_bytes_put(w->bs, w->buf, w->room);
	w->buf = big;
	w->room = w->max_len;
	return ERR_OK;
}

/* direct_write: the bytes go to the writer's buffer, and every whole
 * WRITEBACK_STEP of it to the file (aligned in memory and on disk). */
static enum error_code direct_append(struct blockstore_writer *w, const void *data, size_t len,
				     struct error *err)
{
	if (len > w->room - w->written && direct_grow(w, err) != ERR_OK)
		return err->code;
	memcpy(w->buf + BLOCK_HEADER_SIZE + w->written, data, len);
	writer_crc(w, data, len);
	while (w->written - w->flushing >= WRITEBACK_STEP) {
		if (fileio_pwrite_all(w->fd, w->buf + BLOCK_HEADER_SIZE + w->flushing,
				      WRITEBACK_STEP, (off_t)(BLOCK_HEADER_SIZE + w->flushing)) < 0)
			return write_failed(w, errno, err);
		w->flushing += WRITEBACK_STEP;
	}
	return ERR_OK;
}

/* direct_write, at commit: the tail of the data padded to DISK_UNIT, the
 * sealed header, and the file cut back to its size. A block written
 * through the page cache (a writer without O_DIRECT, or one whose block
 * turned out shorter than direct_write_min: a small file's, begun with a
 * whole block's room) gets what is left of it and its header as they
 * are, and 1 is returned: the caller writes it back as it does a writer's
 * without a buffer. */
static int direct_finish(struct blockstore_writer *w)
{
	uint64_t tail = w->written - w->flushing;
	uint64_t padded = (tail + DISK_UNIT - 1) / DISK_UNIT * DISK_UNIT;
	unsigned char *at = w->buf + BLOCK_HEADER_SIZE + w->flushing;

	memcpy(w->buf, w->header, BLOCK_HEADER_SIZE);
	if (w->direct && w->flushing == 0 && w->written < w->bs->direct_write_min) {
		int flags = fcntl(w->fd, F_GETFL);

		if (flags < 0 || fcntl(w->fd, F_SETFL, flags & ~O_DIRECT) < 0)
			return -1;
		w->direct = false;
	}
	if (!w->direct) {
		if (w->flushing == 0)
			return fileio_pwrite_all(w->fd, w->buf, (size_t)(BLOCK_HEADER_SIZE + tail),
						 0) < 0 ? -1 : 1;
		if (fileio_pwrite_all(w->fd, at, (size_t)tail,
				      (off_t)(BLOCK_HEADER_SIZE + w->flushing)) < 0 ||
		    fileio_pwrite_all(w->fd, w->buf, BLOCK_HEADER_SIZE, 0) < 0)
			return -1;
		return 1;
	}
	memset(at + tail, 0, (size_t)(padded - tail));
	if (w->flushing == 0) {
		/* Nothing written yet (a block under WRITEBACK_STEP): header
		 * and data in one write, one wait for the disk instead of
		 * two. The file is renamed into place only once the write is
		 * done, so its order does not matter. */
		if (fileio_pwrite_all(w->fd, w->buf, (size_t)(BLOCK_HEADER_SIZE + padded), 0) < 0)
			return -1;
	} else {
		if (padded && fileio_pwrite_all(w->fd, at, (size_t)padded,
						(off_t)(BLOCK_HEADER_SIZE + w->flushing)) < 0)
			return -1;
		if (fileio_pwrite_all(w->fd, w->buf, BLOCK_HEADER_SIZE, 0) < 0)
			return -1;
	}
	if (padded != tail && ftruncate(w->fd, (off_t)(BLOCK_HEADER_SIZE + w->written)) < 0)
		return -1;
	return 0;
}

enum error_code blockstore_write_append(struct blockstore_writer *w, const void *data, size_t len,
					struct error *err)
{
	char hex[BLOCK_HASH_HEX];

	if (w->failed || len > w->max_len - w->written) {
		block_hash_hex(w->e->hash, hex);
		if (w->failed)
			return error_set(err, ERR_IO, "cache block '%s': an earlier write failed", hex);
		w->failed = true;
		return error_set(err, ERR_INVALID,
				 "cache block '%s': %llu more bytes pass the reserved %llu", hex,
				 (unsigned long long)len, (unsigned long long)w->max_len);
	}
	if (disk_size(w->written + len) > w->reserved && reserve_rest(w, err) != ERR_OK)
		return err->code;
	if (w->buf)
		return direct_append(w, data, len, err);
	if (fileio_pwrite_all(w->fd, data, len, BLOCK_HEADER_SIZE + w->written) < 0)
		return write_failed(w, errno, err);
	writer_crc(w, data, len);
	if (w->written - w->flushing >= WRITEBACK_STEP) {
		uint64_t to = w->written / WRITEBACK_STEP * WRITEBACK_STEP;

		/* Starts the writes and returns; an error here shows at commit. */
		sync_file_range(w->fd, (off_t)(BLOCK_HEADER_SIZE + w->flushing),
				(off_t)(to - w->flushing), SYNC_FILE_RANGE_WRITE);
		w->flushing = to;
	}
	return ERR_OK;
}

enum error_code blockstore_write_read_back(struct blockstore_writer *w, void *buf, uint64_t *len,
					   struct error *err)
{
	ssize_t n;

	*len = w->written;
	if (w->buf) {
		memcpy(buf, w->buf + BLOCK_HEADER_SIZE, (size_t)w->written);
		return ERR_OK;
	}
	n = fileio_pread_all(w->fd, buf, (size_t)w->written, BLOCK_HEADER_SIZE);
	if (n != (ssize_t)w->written)
		return error_set(err, ERR_IO, "cache block: read back '%s/tmp/%s': %s", w->bs->dir,
				 w->tmp_name, n < 0 ? strerror(errno) : "short file");
	return ERR_OK;
}

const void *blockstore_write_kept(const struct blockstore_writer *w, uint64_t *len)
{
	*len = w->written;
	return w->buf && w->direct ? w->buf + BLOCK_HEADER_SIZE : NULL;
}

bool blockstore_disk_full(struct blockstore *bs, uint64_t *capacity)
{
	struct entry *victims = NULL;
	struct statvfs sv;
	uint64_t fs_free, cap;
	bool lowered = false;

	if (fstatvfs(bs->tmp_fd, &sv) != 0)
		return false;
	fs_free = (uint64_t)(geteuid() == 0 ? sv.f_bfree : sv.f_bavail) * sv.f_frsize;
	pthread_mutex_lock(&bs->mu);
	/* What the disk holds: our blocks and what is still free. */
	cap = bs->used + bs->reserved + fs_free;
	if (cap < bs->block_file)
		cap = bs->block_file;
	if (fs_free < bs->block_file && cap < bs->capacity) {
		bs->capacity = cap;
		lowered = true;
	}
	/* Room for the next block, from the least recently used. */
	for (struct entry *v = bs->lru.tail, *prev = NULL;
	     v && bs->used + bs->reserved + bs->block_file > bs->capacity; v = prev) {
		prev = v->prev;
		if (v->refs > 0)
			continue;
		entry_kill_locked(bs, v);
		v->next = victims;
		victims = v;
		bs->st.evictions++;
	}
	if (lowered)
		bs->st.disk_full++;
	*capacity = bs->capacity;
	pthread_mutex_unlock(&bs->mu);
	if (victims)
		blockstore_remove_dying(bs, victims);
	return lowered;
}

static void writer_free(struct blockstore_writer *w)
{
	if (w->fd >= 0)
		close(w->fd);
	blockstore_bytes_put(w->bs, w->buf, w->room);
	free(w);
}

void blockstore_write_abort(struct blockstore *bs, struct blockstore_writer *w)
{
	struct entry *e = NULL;

	if (!w)
		return;
	e = w->e;
	if (w->fd >= 0) {
		close(w->fd);
		w->fd = -1;
	}
	unlinkat(bs->tmp_fd, w->tmp_name, 0);
	pthread_mutex_lock(&bs->mu);
	bs->reserved -= w->reserved;
	index_remove_locked(bs, e); /* a WRITING entry is never held */
	pthread_mutex_unlock(&bs->mu);
	free(e);
	writer_free(w);
}

enum error_code blockstore_write_commit(struct blockstore *bs, struct blockstore_writer *w,
					struct blockstore_ref **ref, struct error *err)
{
	return blockstore_write_commit_bytes(bs, w, ref, NULL, NULL, err);
}

enum error_code blockstore_write_commit_bytes(struct blockstore *bs, struct blockstore_writer *w,
					      struct blockstore_ref **ref, void **bytes,
					      uint64_t *room, struct error *err)
{
	struct entry *e = w->e;
	/* Bytes handed over are what the caller serves: no descriptor. A
	 * block written through the page cache from its start is served from
	 * its file, whose pages its reader drops (block_file_drop). */
	const bool give = bytes && w->buf && w->direct;
	char rel[BLOCK_REL_PATH_LEN];
	char hex[BLOCK_HASH_HEX];
	const char *what = NULL;
	int rfd = -1;
	int fd = -1;
	int saved = 0;

	if (ref)
		*ref = NULL;
	if (bytes)
		*bytes = NULL;
	if (room)
		*room = w->room;
	if (give)
		ref = NULL;
	block_hash_hex(e->hash, hex);
	block_file_rel_path(e->hash, rel);
	if (w->failed) {
		blockstore_write_abort(bs, w);
		return error_set(err, ERR_IO, "cache block '%s': an earlier write failed", hex);
	}
	if (w->written % w->chunk_size != 0)
		w->crcs[w->written / w->chunk_size] = w->crc ^ CRC32C_INIT;
	block_header_seal(w->header, w->written, w->crcs, retry_wall_ms() / 1000);
	/* The header goes last: a file cut short before this has none and
	 * would fail the checks at start even had it been renamed. */
	if (w->buf) {
		int done = direct_finish(w);

		if (done < 0) {
			what = "write";
			goto fail;
		}
		if (done == 0)
			goto written; /* with O_DIRECT: nothing to write back */
	} else if (fileio_pwrite_all(w->fd, w->header, sizeof(w->header), 0) < 0) {
		what = "write header";
		goto fail;
	}
	/*
	 * Written back before it is published, though not fsync'd (nothing
	 * asks the disk to make it durable): the reader that drops the pages
	 * it read (block_file_drop) can drop only clean ones, and every byte
	 * of a block is meant to leave the page cache once read. Most of the
	 * data is on its way already (WRITEBACK_STEP).
	 */
	if (sync_file_range(w->fd, 0, 0,
			    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
				    SYNC_FILE_RANGE_WAIT_AFTER) < 0) {
		what = "write back";
		goto fail;
	}
written:
	fd = w->fd;
	w->fd = -1;
	if (ref && w->buf && !w->direct &&
	    !(bs->direct_read && w->written >= BLOCK_DIRECT_MIN)) {
		/*
		 * Written through the page cache in one piece (expected
		 * under direct_write_min: a small file's block): its
		 * writer's descriptor, without O_DIRECT, is the readers' as
		 * it is. They read the pages just written, and drop them;
		 * read advice would change nothing for them. Saves a close,
		 * an open and an fadvise per small file.
		 */
		rfd = fd;
	} else {
		if (close(fd) < 0) {
			what = "close";
			goto fail;
		}
		if (ref) {
			/* Same inode as the published file; opened before the
			 * rename so that a failure here still leaves nothing
			 * published. */
			rfd = block_file_open_read(bs->tmp_fd, w->tmp_name, 0);
			if (rfd < 0) {
				what = "reopen";
				goto fail;
			}
			block_file_read_advice(rfd);
		}
	}
	/* The block's subdirectory (blocks/XX) exists for every block but
	 * the first of its 256: it is made when the rename finds it missing,
	 * not tried before every rename. */
	if (renameat(bs->tmp_fd, w->tmp_name, bs->blocks_fd, rel) < 0) {
		if (errno != ENOENT) {
			what = "rename";
			goto fail;
		}
		rel[2] = '\0';
		if (mkdirat(bs->blocks_fd, rel, BLOCKSTORE_DIR_MODE) < 0 && errno != EEXIST) {
			rel[2] = '/';
			what = "mkdir";
			goto fail;
		}
		rel[2] = '/';
		if (renameat(bs->tmp_fd, w->tmp_name, bs->blocks_fd, rel) < 0) {
			what = "rename";
			goto fail;
		}
	}

	pthread_mutex_lock(&bs->mu);
	e->state = ENTRY_LIVE;
	e->data_len = w->written;
	e->disk = disk_size(w->written);
	bs->reserved -= w->reserved;
	bs->used += e->disk;
	e->ds->bytes += e->data_len;
	bs->st.blocks++;
	lru_push_head(entry_list_locked(bs, e), e);
	if (ref) {
		e->refs = 1;
		e->fd = rfd;
		rfd = -1;
		*ref = &e->ref;
	}
	pthread_mutex_unlock(&bs->mu);
	if (give) {
		*bytes = w->buf;
		w->buf = NULL;
	}
	writer_free(w);
	return ERR_OK;
fail:
	saved = errno;
	if (rfd >= 0)
		close(rfd);
	if (bytes) {
		/* The block is not cached, but its bytes are all here: the
		 * caller can still serve them (a full disk must not fail
		 * reads). */
		*bytes = w->buf;
		w->buf = NULL;
	}
	blockstore_write_abort(bs, w);
	return error_set(err, saved == ENOSPC || saved == EDQUOT ? ERR_NO_SPACE : ERR_IO,
			 "cache block '%s' in '%s': %s: %s", hex, bs->dir, what, strerror(saved));
}

enum error_code blockstore_room_check(const char *dir, uint64_t fs_free, uint64_t capacity,
				      uint64_t used, uint64_t reserved, uint64_t need,
				      struct error *err)
{
	uint64_t held = used + reserved;

	if (fs_free >= need || held > capacity || capacity - held < need)
		return ERR_OK;
	return error_set(err, ERR_NO_SPACE,
			 "cache directory '%s' is full: %llu bytes free on its filesystem, a block needs %llu, and the cache evicts only at its capacity (%llu of %llu bytes used): free space there or lower cache.capacity",
			 dir, (unsigned long long)fs_free, (unsigned long long)need,
			 (unsigned long long)held, (unsigned long long)capacity);
}

enum error_code blockstore_check_usable(struct blockstore *bs, struct error *err)
{
	char name[64];
	struct statvfs sv;
	uint64_t used, reserved, fs_free;
	int fd, saved;

	snprintf(name, sizeof(name), ".usable.%ld.%llu", (long)getpid(),
		 (unsigned long long)atomic_fetch_add(&bs->tmp_seq, 1));
	fd = openat(bs->tmp_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		saved = errno;
		return error_set(err, error_from_errno(saved),
				 "cache directory '%s' is not writable: create '%s/tmp/%s': %s",
				 bs->dir, bs->dir, name, strerror(saved));
	}
	close(fd);
	unlinkat(bs->tmp_fd, name, 0);
	if (fstatvfs(bs->tmp_fd, &sv) != 0) {
		saved = errno;
		return error_set(err, error_from_errno(saved), "cache directory '%s': statvfs: %s",
				 bs->dir, strerror(saved));
	}
	/* Root may use the blocks the filesystem reserves for it. */
	fs_free = (uint64_t)(geteuid() == 0 ? sv.f_bfree : sv.f_bavail) * sv.f_frsize;
	pthread_mutex_lock(&bs->mu);
	used = bs->used;
	reserved = bs->reserved;
	pthread_mutex_unlock(&bs->mu);
	return blockstore_room_check(bs->dir, fs_free, bs->capacity, used, reserved,
				     bs->block_file, err);
}


/*
 * file.c - block file paths, headers and checked reads.
 */
#include "block/file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <xxhash.h>

#include "block/name.h"
#include "common/bytes.h"
#include "common/crc32c.h"
#include "common/fileio.h"

/* Header layout: docs/cache-layout.md. */
static const uint8_t hdr_magic[8] = { 'G', 'R', 'N', 'B', 'L', 'K', '2', '\0' };
#define HDR_OFF_MAGIC 0
#define HDR_OFF_HEADER_SIZE 8
#define HDR_OFF_BLOCK_SIZE 12
#define HDR_OFF_DATA_LEN 16
#define HDR_OFF_CHUNK_SIZE 24
#define HDR_OFF_INDEX 32
#define HDR_OFF_CREATED 40
#define HDR_OFF_STRINGS 48
#define HDR_OFF_CHECKSUM (BLOCK_HEADER_SIZE - 8)
#define HDR_OFF_CHUNKS (HDR_OFF_CHECKSUM - 4 * BLOCK_CHUNKS_MAX)
#define HDR_NSTRINGS 5 /* dataset, endpoint, bucket, etag, object */

/* --- data checksums --- */

static uint64_t chunk_count(uint64_t data_len, uint32_t chunk_size)
{
	return (data_len + chunk_size - 1) / chunk_size;
}

uint32_t block_chunk_size(uint32_t block_size)
{
	uint32_t c = block_size / BLOCK_CHUNKS_MAX;

	return c < BLOCK_CHUNK_MIN ? BLOCK_CHUNK_MIN : c;
}

uint32_t block_crc32c(const void *data, size_t len)
{
	return crc32c(data, len);
}

void block_sums_of_range(const void *data, uint64_t len, uint32_t block_size, uint64_t off,
			 uint64_t n, struct block_sums *out)
{
	const uint64_t end = off + n < len ? off + n : len;

	out->data_len = len;
	out->chunk_size = block_chunk_size(block_size);
	for (uint64_t c = off / out->chunk_size * out->chunk_size; c < end; c += out->chunk_size) {
		uint64_t m = len - c < out->chunk_size ? len - c : out->chunk_size;

		out->crc[c / out->chunk_size] = block_crc32c((const char *)data + c, (size_t)m);
	}
}

void block_sums_of(const void *data, uint64_t len, uint32_t block_size,
			struct block_sums *out)
{
	block_sums_of_range(data, len, block_size, 0, len, out);
}

bool block_sums_check(const struct block_sums *s, uint64_t off, const void *data,
			   size_t len)
{
	const char *p = data;

	if (off % s->chunk_size != 0 || off > s->data_len || len > s->data_len - off ||
	    (len % s->chunk_size != 0 && off + len != s->data_len))
		return false;
	for (uint64_t done = 0; done < len;) {
		uint64_t n = len - done < s->chunk_size ? len - done : s->chunk_size;

		if (block_crc32c(p + done, (size_t)n) != s->crc[(off + done) / s->chunk_size])
			return false;
		done += n;
	}
	return true;
}

/*
 * Reads data bytes [off, off + n) of the chunks that hold them, checked,
 * into dst: whole chunks straight into dst, a chunk the range only cuts
 * through into a bounce buffer first. Returns 0, -1 with errno for a read
 * error, -2 for a short file, -3 for a checksum mismatch (*bad_off: the
 * data offset of the chunk).
 */
static int read_checked(int fd, const struct block_sums *s, uint64_t off, size_t n,
			char *dst, uint64_t *bad_off)
{
	const uint64_t cs = s->chunk_size, end = off + n;
	char *bounce = NULL;
	uint64_t at = off;
	int rc = 0;

	while (rc == 0 && at < end) {
		uint64_t c0 = at / cs * cs, c1 = c0 + cs < s->data_len ? c0 + cs : s->data_len;
		uint64_t run_end = c0, len;
		ssize_t got;

		if (c0 == at && c1 <= end) {
			/* a run of whole chunks: one read, then a check per chunk */
			while (run_end < end) {
				uint64_t next = run_end + cs < s->data_len ? run_end + cs : s->data_len;

				if (next > end)
					break;
				run_end = next;
			}
			len = run_end - c0;
			got = fileio_pread_all(fd, dst + (c0 - off), (size_t)len,
					       BLOCK_HEADER_SIZE + c0);
			if (got < 0 || (uint64_t)got != len) {
				rc = got < 0 ? -1 : -2;
				break;
			}
			for (uint64_t c = c0; c < run_end; c += cs) {
				uint64_t m = run_end - c < cs ? run_end - c : cs;

				if (block_crc32c(dst + (c - off), (size_t)m) != s->crc[c / cs]) {
					*bad_off = c;
					rc = -3;
					break;
				}
			}
			at = run_end;
			continue;
		}
		if (!bounce && !(bounce = malloc(cs))) {
			errno = ENOMEM;
			rc = -1;
			break;
		}
		len = c1 - c0;
		got = fileio_pread_all(fd, bounce, (size_t)len, BLOCK_HEADER_SIZE + c0);
		if (got < 0 || (uint64_t)got != len) {
			rc = got < 0 ? -1 : -2;
			break;
		}
		if (block_crc32c(bounce, (size_t)len) != s->crc[c0 / cs]) {
			*bad_off = c0;
			rc = -3;
			break;
		}
		len = (c1 < end ? c1 : end) - at;
		memcpy(dst + (at - off), bounce + (at - c0), (size_t)len);
		at += len;
	}
	free(bounce);
	return rc;
}

enum error_code block_read_checked(int fd, const struct block_sums *s, uint64_t off,
					size_t len, void *dst, bool *corrupt, struct error *err)
{
	uint64_t bad = 0;
	int rc;

	*corrupt = false;
	if (off > s->data_len || len > s->data_len - off)
		return error_set(err, ERR_RANGE, "read %zu bytes at %llu of a block of %llu", len,
				 (unsigned long long)off, (unsigned long long)s->data_len);
	rc = read_checked(fd, s, off, len, dst, &bad);
	if (len > 0) {
		/* the whole chunks read, the bytes asked for among them */
		uint64_t c0 = off / s->chunk_size * s->chunk_size;
		uint64_t c1 = (off + len + s->chunk_size - 1) / s->chunk_size * s->chunk_size;

		block_file_drop(fd, c0, (c1 < s->data_len ? c1 : s->data_len) - c0, s->data_len);
	}
	if (rc == -1)
		return error_set(err, error_from_errno(errno), "read cached block: %s",
				 strerror(errno));
	if (rc == -2) {
		*corrupt = true;
		return error_set(err, ERR_IO, "cached block is shorter than its header says");
	}
	if (rc == -3) {
		*corrupt = true;
		return error_set(err, ERR_IO,
				 "cached block failed its checksum: CRC32C of the %u bytes at %llu differs",
				 s->chunk_size, (unsigned long long)bad);
	}
	return ERR_OK;
}

void block_file_drop(int fd, uint64_t off, uint64_t len, uint64_t data_len)
{
	if (len == 0)
		return;
	if (off + len >= data_len)
		fileio_drop_cached(fd, 0, 0);
	else
		fileio_drop_cached(fd, BLOCK_HEADER_SIZE + off, len);
}

void block_file_read_advice(int fd)
{
	posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
}

bool block_file_read_direct(int fd, uint64_t data_len)
{
	int flags;

	if (data_len < BLOCK_DIRECT_MIN)
		return false;
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_DIRECT) != 0)
		return false;
	fileio_drop_cached(fd, 0, BLOCK_HEADER_SIZE);
	return true;
}

/* Set once the kernel refused O_NOATIME (files of another owner, no
 * CAP_FOWNER): later opens do not ask again. */
static atomic_bool noatime_refused;

int block_file_open_read(int dir_fd, const char *path, int flags)
{
	int fd;

	flags |= O_RDONLY | O_CLOEXEC;
	if (!atomic_load_explicit(&noatime_refused, memory_order_relaxed)) {
		fd = openat(dir_fd, path, flags | O_NOATIME);
		if (fd >= 0 || errno != EPERM)
			return fd;
		atomic_store_explicit(&noatime_refused, true, memory_order_relaxed);
	}
	return openat(dir_fd, path, flags);
}

/* --- paths --- */

void block_file_rel_path(const uint8_t hash[BLOCK_HASH_LEN], char out[BLOCK_REL_PATH_LEN])
{
	char hex[BLOCK_HASH_HEX];

	block_hash_hex(hash, hex);
	snprintf(out, BLOCK_REL_PATH_LEN, "%.2s/%s", hex, hex);
}

int block_file_path(const char *dir, const uint8_t hash[BLOCK_HASH_LEN], char *out, size_t size)
{
	char rel[BLOCK_REL_PATH_LEN];

	block_file_rel_path(hash, rel);
	return snprintf(out, size, "%s/blocks/%s", dir, rel);
}

/* --- header --- */

enum error_code block_header_fits(const struct block_key *key, const char *dataset,
				  struct error *err)
{
	size_t strings = 2 * HDR_NSTRINGS + strlen(dataset) + strlen(key->endpoint) +
			 strlen(key->bucket) + strlen(key->etag) + strlen(key->object);

	if (strlen(key->object) > BLOCK_OBJECT_MAX)
		return error_set(err, ERR_INVALID,
				 "cache block of '%.64s...': object key is longer than %d bytes",
				 key->object, BLOCK_OBJECT_MAX);
	if (HDR_OFF_STRINGS + strings > HDR_OFF_CHUNKS)
		return error_set(err, ERR_INVALID,
				 "cache block of '%.64s': endpoint, bucket, etag and key are too long for a block header",
				 key->object);
	return ERR_OK;
}

void block_header_prepare(uint8_t *h, const struct block_key *key, const char *dataset)
{
	const char *strs[HDR_NSTRINGS] = { dataset, key->endpoint, key->bucket, key->etag,
					   key->object };
	size_t off = HDR_OFF_STRINGS;

	memset(h, 0, BLOCK_HEADER_SIZE);
	memcpy(h + HDR_OFF_MAGIC, hdr_magic, sizeof(hdr_magic));
	bytes_put_le32(h + HDR_OFF_HEADER_SIZE, BLOCK_HEADER_SIZE);
	bytes_put_le32(h + HDR_OFF_BLOCK_SIZE, key->block_size);
	bytes_put_le32(h + HDR_OFF_CHUNK_SIZE, block_chunk_size(key->block_size));
	bytes_put_le64(h + HDR_OFF_INDEX, key->index);
	for (int i = 0; i < HDR_NSTRINGS; i++) {
		size_t n = strlen(strs[i]);

		bytes_put_le16(h + off, (uint16_t)n);
		memcpy(h + off + 2, strs[i], n);
		off += 2 + n;
	}
}

void block_header_seal(uint8_t *h, uint64_t data_len, const uint32_t *crcs, int64_t created)
{
	uint32_t chunk_size = bytes_get_le32(h + HDR_OFF_CHUNK_SIZE);

	bytes_put_le64(h + HDR_OFF_DATA_LEN, data_len);
	for (uint64_t i = 0; i < chunk_count(data_len, chunk_size); i++)
		bytes_put_le32(h + HDR_OFF_CHUNKS + 4 * i, crcs[i]);
	bytes_put_le64(h + HDR_OFF_CREATED, (uint64_t)created);
	bytes_put_le64(h + HDR_OFF_CHECKSUM, XXH3_64bits(h, HDR_OFF_CHECKSUM));
}

const char *block_header_parse(const uint8_t *h, struct block_header *out)
{
	struct block_header_string *strs[HDR_NSTRINGS] = { &out->dataset, &out->endpoint,
							   &out->bucket, &out->etag, &out->object };
	size_t off = HDR_OFF_STRINGS;

	if (memcmp(h + HDR_OFF_MAGIC, hdr_magic, sizeof(hdr_magic)) != 0)
		return "bad magic";
	if (bytes_get_le32(h + HDR_OFF_HEADER_SIZE) != BLOCK_HEADER_SIZE)
		return "unknown header size";
	if (bytes_get_le64(h + HDR_OFF_CHECKSUM) != XXH3_64bits(h, HDR_OFF_CHECKSUM))
		return "header checksum mismatch";
	out->block_size = bytes_get_le32(h + HDR_OFF_BLOCK_SIZE);
	out->data_len = bytes_get_le64(h + HDR_OFF_DATA_LEN);
	out->chunk_size = bytes_get_le32(h + HDR_OFF_CHUNK_SIZE);
	out->index = bytes_get_le64(h + HDR_OFF_INDEX);
	out->crcs = h + HDR_OFF_CHUNKS;
	if (out->block_size == 0 || out->data_len > out->block_size)
		return "data length exceeds the block size";
	if (out->chunk_size != block_chunk_size(out->block_size))
		return "wrong chunk size";
	for (int i = 0; i < HDR_NSTRINGS; i++) {
		size_t n = 0;

		if (off + 2 > HDR_OFF_CHUNKS)
			return "strings overrun the header";
		n = bytes_get_le16(h + off);
		if (off + 2 + n > HDR_OFF_CHUNKS)
			return "strings overrun the header";
		*strs[i] = (struct block_header_string){ .p = (const char *)h + off + 2, .n = n };
		if (memchr(strs[i]->p, '\0', n))
			return "NUL byte in a string";
		off += 2 + n;
	}
	if (out->dataset.n == 0 || out->dataset.n > BLOCK_DATASET_MAX)
		return "bad dataset name length";
	if (out->object.n == 0 || out->object.n > BLOCK_OBJECT_MAX)
		return "bad object key length";
	return NULL;
}

void block_header_sums(const struct block_header *hdr, struct block_sums *out)
{
	out->data_len = hdr->data_len;
	out->chunk_size = hdr->chunk_size;
	for (uint64_t i = 0; i < chunk_count(hdr->data_len, hdr->chunk_size); i++)
		out->crc[i] = bytes_get_le32(hdr->crcs + 4 * i);
}

void block_header_key_hash(const struct block_header *hdr, uint8_t out[BLOCK_HASH_LEN])
{
	block_key_hash_parts(hdr->endpoint.p, hdr->endpoint.n, hdr->bucket.p, hdr->bucket.n,
			     hdr->object.p, hdr->object.n, hdr->etag.p, hdr->etag.n, hdr->block_size,
			     hdr->index, out);
}

/* --- short-circuit readers --- */

static bool string_is(struct block_header_string hs, const char *s)
{
	size_t n = strlen(s);

	return hs.n == n && memcmp(hs.p, s, n) == 0;
}

/* NULL if h is a valid header of key's block (filling hdr), else why not. */
static const char *header_check(const uint8_t *h, const struct block_key *key,
				struct block_header *hdr)
{
	const char *why = block_header_parse(h, hdr);

	if (!why && !(string_is(hdr->endpoint, key->endpoint ? key->endpoint : "") &&
		      string_is(hdr->bucket, key->bucket) && string_is(hdr->etag, key->etag) &&
		      string_is(hdr->object, key->object) && hdr->block_size == key->block_size &&
		      hdr->index == key->index))
		why = "header names another block";
	return why;
}

/* Opens the block file of hash under dir to read it (its path in path,
 * PATH_MAX bytes): ERR_NOT_FOUND when there is none. */
static enum error_code open_block(const char *dir, const uint8_t hash[BLOCK_HASH_LEN],
				  char *path, int *f, struct error *err)
{
	block_file_path(dir, hash, path, PATH_MAX);
	*f = block_file_open_read(AT_FDCWD, path, 0);
	if (*f >= 0)
		return ERR_OK;
	if (errno == ENOENT)
		return ERR_NOT_FOUND;
	return error_set(err, error_from_errno(errno), "open cached block '%s': %s", path,
			 strerror(errno));
}

enum error_code block_file_open(const char *dir, const struct block_key *key, int *fd,
				struct block_sums *sums, struct error *err)
{
	uint8_t hash[BLOCK_HASH_LEN];

	block_key_hash(key, hash);
	return block_file_open_hashed(dir, key, hash, fd, sums, err);
}

enum error_code block_file_open_hashed(const char *dir, const struct block_key *key,
				       const uint8_t hash[BLOCK_HASH_LEN], int *fd,
				       struct block_sums *sums, struct error *err)
{
	uint8_t *h = NULL;
	struct block_header hdr;
	char path[PATH_MAX];
	struct stat st;
	const char *why = NULL;
	enum error_code rc;
	ssize_t n;
	int f = -1;

	*fd = -1;
	rc = open_block(dir, hash, path, &f, err);
	if (rc != ERR_OK)
		return rc;
	h = malloc(BLOCK_HEADER_SIZE);
	if (!h) {
		close(f);
		return error_set(err, ERR_NOMEM, "read cached block '%s': out of memory", path);
	}
	n = fileio_pread_all(f, h, BLOCK_HEADER_SIZE, 0);
	if (n < 0) {
		/* The disk failed, not the file: an I/O error, no mismatch. */
		int saved = errno;

		free(h);
		close(f);
		return error_set(err, error_from_errno(saved), "read the header of cached block '%s': %s",
				 path, strerror(saved));
	}
	why = n == BLOCK_HEADER_SIZE ? header_check(h, key, &hdr) : "short header";
	if (!why && (fstat(f, &st) != 0 ||
		     (uint64_t)st.st_size != BLOCK_HEADER_SIZE + hdr.data_len))
		why = "wrong file size";
	if (!why) {
		block_header_sums(&hdr, sums);
		block_file_read_advice(f);
	}
	free(h);
	if (why) {
		close(f);
		return error_set(err, ERR_NOT_FOUND, "cached block '%s': %s", path, why);
	}
	*fd = f;
	return ERR_OK;
}

enum error_code block_file_read_whole(const char *dir, const struct block_key *key,
				      const uint8_t hash[BLOCK_HASH_LEN], void *dst, size_t len,
				      bool verify, bool *corrupt, struct error *err)
{
	uint8_t h[BLOCK_HEADER_SIZE];
	struct block_header hdr;
	struct block_sums sums;
	char path[PATH_MAX], past;
	/* One byte past the data: read only if the file is longer than
	 * its header says. */
	struct iovec iov[3] = { { h, sizeof(h) }, { dst, len }, { &past, 1 } };
	const uint64_t want = BLOCK_HEADER_SIZE + (uint64_t)len;
	const char *why = NULL;
	uint64_t got = 0;
	enum error_code rc;
	ssize_t n = 0;
	int f, saved;

	*corrupt = false;
	rc = open_block(dir, hash, path, &f, err);
	if (rc != ERR_OK)
		return rc;
	/* A read that stops at the header's and len's end found the file's
	 * end there (no byte past it); one that stops short of it may have
	 * been cut, and reads on until 0. */
	for (int i = 0; i < 3 && got != want;) {
		n = preadv(f, iov + i, 3 - i, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (uint64_t)n;
		for (; i < 3 && (size_t)n >= iov[i].iov_len; i++)
			n -= (ssize_t)iov[i].iov_len;
		if (i < 3) {
			iov[i].iov_base = (char *)iov[i].iov_base + n;
			iov[i].iov_len -= (size_t)n;
		}
	}
	saved = errno;
	fileio_drop_cached(f, 0, 0);
	close(f);
	if (n < 0)
		return error_set(err, error_from_errno(saved), "read cached block '%s': %s", path,
				 strerror(saved));
	if (got < BLOCK_HEADER_SIZE)
		why = "short header";
	else
		why = header_check(h, key, &hdr);
	if (!why && (hdr.data_len != len || got != want))
		why = "wrong file size";
	if (why)
		return error_set(err, ERR_NOT_FOUND, "cached block '%s': %s", path, why);
	if (verify) {
		block_header_sums(&hdr, &sums);
		if (!block_sums_check(&sums, 0, dst, len)) {
			*corrupt = true;
			return error_set(err, ERR_IO, "cached block '%s' failed its checksums", path);
		}
	}
	return ERR_OK;
}

/* --- the cache directory's id --- */

bool block_dir_id_valid(const char *s)
{
	size_t i;

	for (i = 0; i < BLOCK_DIR_ID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[i] == '\0';
}

/* The id in fd's first bytes (a trailing newline allowed); false if none. */
static bool dir_id_from_fd(int fd, char out[BLOCK_DIR_ID_LEN + 1])
{
	char buf[BLOCK_DIR_ID_LEN + 2];
	ssize_t n = fileio_pread_all(fd, buf, sizeof(buf), 0);

	if (n < BLOCK_DIR_ID_LEN || (n == BLOCK_DIR_ID_LEN + 2) ||
	    (n == BLOCK_DIR_ID_LEN + 1 && buf[BLOCK_DIR_ID_LEN] != '\n'))
		return false;
	buf[BLOCK_DIR_ID_LEN] = '\0';
	if (!block_dir_id_valid(buf))
		return false;
	memcpy(out, buf, BLOCK_DIR_ID_LEN + 1);
	return true;
}

enum error_code block_dir_id_read(const char *dir, char out[BLOCK_DIR_ID_LEN + 1],
				  struct error *err)
{
	char path[PATH_MAX];
	bool ok;
	int fd;

	out[0] = '\0';
	if (snprintf(path, sizeof(path), "%s/%s", dir, BLOCK_DIR_LOCK_FILE) >= (int)sizeof(path))
		return error_set(err, ERR_INVALID, "cache directory '%s': path too long", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0)
		return error_set(err, ERR_NOT_FOUND, "read '%s': %s", path, strerror(errno));
	ok = dir_id_from_fd(fd, out);
	close(fd);
	if (!ok)
		return error_set(err, ERR_NOT_FOUND, "read '%s': no cache directory id in it", path);
	return ERR_OK;
}

enum error_code block_dir_id_ensure(int fd, char out[BLOCK_DIR_ID_LEN + 1], struct error *err)
{
	uint8_t raw[BLOCK_DIR_ID_LEN / 2];
	char line[BLOCK_DIR_ID_LEN + 1];

	if (dir_id_from_fd(fd, out))
		return ERR_OK;
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
		return error_set(err, ERR_IO, "cache directory id: getrandom: %s", strerror(errno));
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(out + 2 * i, 3, "%02x", raw[i]);
	memcpy(line, out, BLOCK_DIR_ID_LEN);
	line[BLOCK_DIR_ID_LEN] = '\n';
	if (ftruncate(fd, 0) != 0 || fileio_pwrite_all(fd, line, sizeof(line), 0) < 0)
		return error_set(err, ERR_IO, "cache directory id: write '%s': %s",
				 BLOCK_DIR_LOCK_FILE, strerror(errno));
	return ERR_OK;
}

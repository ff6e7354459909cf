/*
 * sources.c - block sources for the mount's reader.
 */
#include "fuse/sources.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cache/blockstore.h"
#include "common/fileio.h"

static enum error_code cache_read(void *arg, const struct reader_block *blk,
				  uint64_t off, size_t len, char *dst, size_t *got,
				  unsigned readahead, struct error *err)
{
	struct source_cache_ctx *ctx = arg;
	struct fetch_result res = { 0 };
	enum error_code rc;

	/* Objects listed without an ETag cannot be cached safely (nothing
	 * tells a changed object from the cached one): the store serves them. */
	if (!*blk->obj->etag || strlen(blk->obj->key) <= ctx->prefix_len)
		return ERR_NOT_FOUND;
	rc = fetch_block(ctx->fetcher, ctx->ds, blk->obj->key + ctx->prefix_len, blk->obj->etag,
			 blk->index, readahead, &res, err);
	if (rc != ERR_OK)
		return rc;
	if (off + len > fetch_result_length(&res)) {
		rc = error_set(err, ERR_IO, "cached block %llu of '%s' has %llu bytes, %llu needed",
			       (unsigned long long)blk->index, blk->obj->key,
			       (unsigned long long)fetch_result_length(&res),
			       (unsigned long long)(off + len));
	} else if (res.ref) {
		ssize_t n = fileio_pread_all(blockstore_ref_fd(res.ref), dst, len,
					     blockstore_ref_offset(res.ref) + off);

		if (n != (ssize_t)len)
			rc = error_set(err, ERR_IO, "read cached block %llu of '%s': %s",
				       (unsigned long long)blk->index, blk->obj->key,
				       n < 0 ? strerror(errno) : "short file");
		else
			*got = len;
	} else {
		memcpy(dst, (const char *)fetch_result_data(&res) + off, len);
		*got = len;
	}
	fetch_result_release(ctx->fetcher, &res);
	return rc;
}

struct reader_source source_cache(struct source_cache_ctx *ctx)
{
	return (struct reader_source){ .name = "cache", .read = cache_read, .ctx = ctx };
}

static enum error_code store_read(void *ctx, const struct reader_block *blk,
				  uint64_t off, size_t len, char *dst, size_t *got,
				  unsigned readahead, struct error *err)
{
	struct store *st = ctx;
	uint64_t at = blk->index * (uint64_t)blk->block_size + off;

	(void)readahead;
	return store_get(st, blk->obj->key, at, len, dst, got, blk->obj->etag, err);
}

struct reader_source source_store(struct store *st)
{
	return (struct reader_source){ .name = "store", .read = store_read, .ctx = st };
}

/* --- cluster: short-circuit and peer --- */

#define VERIFIED_CAP (1u << 16)

enum error_code source_cluster_init(struct source_cluster_ctx *ctx, struct error *err)
{
	ctx->verified = calloc(VERIFIED_CAP, sizeof(*ctx->verified));
	if (!ctx->verified)
		return error_set(err, ERR_NOMEM, "mount: out of memory");
	ctx->verified_cap = VERIFIED_CAP;
	ctx->verified_n = 0;
	pthread_mutex_init(&ctx->mu, NULL);
	return ERR_OK;
}

void source_cluster_release(struct source_cluster_ctx *ctx)
{
	if (!ctx->verified)
		return;
	pthread_mutex_destroy(&ctx->mu);
	free(ctx->verified);
	ctx->verified = NULL;
}

static uint64_t verified_tag(const uint8_t hash[BLOCKSTORE_HASH_LEN])
{
	uint64_t t;

	memcpy(&t, hash, sizeof(t));
	return t ? t : 1;
}

/* The set only ever saves work: when it fills up it starts again empty. */
static bool verified_test_or_add(struct source_cluster_ctx *ctx, const uint8_t *hash, bool add)
{
	uint64_t tag = verified_tag(hash);
	size_t mask = ctx->verified_cap - 1, i = (size_t)tag & mask;
	bool found = false;

	pthread_mutex_lock(&ctx->mu);
	if (add && ctx->verified_n >= ctx->verified_cap / 2) {
		memset(ctx->verified, 0, ctx->verified_cap * sizeof(*ctx->verified));
		ctx->verified_n = 0;
	}
	for (;; i = (i + 1) & mask) {
		if (ctx->verified[i] == tag) {
			found = true;
			break;
		}
		if (ctx->verified[i] == 0) {
			if (add) {
				ctx->verified[i] = tag;
				ctx->verified_n++;
			}
			break;
		}
	}
	pthread_mutex_unlock(&ctx->mu);
	return found;
}

static void cluster_key(const struct source_cluster_ctx *ctx, const struct reader_block *blk,
			struct block_key *k)
{
	*k = (struct block_key){
		.endpoint = ctx->key_endpoint,
		.bucket = ctx->bucket,
		.object = blk->obj->key,
		.etag = blk->obj->etag,
		.block_size = ctx->block_size,
		.index = blk->index,
	};
}

static enum error_code local_read(void *arg, const struct reader_block *blk, uint64_t off,
				  size_t len, char *dst, size_t *got, unsigned readahead,
				  struct error *err)
{
	struct source_cluster_ctx *ctx = arg;
	uint8_t hash[BLOCKSTORE_HASH_LEN];
	uint64_t data_len = 0, xxh = 0, actual = 0;
	struct block_key k;
	enum error_code rc;
	ssize_t n;
	int fd = -1;

	(void)readahead;
	if (!*blk->obj->etag)
		return ERR_NOT_FOUND;
	cluster_key(ctx, blk, &k);
	rc = blockstore_file_open(ctx->cache_dir, &k, &fd, &data_len, &xxh, err);
	if (rc != ERR_OK)
		return rc == ERR_NOT_FOUND ? ERR_NOT_FOUND : rc;
	if (off + len > data_len) {
		close(fd);
		return ERR_NOT_FOUND;
	}
	blockstore_key_hash(&k, hash);
	if (!verified_test_or_add(ctx, hash, false)) {
		rc = blockstore_file_data_xxh(fd, data_len, &actual, err);
		if (rc != ERR_OK || actual != xxh) {
			/* Leave the file to the worker, which checks and drops
			 * it; ask the owner instead. */
			close(fd);
			return ERR_NOT_FOUND;
		}
		verified_test_or_add(ctx, hash, true);
	}
	n = fileio_pread_all(fd, dst, len, BLOCKSTORE_HEADER_SIZE + off);
	close(fd);
	if (n != (ssize_t)len)
		return error_set(err, ERR_IO, "read cached block %llu of '%s': %s",
				 (unsigned long long)blk->index, blk->obj->key,
				 n < 0 ? strerror(errno) : "short file");
	*got = len;
	return ERR_OK;
}

struct reader_source source_local(struct source_cluster_ctx *ctx)
{
	return (struct reader_source){ .name = "local", .read = local_read, .ctx = ctx };
}

/* One curl handle per reading thread, kept with its connections. */
static pthread_key_t curl_key;
static pthread_once_t curl_key_once = PTHREAD_ONCE_INIT;

static void curl_handle_free(void *h)
{
	curl_easy_cleanup(h);
}

static void curl_key_init(void)
{
	curl_global_init(CURL_GLOBAL_ALL);
	pthread_key_create(&curl_key, curl_handle_free);
}

static CURL *thread_curl(void)
{
	CURL *c;

	pthread_once(&curl_key_once, curl_key_init);
	c = pthread_getspecific(curl_key);
	if (!c) {
		c = curl_easy_init();
		if (c && pthread_setspecific(curl_key, c) != 0) {
			curl_easy_cleanup(c);
			c = NULL;
		}
	}
	return c;
}

struct peer_body {
	char *dst;
	size_t len, got;
};

static size_t peer_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct peer_body *b = arg;
	size_t n = size * nmemb;

	if (n > b->len - b->got)
		return 0; /* more than asked for: refuse rather than overflow */
	memcpy(b->dst + b->got, data, n);
	b->got += n;
	return n;
}

/*
 * A worker reads ahead the next blocks of the object whatever their owner,
 * so a hint is cut to the run of following blocks that this owner owns
 * too: a peer's block read ahead here would be a second copy, fetched from
 * the store once more (one owner per block cluster-wide).
 */
static unsigned owned_run(struct source_cluster_ctx *ctx, const struct reader_block *blk,
			  const char *owner, unsigned readahead)
{
	uint64_t nblocks = (blk->obj->size + ctx->block_size - 1) / ctx->block_size;
	unsigned n = 0;

	for (; n < readahead && blk->index + 1 + n < nblocks; n++) {
		struct reader_block next = *blk;
		uint8_t hash[BLOCKSTORE_HASH_LEN];
		char addr[PLACEMENT_ADDRESS_MAX], id[128];
		struct block_key k;

		next.index = blk->index + 1 + n;
		cluster_key(ctx, &next, &k);
		blockstore_key_hash(&k, hash);
		if (placement_owner(ctx->placement, hash, addr, id, sizeof(id)) != ERR_OK ||
		    strcmp(id, owner) != 0)
			break;
	}
	return n;
}

static enum error_code peer_read(void *arg, const struct reader_block *blk, uint64_t off,
				 size_t len, char *dst, size_t *got, unsigned readahead,
				 struct error *err)
{
	struct source_cluster_ctx *ctx = arg;
	uint8_t hash[BLOCKSTORE_HASH_LEN];
	char addr[PLACEMENT_ADDRESS_MAX], id[128], path[256], auth[TOKEN_HEADER_MAX + 32];
	char range[64], *url = NULL, *query = NULL, *key = NULL, *etag = NULL;
	struct peer_body body = { .dst = dst, .len = len };
	struct curl_slist *hdrs = NULL;
	struct block_key k;
	enum error_code rc;
	long status = 0;
	CURLcode cc;
	CURL *c;

	if (!*blk->obj->etag || strlen(blk->obj->key) <= ctx->prefix_len)
		return ERR_NOT_FOUND;
	cluster_key(ctx, blk, &k);
	blockstore_key_hash(&k, hash);
	if (placement_owner(ctx->placement, hash, addr, id, sizeof(id)) != ERR_OK)
		return ERR_NOT_FOUND;
	readahead = owned_run(ctx, blk, id, readahead);
	c = thread_curl();
	if (!c)
		return error_set(err, ERR_NOMEM, "peer read: out of memory");
	curl_easy_reset(c);
	key = curl_easy_escape(c, blk->obj->key + ctx->prefix_len, 0);
	etag = curl_easy_escape(c, blk->obj->etag, 0);
	snprintf(path, sizeof(path), "/v1/blocks/%s/%llu", ctx->dataset,
		 (unsigned long long)blk->index);
	if (!key || !etag || asprintf(&query, "key=%s&etag=%s&readahead=%u", key, etag, readahead) < 0) {
		query = NULL;
		rc = error_set(err, ERR_NOMEM, "peer read: out of memory");
		goto out;
	}
	if (strncmp(addr, "unix://", 7) == 0) {
		curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, addr + 7);
		if (asprintf(&url, "http://localhost%s?%s", path, query) < 0)
			url = NULL;
	} else if (asprintf(&url, "http://%s%s?%s", addr, path, query) < 0) {
		url = NULL;
	}
	memcpy(auth, "Authorization: ", 15);
	if (!url || token_sign(ctx->token, "GET", path, query, (int64_t)time(NULL), auth + 15,
			       sizeof(auth) - 15) != ERR_OK) {
		rc = error_set(err, ERR_NOMEM, "peer read: out of memory");
		goto out;
	}
	hdrs = curl_slist_append(NULL, auth);
	snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)off,
		 (unsigned long long)(off + len - 1));
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_RANGE, range);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)ctx->connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)ctx->timeout_ms);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, peer_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (cc != CURLE_OK) {
		rc = error_set(err, cc == CURLE_OPERATION_TIMEDOUT ? ERR_TIMEOUT : ERR_UNAVAILABLE,
			       "worker '%s' at %s, block %llu of '%s': %s", id, addr,
			       (unsigned long long)blk->index, blk->obj->key, curl_easy_strerror(cc));
	} else if (status != 206 && status != 200) {
		rc = error_set(err, status == 404 ? ERR_NOT_FOUND : ERR_UNAVAILABLE,
			       "worker '%s' at %s, block %llu of '%s': HTTP %ld", id, addr,
			       (unsigned long long)blk->index, blk->obj->key, status);
		/* 404 is also "dataset unknown there": let the store serve it. */
		if (rc == ERR_NOT_FOUND)
			rc = ERR_UNAVAILABLE;
	} else if (body.got != len) {
		rc = error_set(err, ERR_IO, "worker '%s' at %s, block %llu of '%s': %zu bytes, expected %zu",
			       id, addr, (unsigned long long)blk->index, blk->obj->key, body.got, len);
	} else {
		rc = ERR_OK;
		*got = len;
	}
out:
	curl_slist_free_all(hdrs);
	curl_free(key);
	curl_free(etag);
	free(query);
	free(url);
	return rc;
}

struct reader_source source_peer(struct source_cluster_ctx *ctx)
{
	return (struct reader_source){ .name = "peer", .read = peer_read, .ctx = ctx };
}

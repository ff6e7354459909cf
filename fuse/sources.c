/*
 * sources.c - block sources for the mount's reader.
 */
#include "fuse/sources.h"

#include <curl/curl.h>
#include <jansson.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "block/fdcache.h"
#include "block/file.h"
#include "block/url.h"
#include "common/fileio.h"
#include "common/log.h"
#include "common/retry.h"

/* Notes a copy of blk that failed its checksums; returns err's code. */
static enum error_code found_corrupt(struct reader_block *blk, const char *where,
				     struct error *err)
{
	blk->corrupt++;
	snprintf(blk->corrupt_cause, sizeof(blk->corrupt_cause), "%s: %s", where, err->msg);
	return error_set(err, ERR_IO, "block %llu of '%s' from %s: %s",
			 (unsigned long long)blk->index, blk->obj->key, where, blk->corrupt_cause);
}

/* Len bytes at off of a held cache block into dst, checked unless told not
 * to; *corrupt when they fail their checksums (the header's included), not
 * when the disk fails to read them (EIO: an I/O error, the block kept). */
static enum error_code ref_read(struct source_cache_ctx *ctx, struct blockstore_ref *ref,
				uint64_t off, size_t len, char *dst, bool *corrupt,
				struct error *err)
{
	struct block_sums sums;
	enum error_code rc;
	ssize_t n;

	*corrupt = false;
	if (ctx->verify) {
		rc = blockstore_ref_sums(fetch_blockstore(ctx->fetcher), ref, &sums, corrupt, err);
		if (rc != ERR_OK)
			return rc; /* a corrupt header dropped the block */
		return block_read_checked(blockstore_ref_fd(ref), &sums, off, len, dst,
					       corrupt, err);
	}
	n = fileio_pread_all(blockstore_ref_fd(ref), dst, len, blockstore_ref_offset(ref) + off);
	block_file_drop(blockstore_ref_fd(ref), off, len, blockstore_ref_length(ref));
	if (n != (ssize_t)len)
		return error_set(err, ERR_IO, "%s", n < 0 ? strerror(errno) : "short file");
	return ERR_OK;
}

/* Calls a source's small_read hook (NULL: none) for a read at off of blk
 * when it is the whole of a one-block object (a small file): for every
 * miss, and for a hit only at the file's start, so that a file read in
 * several pieces calls it once. */
static void small_read(void (*hook)(void *, const struct reader_object *, bool), void *arg,
		       const struct reader_block *blk, uint64_t off, bool missed)
{
	if (hook && blk->index == 0 && blk->obj->size <= blk->block_size && (missed || off == 0))
		hook(arg, blk->obj, missed);
}

/* A block in memory lent to a read (struct reader_loan): its buffer is
 * held until the reply is made from it. */
static void cache_loan_end(void *arg, void *held)
{
	struct source_cache_ctx *ctx = arg;
	struct fetch_result res = { .buf = held };

	fetch_result_release(ctx->fetcher, &res);
}

static enum error_code cache_read(void *arg, struct reader_block *blk,
				  uint64_t off, size_t len, char *dst, size_t *got,
				  unsigned readahead, struct error *err)
{
	struct source_cache_ctx *ctx = arg;
	const char *key = blk->obj->key + ctx->prefix_len;
	enum error_code rc = ERR_OK;

	/* Objects listed without an ETag cannot be cached safely (nothing
	 * tells a changed object from the cached one): the store serves them. */
	if (!*blk->obj->etag || strlen(blk->obj->key) <= ctx->prefix_len)
		return ERR_NOT_FOUND;
	/* A corrupt copy is dropped and fetched again, once. */
	for (int round = 0; round < 2; round++) {
		struct fetch_result res = { 0 };
		bool corrupt = false, dropped = false, lent = false;

		rc = fetch_block_until(ctx->fetcher, ctx->ds, key, blk->obj->etag, blk->obj->size,
				       blk->index, round == 0 ? readahead : 0, blk->until_ms, &res,
				       err);
		if (rc != ERR_OK)
			return rc;
		if (off + len > fetch_result_length(&res)) {
			rc = error_set(err, ERR_IO, "cached block %llu of '%s' has %llu bytes, %llu needed",
				       (unsigned long long)blk->index, blk->obj->key,
				       (unsigned long long)fetch_result_length(&res),
				       (unsigned long long)(off + len));
		} else if (res.ref) {
			rc = ref_read(ctx, res.ref, off, len, dst, &corrupt, err);
		} else if (blk->loan) {
			/* fetched into memory just now, the bytes of the store:
			 * lent, the loan holding the buffer */
			*blk->loan = (struct reader_loan){
				.data = (const char *)fetch_result_data(&res) + off,
				.end = cache_loan_end, .arg = ctx, .held = res.buf };
			lent = true;
		} else {
			memcpy(dst, (const char *)fetch_result_data(&res) + off, len);
		}
		/* One-block objects (small files) give no read-ahead of their
		 * own. */
		if (rc == ERR_OK)
			small_read(ctx->small_read, ctx->small_read_arg, blk, off, !res.hit);
		if (!lent)
			fetch_result_release(ctx->fetcher, &res);
		if (rc == ERR_OK) {
			*got = len;
			return ERR_OK;
		}
		if (!corrupt)
			return error_wrap(err, "read cached block %llu of '%s'",
					  (unsigned long long)blk->index, blk->obj->key);
		rc = found_corrupt(blk, "the cache", err);
		if (fetch_recheck(ctx->fetcher, ctx->ds, key, blk->obj->etag, blk->index, &dropped,
				  err) != ERR_OK)
			return rc;
	}
	return rc;
}

struct reader_source source_cache(struct source_cache_ctx *ctx)
{
	return (struct reader_source){ .name = "cache", .read = cache_read, .ctx = ctx };
}

static enum error_code store_read(void *ctx, struct reader_block *blk,
				  uint64_t off, size_t len, char *dst, size_t *got,
				  unsigned readahead, struct error *err)
{
	struct store *st = ctx;
	uint64_t at = blk->index * (uint64_t)blk->block_size + off;

	(void)readahead;
	return store_get_until(st, blk->obj->key, at, len, dst, got, blk->obj->etag, blk->until_ms,
			       err);
}

struct reader_source source_store(struct store *st)
{
	return (struct reader_source){ .name = "store", .read = store_read, .ctx = st };
}

/* --- cluster: short-circuit and peer --- */

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

/* blk's key and hash: hashed once per block, whichever source asks first. */
static void cluster_hash(const struct source_cluster_ctx *ctx, struct reader_block *blk,
			 struct block_key *k)
{
	cluster_key(ctx, blk, k);
	if (!blk->hashed) {
		block_key_hash(k, blk->hash);
		blk->hashed = true;
	}
}

/* The block file of k, from ctx->fds when the mount keeps one. */
static enum error_code local_take(struct source_cluster_ctx *ctx, const struct block_key *k,
				  const uint8_t *hash, struct block_fdref **ref, int *fd,
				  struct block_sums *own, const struct block_sums **sums,
				  struct error *err)
{
	enum error_code rc;

	*ref = NULL;
	if (ctx->fds) {
		rc = block_fdcache_take(ctx->fds, k, hash, ref, err);
		if (rc == ERR_OK) {
			*fd = block_fdref_fd(*ref);
			*sums = block_fdref_sums(*ref);
		}
		return rc;
	}
	rc = block_file_open_hashed(ctx->cache_dir, k, hash, fd, own, err);
	*sums = own;
	return rc;
}

static void local_put(struct source_cluster_ctx *ctx, struct block_fdref *ref, int fd, bool bad)
{
	if (ref)
		block_fdcache_put(ctx->fds, ref, bad);
	else if (fd >= 0)
		close(fd);
}

/* Reads blk's bytes from the node's cache directory. */
static enum error_code local_read_block(struct source_cluster_ctx *ctx, struct reader_block *blk,
					uint64_t off, size_t len, char *dst, size_t *got,
					struct error *err)
{
	const struct block_sums *sums = NULL;
	struct block_fdref *ref = NULL;
	struct block_sums own;
	struct block_key k;
	enum error_code rc;
	bool corrupt = false;
	ssize_t n;
	int fd = -1;

	if (!*blk->obj->etag)
		return ERR_NOT_FOUND;
	cluster_hash(ctx, blk, &k);
	if (off == 0 && len == blk->length && len < BLOCK_DIRECT_MIN) {
		/* A small file or a file's short last block, read whole: no
		 * descriptor kept for a block read once. */
		rc = block_file_read_whole(ctx->cache_dir, &k, blk->hash, dst, len, ctx->verify,
					   &corrupt, err);
		if (corrupt)
			return found_corrupt(blk, "the node's cache directory", err);
		if (rc == ERR_OK)
			*got = len;
		return rc;
	}
	rc = local_take(ctx, &k, blk->hash, &ref, &fd, &own, &sums, err);
	if (rc != ERR_OK)
		return rc == ERR_NOT_FOUND ? ERR_NOT_FOUND : rc;
	if (off + len > sums->data_len) {
		local_put(ctx, ref, fd, false);
		return ERR_NOT_FOUND;
	}
	if (ctx->verify) {
		/* The file stays: the worker drops it when the peer source
		 * asks the owner to check it (readers never write). A cached
		 * descriptor of it goes, so the next read opens what the
		 * worker puts in its place. */
		rc = block_read_checked(fd, sums, off, len, dst, &corrupt, err);
		local_put(ctx, ref, fd, rc != ERR_OK);
		if (corrupt)
			return found_corrupt(blk, "the node's cache directory", err);
		if (rc != ERR_OK)
			return error_wrap(err, "read cached block %llu of '%s'",
					  (unsigned long long)blk->index, blk->obj->key);
		*got = len;
		return ERR_OK;
	}
	n = fileio_pread_all(fd, dst, len, BLOCK_HEADER_SIZE + off);
	block_file_drop(fd, off, len, sums->data_len);
	local_put(ctx, ref, fd, n != (ssize_t)len);
	if (n != (ssize_t)len)
		return error_set(err, ERR_IO, "read cached block %llu of '%s': %s",
				 (unsigned long long)blk->index, blk->obj->key,
				 n < 0 ? strerror(errno) : "short file");
	*got = len;
	return ERR_OK;
}

static enum error_code local_read(void *arg, struct reader_block *blk, uint64_t off,
				  size_t len, char *dst, size_t *got, unsigned readahead,
				  struct error *err)
{
	struct source_cluster_ctx *ctx = arg;
	enum error_code rc;

	(void)readahead;
	rc = local_read_block(ctx, blk, off, len, dst, got, err);
	if (rc == ERR_OK)
		small_read(ctx->small_read, ctx->small_read_arg, blk, off, false);
	return rc;
}

void source_cluster_read_cache_id(struct source_cluster_ctx *ctx)
{
	struct error err;

	if (atomic_load_explicit(&ctx->cache_id_set, memory_order_acquire))
		return;
	if (block_dir_id_read(ctx->cache_dir, ctx->cache_id, &err) == ERR_OK)
		atomic_store_explicit(&ctx->cache_id_set, true, memory_order_release);
}

struct reader_source source_local(struct source_cluster_ctx *ctx)
{
	return (struct reader_source){ .name = "local", .read = local_read, .ctx = ctx };
}

/*
 * What a reading thread keeps for its peer requests, so that a request
 * allocates nothing of ours: the curl handle with its connections and its
 * options set once, the Authorization header's list node, and buffers for
 * the query, the URL and the chunks around a piece (grown, never shrunk;
 * at most a block). Freed when the thread ends.
 */
struct peer_thread {
	CURL *curl;
	struct curl_slist auth_hdr; /* data = auth */
	char auth[TOKEN_HEADER_MAX + 32];
	struct curl_slist connect_to; /* data = connect */
	char connect[BLOCK_URL_ORIGIN_MAX];
	char origin[BLOCK_URL_ORIGIN_MAX];
	char *query, *url, *bounce;
	size_t query_size, url_size, bounce_size;
};

static pthread_key_t peer_key;
static pthread_once_t peer_key_once = PTHREAD_ONCE_INIT;

static void peer_thread_free(void *p)
{
	struct peer_thread *t = p;

	curl_easy_cleanup(t->curl);
	free(t->query);
	free(t->url);
	free(t->bounce);
	free(t);
}

static void peer_key_init(void)
{
	curl_global_init(CURL_GLOBAL_ALL);
	pthread_key_create(&peer_key, peer_thread_free);
}

static struct peer_thread *thread_peer(void)
{
	struct peer_thread *t;

	pthread_once(&peer_key_once, peer_key_init);
	t = pthread_getspecific(peer_key);
	if (t)
		return t;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->curl = curl_easy_init();
	if (!t->curl || pthread_setspecific(peer_key, t) != 0) {
		peer_thread_free(t);
		return NULL;
	}
	t->auth_hdr.data = t->auth;
	t->connect_to.data = t->connect;
	curl_easy_setopt(t->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(t->curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(t->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(t->curl, CURLOPT_HTTPHEADER, &t->auth_hdr);
	return t;
}

/* Makes *buf hold at least size bytes; false when out of memory. */
static bool grow(char **buf, size_t *have, size_t size)
{
	char *p;

	if (size <= *have)
		return true;
	p = realloc(*buf, size);
	if (!p)
		return false;
	*buf = p;
	*have = size;
	return true;
}

struct peer_body {
	char *dst;
	size_t len, got;
	char crc[BLOCK_CRC_HEADER_MAX]; /* the checksum header's value */
	bool crc_seen;
	bool answered;  /* a header line came: the worker is answering */
	bool in_dir;    /* BLOCK_URL_IN_CACHE_DIR: no bytes, read the block file */
	bool hit;       /* BLOCK_CACHE_HEADER: hit, the worker held the block */
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

/* The value of header line (n bytes) when it is name's ("Name:"), its
 * surrounding blanks and line end cut; NULL for another header. */
static const char *header_value(const char *line, size_t n, const char *name, size_t *len)
{
	size_t k = strlen(name);

	if (n <= k || strncasecmp(line, name, k) != 0)
		return NULL;
	while (k < n && (line[k] == ' ' || line[k] == '\t'))
		k++;
	while (n > k && (line[n - 1] == '\r' || line[n - 1] == '\n' || line[n - 1] == ' '))
		n--;
	*len = n - k;
	return line + k;
}

static size_t peer_header(char *line, size_t size, size_t nmemb, void *arg)
{
	struct peer_body *b = arg;
	const char *v;
	size_t len;

	b->answered = true;
	if ((v = header_value(line, size * nmemb, BLOCK_CACHE_HEADER ":", &len)) != NULL) {
		b->hit = len >= 3 && strncasecmp(v, "hit", 3) == 0;
	} else if ((v = header_value(line, size * nmemb, BLOCK_CRC_HEADER ":", &len)) != NULL &&
		   len < sizeof(b->crc)) {
		memcpy(b->crc, v, len);
		b->crc[len] = '\0';
		b->crc_seen = true;
	}
	return size * nmemb;
}

/* --- workers that stopped answering: passed over for a while --- */

#define PEER_SKIP_MAX 32

static pthread_mutex_t skip_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	const struct source_cluster_ctx *ctx;
	char id[128];
	uint64_t until_ms;
	bool gone; /* a membership since the skip began left it out */
} skipped[PEER_SKIP_MAX]; /* protected by skip_mu */

/* Milliseconds worker id is still passed over for; 0 when it is not. */
static uint64_t peer_skipped(const struct source_cluster_ctx *ctx, const char *id)
{
	uint64_t now = retry_now_ms(), left = 0;

	pthread_mutex_lock(&skip_mu);
	for (unsigned i = 0; i < PEER_SKIP_MAX && !left; i++)
		if (skipped[i].ctx == ctx && skipped[i].until_ms > now && strcmp(skipped[i].id, id) == 0)
			left = skipped[i].until_ms - now;
	pthread_mutex_unlock(&skip_mu);
	return left;
}

void source_cluster_membership_changed(struct source_cluster_ctx *ctx)
{
	char back[PEER_SKIP_MAX][128];
	uint64_t now = retry_now_ms();
	unsigned nback = 0;

	pthread_mutex_lock(&skip_mu);
	for (unsigned i = 0; i < PEER_SKIP_MAX; i++) {
		if (skipped[i].ctx != ctx || skipped[i].until_ms <= now)
			continue;
		if (!placement_has(ctx->placement, skipped[i].id)) {
			skipped[i].gone = true;
		} else if (skipped[i].gone) {
			skipped[i].until_ms = 0;
			snprintf(back[nback++], sizeof(back[0]), "%s", skipped[i].id);
		}
	}
	pthread_mutex_unlock(&skip_mu);
	for (unsigned i = 0; i < nback; i++)
		log_info("worker back in the membership, no longer passed over",
			 LOG_S("worker", back[i]));
}

/* Passes worker id over for ctx->skip_ms; says so once per period. */
static void peer_skip(const struct source_cluster_ctx *ctx, const char *id, const char *addr,
		      const char *cause)
{
	uint64_t now = retry_now_ms();
	unsigned slot = 0;
	bool fresh = true;

	if (!ctx->skip_ms)
		return;
	pthread_mutex_lock(&skip_mu);
	for (unsigned i = 0; i < PEER_SKIP_MAX; i++) {
		if (skipped[i].ctx == ctx && strcmp(skipped[i].id, id) == 0) {
			slot = i;
			fresh = skipped[i].until_ms <= now;
			break;
		}
		if (skipped[i].until_ms < skipped[slot].until_ms)
			slot = i; /* else the one that ends first */
	}
	skipped[slot].ctx = ctx;
	snprintf(skipped[slot].id, sizeof(skipped[slot].id), "%s", id);
	skipped[slot].until_ms = now + ctx->skip_ms;
	skipped[slot].gone = false;
	pthread_mutex_unlock(&skip_mu);
	if (fresh)
		log_warn("worker stopped answering, passed over for the next source",
			 LOG_S("worker", id), LOG_S("address", addr), LOG_U("for_ms", ctx->skip_ms),
			 LOG_S("cause", cause));
}

static size_t discard(char *data, size_t size, size_t nmemb, void *arg)
{
	(void)data;
	(void)arg;
	return size * nmemb;
}

/*
 * Points c at the worker at addr: origin (size bytes) gets the URL's
 * scheme, host and port (block_url_origin), and with TLS c verifies the
 * worker's certificate against ctx->tls's CA and server name, reaching
 * the address through connect_to (its data, BLOCK_URL_ORIGIN_MAX bytes,
 * is written). err may be NULL.
 */
static enum error_code peer_tls_setup(const struct source_cluster_ctx *ctx, CURL *c,
				      const char *addr, char *origin, size_t size,
				      struct curl_slist *connect_to, struct error *err)
{
	bool tls = tls_material_client(ctx->tls);
	struct curl_blob ca;

	if (block_url_origin(addr, tls, tls ? ctx->tls->server_name : NULL, origin, size,
			     connect_to->data, BLOCK_URL_ORIGIN_MAX, err) != ERR_OK)
		return ERR_INVALID;
	curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH,
			 strncmp(addr, "unix://", 7) == 0 ? addr + 7 : NULL);
	curl_easy_setopt(c, CURLOPT_CONNECT_TO, connect_to->data[0] ? connect_to : NULL);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, tls ? "https" : "http");
	if (tls) {
		/* The CA as read at start; the mount's settings outlive every
		 * request, so curl need not copy it. */
		ca.data = ctx->tls->ca;
		ca.len = strlen(ctx->tls->ca);
		ca.flags = CURL_BLOB_NOCOPY;
		curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &ca);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	}
	return ERR_OK;
}

/* Whether the worker at addr answers its /healthz within connect_timeout_ms. */
static bool peer_alive(const struct source_cluster_ctx *ctx, const char *addr)
{
	CURL *c = curl_easy_init();
	char url[BLOCK_URL_ORIGIN_MAX + 16], connect[BLOCK_URL_ORIGIN_MAX];
	struct curl_slist connect_to = { .data = connect };
	long status = 0;
	bool alive;

	if (!c)
		return true; /* cannot tell: keep waiting */
	if (peer_tls_setup(ctx, c, addr, url, sizeof(url) - 16, &connect_to, NULL) != ERR_OK) {
		curl_easy_cleanup(c);
		return true;
	}
	strcat(url, "/healthz");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)ctx->connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	alive = curl_easy_perform(c) == CURLE_OK &&
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200;
	curl_easy_cleanup(c);
	return alive;
}

/* What a block request in flight watches (curl's progress callback). */
struct peer_watch {
	struct source_cluster_ctx *ctx;
	const struct peer_body *body;
	const char *id, *addr;
	uint64_t start_ms, probe_ms, version;
	bool alive;             /* its /healthz answered */
	const char *abandoned;  /* why the request was given up; NULL if not */
	bool stopped;           /* the worker itself stopped answering */
};

static int peer_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
			 curl_off_t ulnow)
{
	struct peer_watch *w = arg;
	uint64_t now = retry_now_ms(), version = placement_version(w->ctx->placement);

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	if (version != w->version) {
		w->version = version;
		if (!placement_has(w->ctx->placement, w->id)) {
			w->abandoned = "the membership no longer lists it";
			return 1;
		}
	}
	if (w->body->answered || now - w->start_ms < w->ctx->first_byte_ms ||
	    now - w->probe_ms < w->ctx->first_byte_ms)
		return 0;
	/* No answer begun: a worker fetching a miss is alive and says so;
	 * a stopped or hung one does not. */
	w->probe_ms = now;
	if (peer_alive(w->ctx, w->addr)) {
		w->alive = true;
		return 0;
	}
	w->abandoned = "no answer begun and its /healthz did not answer either";
	w->stopped = true;
	return 1;
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
		struct reader_block next = { .obj = blk->obj, .index = blk->index + 1 + n };
		char addr[PLACEMENT_ADDRESS_MAX], id[128];
		struct block_key k;

		cluster_hash(ctx, &next, &k);
		if (placement_owner(ctx->placement, next.hash, addr, id, sizeof(id)) != ERR_OK ||
		    strcmp(id, owner) != 0)
			break;
	}
	return n;
}

/* One block request to a worker: len bytes at off into body, with the
 * reading thread's handle and buffers (t). */
static enum error_code peer_get(struct source_cluster_ctx *ctx, struct peer_thread *t,
				const struct reader_block *blk, const char *addr, const char *id,
				uint64_t off, size_t len, unsigned readahead, bool verify,
				const char *cache_id, struct peer_body *body, struct error *err)
{
	char path[BLOCK_URL_PATH_MAX], range[64];
	struct peer_watch watch = { .ctx = ctx, .body = body, .id = id, .addr = addr };
	const char *key = blk->obj->key + ctx->prefix_len;
	uint64_t timeout = ctx->timeout_ms;
	enum error_code rc;
	size_t need;
	long status = 0;
	CURLcode cc;
	CURL *c = t->curl;

	watch.start_ms = retry_now_ms();
	watch.version = placement_version(ctx->placement);
	if (blk->until_ms) {
		if (watch.start_ms >= blk->until_ms)
			return error_set(err, ERR_TIMEOUT, "worker '%s' at %s, block %llu of '%s': the read's deadline passed",
					 id, addr, (unsigned long long)blk->index, blk->obj->key);
		if (blk->until_ms - watch.start_ms < timeout)
			timeout = blk->until_ms - watch.start_ms;
	}
	block_url_path(ctx->dataset, blk->index, path, sizeof(path));
	need = block_url_query_into(t->query, t->query_size, key, blk->obj->etag, blk->obj->size,
				    ctx->block_size, readahead, verify, cache_id);
	if (need >= t->query_size) {
		if (!grow(&t->query, &t->query_size, need + 1))
			return error_set(err, ERR_NOMEM, "peer read: out of memory");
		block_url_query_into(t->query, t->query_size, key, blk->obj->etag, blk->obj->size,
				     ctx->block_size, readahead, verify, cache_id);
	}
	if (peer_tls_setup(ctx, c, addr, t->origin, sizeof(t->origin), &t->connect_to, err) !=
	    ERR_OK)
		return ERR_INVALID;
	need = strlen(t->origin) + strlen(path) + strlen(t->query) + 16;
	if (!grow(&t->url, &t->url_size, need))
		return error_set(err, ERR_NOMEM, "peer read: out of memory");
	snprintf(t->url, t->url_size, "%s%s?%s", t->origin, path, t->query);
	memcpy(t->auth, "Authorization: ", 15);
	if (token_sign(ctx->token, "GET", path, t->query, (int64_t)time(NULL), t->auth + 15,
		       sizeof(t->auth) - 15) != ERR_OK)
		return error_set(err, ERR_NOMEM, "peer read: out of memory");
	snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)off,
		 (unsigned long long)(off + len - 1));
	body->len = len;
	body->got = 0;
	body->crc_seen = false;
	body->answered = false;
	body->in_dir = false;
	body->hit = false;
	curl_easy_setopt(c, CURLOPT_URL, t->url);
	curl_easy_setopt(c, CURLOPT_RANGE, range);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)ctx->connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, peer_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, &watch);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, peer_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, peer_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, body);
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (cc == CURLE_ABORTED_BY_CALLBACK && watch.abandoned) {
		rc = error_set(err, ERR_UNAVAILABLE, "worker '%s' at %s, block %llu of '%s': abandoned after %llu ms: %s",
			       id, addr, (unsigned long long)blk->index, blk->obj->key,
			       (unsigned long long)(retry_now_ms() - watch.start_ms), watch.abandoned);
		if (watch.stopped)
			peer_skip(ctx, id, addr, err->msg);
	} else if (cc != CURLE_OK) {
		rc = error_set(err, cc == CURLE_OPERATION_TIMEDOUT ? ERR_TIMEOUT : ERR_UNAVAILABLE,
			       "worker '%s' at %s, block %llu of '%s': %s", id, addr,
			       (unsigned long long)blk->index, blk->obj->key, curl_easy_strerror(cc));
		/* A worker that cannot be reached, or timed out while its
		 * /healthz never answered, is passed over for a while; one
		 * that timed out while alive (a slow store) is not. */
		if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_SSL_CONNECT_ERROR ||
		    cc == CURLE_PEER_FAILED_VERIFICATION ||
		    (cc == CURLE_OPERATION_TIMEDOUT && !watch.alive && timeout == ctx->timeout_ms))
			peer_skip(ctx, id, addr, err->msg);
	} else if (status == BLOCK_URL_IN_CACHE_DIR && cache_id && body->got == 0) {
		body->in_dir = true;
		rc = ERR_OK;
	} else if (status != 206 && status != 200) {
		rc = error_set(err, status == 404 ? ERR_NOT_FOUND : ERR_UNAVAILABLE,
			       "worker '%s' at %s, block %llu of '%s': HTTP %ld", id, addr,
			       (unsigned long long)blk->index, blk->obj->key, status);
		/* 404 is also "dataset unknown there": let the store serve it. */
		if (rc == ERR_NOT_FOUND)
			rc = ERR_UNAVAILABLE;
	} else if (body->got != len) {
		rc = error_set(err, ERR_IO, "worker '%s' at %s, block %llu of '%s': %zu bytes, expected %zu",
			       id, addr, (unsigned long long)blk->index, blk->obj->key, body->got, len);
	} else {
		rc = ERR_OK;
	}
	return rc;
}

/*
 * Asks the owner for whole chunks (block_chunk_size) around the bytes
 * wanted and checks them against the CRC32Cs the worker sends with them
 * (read from the block's header, not from the bytes it sends), so that a
 * byte that went bad on the owner's disk or on the way is never served.
 * A mismatch is asked again with verify=1: the owner reads its copy whole,
 * drops it if it is bad and fetches it again. Asked with verify=1 at once
 * when an earlier source found the block corrupt (the node's own cache
 * file: its worker is the usual owner).
 */
static enum error_code peer_read(void *arg, struct reader_block *blk, uint64_t off,
				 size_t len, char *dst, size_t *got, unsigned readahead,
				 struct error *err)
{
	struct source_cluster_ctx *ctx = arg;
	char addr[PLACEMENT_ADDRESS_MAX], id[128], where[PLACEMENT_ADDRESS_MAX + 160];
	struct peer_body body = { .dst = dst };
	struct peer_thread *t;
	struct block_sums sums;
	struct block_key k;
	uint64_t a0 = off, a1 = off + len, skip_left;
	const char *cache_id = NULL;
	enum error_code rc = ERR_INTERNAL;

	if (!*blk->obj->etag || strlen(blk->obj->key) <= ctx->prefix_len)
		return ERR_NOT_FOUND;
	cluster_hash(ctx, blk, &k);
	if (placement_owner(ctx->placement, blk->hash, addr, id, sizeof(id)) != ERR_OK)
		return ERR_NOT_FOUND;
	skip_left = peer_skipped(ctx, id);
	if (skip_left)
		return error_set(err, ERR_UNAVAILABLE, "worker '%s' at %s passed over for %llu ms more: it stopped answering",
				 id, addr, (unsigned long long)skip_left);
	t = thread_peer();
	if (!t)
		return error_set(err, ERR_NOMEM, "peer read: out of memory");
	readahead = owned_run(ctx, blk, id, readahead);
	if (ctx->verify) {
		uint32_t cs = block_chunk_size(ctx->block_size);

		a0 = off / cs * cs;
		a1 = (off + len + cs - 1) / cs * cs;
		if (a1 > blk->length)
			a1 = blk->length;
		if (a0 != off || a1 != off + len) {
			if (!grow(&t->bounce, &t->bounce_size, (size_t)(a1 - a0)))
				return error_set(err, ERR_NOMEM, "peer read: out of memory");
			body.dst = t->bounce;
		}
	}
	/* The node's own worker answers "in the directory" to a request
	 * that names it (never after a corrupt copy: then the owner checks
	 * its copy, verify=1, and sends the bytes). */
	if (atomic_load_explicit(&ctx->cache_id_set, memory_order_acquire) && !blk->corrupt)
		cache_id = ctx->cache_id;
	snprintf(where, sizeof(where), "worker '%s' at %s", id, addr);
	for (int round = 0; round < 2; round++) {
		rc = peer_get(ctx, t, blk, addr, id, a0, (size_t)(a1 - a0),
			      round == 0 ? readahead : 0, blk->corrupt > 0, cache_id, &body, err);
		if (rc == ERR_OK && body.in_dir) {
			/* Read and checked like any short-circuit read. A
			 * file gone meanwhile (evicted), or corrupt (counted
			 * by local_read), is asked for again as bytes, in
			 * this same round: the one extra request. */
			rc = local_read_block(ctx, blk, off, len, dst, got, err);
			if (rc == ERR_OK) {
				/* missed unless the worker held it (prefetched) */
				small_read(ctx->small_read, ctx->small_read_arg, blk, off,
					   !body.hit);
				return ERR_OK;
			}
			cache_id = NULL;
			round--;
			continue;
		}
		if (rc != ERR_OK || !ctx->verify)
			break;
		rc = block_crc_header_parse(body.crc_seen ? body.crc : NULL,
					   block_chunk_size(ctx->block_size), a0, a1 - a0,
					   blk->length, &sums, err);
		if (rc != ERR_OK) {
			/* unchecked bytes are not served: the store serves them */
			rc = error_set(err, ERR_UNAVAILABLE, "%s, block %llu of '%s': %s", where,
				       (unsigned long long)blk->index, blk->obj->key, err->msg);
			break;
		}
		if (block_sums_check(&sums, a0, body.dst, (size_t)(a1 - a0)))
			break;
		error_set(err, ERR_IO, "bytes %llu-%llu failed their checksums",
			  (unsigned long long)a0, (unsigned long long)(a1 - 1));
		rc = found_corrupt(blk, where, err);
	}
	if (rc == ERR_OK) {
		if (body.dst != dst)
			memcpy(dst, body.dst + (off - a0), len);
		*got = len;
		small_read(ctx->small_read, ctx->small_read_arg, blk, off, !body.hit);
	}
	return rc;
}

static char json_content_type_line[] = "Content-Type: application/json";
static struct curl_slist json_content_type = { .data = json_content_type_line };

/* One POST /v1/prefetch/{dataset} of the objects in body to the worker at
 * addr; a hint: the answer's status is all that is looked at. */
static void prefetch_post(struct source_cluster_ctx *ctx, struct peer_thread *t,
			  const char *addr, const char *id, const char *body, uint64_t until_ms)
{
	char path[sizeof("/v1/prefetch/") + BLOCK_DATASET_MAX + 1];
	uint64_t now = retry_now_ms(), timeout = ctx->timeout_ms;
	long status = 0;
	CURLcode cc;
	CURL *c = t->curl;

	if (until_ms <= now)
		return;
	if (until_ms - now < timeout)
		timeout = until_ms - now;
	snprintf(path, sizeof(path), "/v1/prefetch/%s", ctx->dataset);
	if (peer_tls_setup(ctx, c, addr, t->origin, sizeof(t->origin), &t->connect_to, NULL) !=
	    ERR_OK)
		return;
	if (!grow(&t->url, &t->url_size, strlen(t->origin) + strlen(path) + 1))
		return;
	snprintf(t->url, t->url_size, "%s%s", t->origin, path);
	memcpy(t->auth, "Authorization: ", 15);
	if (token_sign(ctx->token, "POST", path, "", (int64_t)time(NULL), t->auth + 15,
		       sizeof(t->auth) - 15) != ERR_OK)
		return;
	/* The handle may have served block requests: none of their range,
	 * callbacks or data (a finished request's) is this one's. */
	t->auth_hdr.next = &json_content_type;
	curl_easy_setopt(c, CURLOPT_URL, t->url);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_RANGE, NULL);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 1L);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, NULL);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)ctx->connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	/* The handle's next request is a block request (a GET) again. */
	t->auth_hdr.next = NULL;
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	if (cc != CURLE_OK || status != 204)
		log_debug("prefetch hint not taken", LOG_S("worker", id), LOG_S("address", addr),
			  LOG_I("status", status), LOG_S("error", cc != CURLE_OK ? curl_easy_strerror(cc) : ""));
}

void source_cluster_prefetch(struct source_cluster_ctx *ctx, const struct reader_object *objs,
			     size_t n, uint64_t until_ms)
{
	char owner[SOURCE_PREFETCH_MAX][128], addr[SOURCE_PREFETCH_MAX][PLACEMENT_ADDRESS_MAX];
	bool sent[SOURCE_PREFETCH_MAX] = { false };
	struct peer_thread *t = thread_peer();

	if (!t)
		return;
	if (n > SOURCE_PREFETCH_MAX)
		n = SOURCE_PREFETCH_MAX;
	for (size_t i = 0; i < n; i++) {
		struct reader_block blk = { .obj = &objs[i], .block_size = ctx->block_size };
		struct block_key k;

		sent[i] = true; /* unless it has an owner to ask */
		if (objs[i].size == 0 || objs[i].size > ctx->block_size || !*objs[i].etag ||
		    strlen(objs[i].key) <= ctx->prefix_len)
			continue;
		cluster_hash(ctx, &blk, &k);
		if (placement_owner(ctx->placement, blk.hash, addr[i], owner[i],
				    sizeof(owner[i])) != ERR_OK ||
		    peer_skipped(ctx, owner[i]))
			continue;
		sent[i] = false;
	}
	/* One request per owner, naming its objects in listing order. */
	for (size_t i = 0; i < n; i++) {
		json_t *list, *root;
		char *body;

		if (sent[i])
			continue;
		list = json_array();
		for (size_t j = i; list && j < n; j++) {
			if (sent[j] || strcmp(owner[j], owner[i]) != 0)
				continue;
			json_array_append_new(list, json_pack("{s:s,s:s,s:I}", "key",
							       objs[j].key + ctx->prefix_len, "etag",
							       objs[j].etag, "size",
							       (json_int_t)objs[j].size));
			sent[j] = true;
		}
		root = list ? json_pack("{s:o}", "objects", list) : NULL;
		body = root ? json_dumps(root, JSON_COMPACT) : NULL;
		if (body)
			prefetch_post(ctx, t, addr[i], owner[i], body, until_ms);
		free(body);
		json_decref(root);
	}
}

struct reader_source source_peer(struct source_cluster_ctx *ctx)
{
	return (struct reader_source){ .name = "peer", .read = peer_read, .ctx = ctx };
}

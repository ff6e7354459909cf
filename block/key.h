/*
 * key.h - a block's identity, the same in every process and on every
 * node: the worker that fetches it, the block file that holds it, the
 * mount that reads the file directly and the placement that picks its
 * owner all hash the same key the same way.
 *
 * A block is a fixed-size piece of one object version. Its identity is a
 * 128-bit hash of (endpoint, bucket, object key, ETag, block size, block
 * index): a changed object gets new keys and can never serve stale bytes,
 * and identical objects in two datasets share blocks.
 */
#ifndef GRANARY_BLOCK_KEY_H
#define GRANARY_BLOCK_KEY_H

#include <stddef.h>
#include <stdint.h>

#define BLOCK_HASH_LEN 16
#define BLOCK_HASH_HEX (2 * BLOCK_HASH_LEN + 1)

struct block_key {
	const char *endpoint;  /* block_key_endpoint; "" for file:// */
	const char *bucket;    /* bucket, or the directory for file:// */
	const char *object;    /* object key */
	const char *etag;      /* version tag from the listing */
	uint32_t block_size;
	uint64_t index;
};

/*
 * The endpoint string that block keys carry for a dataset: "" for file://,
 * else the configured endpoint, else the AWS endpoint of the region
 * (us-east-1 when none), so that two spellings of "the default" share
 * blocks. malloc'd; NULL when out of memory.
 */
char *block_key_endpoint(const char *scheme, const char *endpoint, const char *region);

/* The hash of a key. NULL strings count as "". */
void block_key_hash(const struct block_key *key, uint8_t out[BLOCK_HASH_LEN]);

/* The same from its four strings as (pointer, length) pairs, for a key
 * read back from a block file header whose strings are not terminated. */
void block_key_hash_parts(const char *endpoint, size_t endpoint_len, const char *bucket,
			  size_t bucket_len, const char *object, size_t object_len,
			  const char *etag, size_t etag_len, uint32_t block_size, uint64_t index,
			  uint8_t out[BLOCK_HASH_LEN]);

/* Lowercase hex of a hash, NUL-terminated. */
void block_hash_hex(const uint8_t hash[BLOCK_HASH_LEN], char out[BLOCK_HASH_HEX]);

/* 0 if text is exactly the lowercase hex of a hash (as block_hash_hex
 * writes it), filling hash; -1 otherwise. */
int block_hash_parse(const char *text, uint8_t hash[BLOCK_HASH_LEN]);

#endif

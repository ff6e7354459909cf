/*
 * key.c - block keys and their hash.
 *
 * Encoding hashed: endpoint, bucket, object, etag, each as a le32 length
 * and its bytes, then le32 block size and le64 block index. The lengths
 * make it unambiguous: ("ab", "c") and ("a", "bc") differ. XXH3-128 of
 * that, in its canonical (big-endian) form.
 */
#include "block/key.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/bytes.h"
#include "common/fileio.h"
#include "common/log.h"

/* Key encodings up to this size are hashed from the stack. */
#define KEY_STACK_BUF 4096

char *block_key_endpoint(const char *scheme, const char *endpoint, const char *region)
{
	char *out = NULL;

	if (strcmp(scheme, "file") == 0)
		return strdup("");
	if (endpoint && *endpoint)
		return strdup(endpoint);
	if (asprintf(&out, "https://s3.%s.amazonaws.com", region && *region ? region : "us-east-1") < 0)
		return NULL;
	return out;
}

void block_key_hash_parts(const char *endpoint, size_t endpoint_len, const char *bucket,
			  size_t bucket_len, const char *object, size_t object_len,
			  const char *etag, size_t etag_len, uint32_t block_size, uint64_t index,
			  uint8_t out[BLOCK_HASH_LEN])
{
	const char *p[4] = { endpoint, bucket, object, etag };
	const size_t n[4] = { endpoint_len, bucket_len, object_len, etag_len };
	uint8_t stack_buf[KEY_STACK_BUF];
	uint8_t *buf = stack_buf, *at;
	size_t total = 4 + 8;
	XXH128_canonical_t canon;

	for (int i = 0; i < 4; i++)
		total += 4 + n[i];
	if (total > sizeof(stack_buf)) {
		/* Only keys too long for any block header come here; they
		 * still need a stable hash for placement. */
		buf = malloc(total);
		if (!buf) {
			log_error("hash block key: out of memory", LOG_U("bytes", total));
			abort();
		}
	}
	at = buf;
	for (int i = 0; i < 4; i++) {
		bytes_put_le32(at, (uint32_t)n[i]);
		if (n[i])
			memcpy(at + 4, p[i], n[i]);
		at += 4 + n[i];
	}
	bytes_put_le32(at, block_size);
	bytes_put_le64(at + 4, index);
	XXH128_canonicalFromHash(&canon, XXH3_128bits(buf, total));
	memcpy(out, canon.digest, BLOCK_HASH_LEN);
	if (buf != stack_buf)
		free(buf);
}

void block_key_hash(const struct block_key *key, uint8_t out[BLOCK_HASH_LEN])
{
	const char *s[4] = { key->endpoint, key->bucket, key->object, key->etag };

	for (int i = 0; i < 4; i++)
		if (!s[i])
			s[i] = "";
	block_key_hash_parts(s[0], strlen(s[0]), s[1], strlen(s[1]), s[2], strlen(s[2]), s[3],
			     strlen(s[3]), key->block_size, key->index, out);
}

void block_hash_hex(const uint8_t hash[BLOCK_HASH_LEN], char out[BLOCK_HASH_HEX])
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < BLOCK_HASH_LEN; i++) {
		out[2 * i] = digits[hash[i] >> 4];
		out[2 * i + 1] = digits[hash[i] & 0xf];
	}
	out[2 * BLOCK_HASH_LEN] = '\0';
}

/* Value of a lowercase hex digit, or -1: upper case is not ours, names
 * are written lower case. */
static int lower_hex(char c)
{
	if (c >= 'A' && c <= 'F')
		return -1;
	return fileio_hex_value(c);
}

int block_hash_parse(const char *text, uint8_t hash[BLOCK_HASH_LEN])
{
	for (int i = 0; i < BLOCK_HASH_LEN; i++) {
		int hi = lower_hex(text[2 * i]);
		int lo = hi < 0 ? -1 : lower_hex(text[2 * i + 1]);

		if (lo < 0)
			return -1;
		hash[i] = (uint8_t)(hi << 4 | lo);
	}
	return text[2 * BLOCK_HASH_LEN] == '\0' ? 0 : -1;
}

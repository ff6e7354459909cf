/*
 * name.c - dataset names, block sizes and object keys.
 */
#include "block/name.h"

#include <stdbool.h>
#include <string.h>

static bool is_alnum_lower(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

enum error_code block_dataset_name_check(const char *name, struct error *err)
{
	size_t len = name ? strlen(name) : 0;

	if (len == 0)
		return error_set(err, ERR_INVALID, "dataset name '': empty");
	if (len > BLOCK_DATASET_MAX)
		return error_set(err, ERR_INVALID, "dataset name '%.40s...': longer than %d bytes",
				 name, BLOCK_DATASET_MAX);
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (c == '.') {
			if (i == 0 || name[i - 1] == '.' || name[i - 1] == '-' || i + 1 == len ||
			    name[i + 1] == '-')
				return error_set(err, ERR_INVALID,
						 "dataset name '%s': each '.'-separated label must "
						 "start and end with a lowercase letter or digit",
						 name);
		} else if (c == '-') {
			if (i == 0 || i + 1 == len)
				return error_set(err, ERR_INVALID,
						 "dataset name '%s': must start and end with a "
						 "lowercase letter or digit",
						 name);
		} else if (!is_alnum_lower(c)) {
			return error_set(err, ERR_INVALID,
					 "dataset name '%s': only lowercase letters, digits, '-' "
					 "and '.' are allowed",
					 name);
		}
	}
	return ERR_OK;
}

enum error_code block_size_check(const char *what, uint64_t size, struct error *err)
{
	if (size < BLOCK_SIZE_MIN || size > BLOCK_SIZE_MAX || (size & (size - 1)) != 0)
		return error_set(err, ERR_INVALID,
				 "%s: must be a power of two from 64KiB to 64MiB, got %llu", what,
				 (unsigned long long)size);
	return ERR_OK;
}

enum error_code block_object_key_check(const char *prefix, const char *key, struct error *err)
{
	size_t len = key ? strlen(key) : 0;
	const char *seg = key;

	if (len == 0)
		return error_set(err, ERR_INVALID, "object key is empty");
	if (strlen(prefix) + len > BLOCK_KEY_MAX)
		return error_set(err, ERR_INVALID, "object key '%.64s...': longer than %d bytes with the prefix",
				 key, BLOCK_KEY_MAX);
	for (const char *p = key; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return error_set(err, ERR_INVALID,
					 "object key '%.200s': holds a control character", key);
	for (;;) {
		const char *end = strchr(seg, '/');
		size_t n = end ? (size_t)(end - seg) : strlen(seg);

		if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return error_set(err, ERR_INVALID,
					 "object key '%.200s': has an empty, '.' or '..' segment", key);
		if (!end)
			break;
		seg = end + 1;
	}
	return ERR_OK;
}

enum error_code block_preload_prefix_check(const char *prefix, const char *sub,
					   struct error *err)
{
	char key[BLOCK_KEY_MAX + 2];
	size_t len = sub ? strlen(sub) : 0;
	struct error why;

	if (len > BLOCK_KEY_MAX)
		return error_set(err, ERR_INVALID, "preload prefix '%.64s...': longer than %d bytes",
				 sub, BLOCK_KEY_MAX);
	memcpy(key, sub ? sub : "", len + 1);
	if (len > 1 && key[len - 1] == '/')
		key[len - 1] = '\0';
	if (block_object_key_check(prefix, key, &why) != ERR_OK)
		return error_set(err, ERR_INVALID, "preload prefix '%.200s': %s", sub ? sub : "",
				 why.msg);
	return ERR_OK;
}

/*
 * name.c - dataset names and block sizes.
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

/*
 * name.h - the rules every process applies to what a dataset is called and
 * how it is cut: the controller, granary-meta, the workers (their fetcher
 * and HTTP router), the block store and the mount all call these, so a
 * name or a block size that one of them takes, all of them take.
 *
 * Dataset names come from Kubernetes (a CSI volume name is a PV name) and
 * become URL path segments, path components and metric labels, so they
 * follow Kubernetes' DNS-1123 subdomain rule.
 */
#ifndef GRANARY_BLOCK_NAME_H
#define GRANARY_BLOCK_NAME_H

#include <stdint.h>

#include "common/error.h"

#define BLOCK_DATASET_MAX 253            /* bytes in a dataset name */
#define BLOCK_SIZE_MIN (64ull << 10)     /* 64 KiB */
#define BLOCK_SIZE_MAX (64ull << 20)     /* 64 MiB */
#define BLOCK_KEY_MAX 1024               /* S3's limit on a whole object key */
#define BLOCK_PRELOAD_PREFIXES_MAX 64    /* prefixes one dataset's preload names */

/*
 * Dataset names: 1-253 bytes of lowercase letters, digits, '-' and '.',
 * made of '.'-separated labels that each start and end with a letter or
 * digit. ERR_INVALID saying which rule the name breaks ("dataset name
 * 'A_b': only lowercase letters, ...").
 */
enum error_code block_dataset_name_check(const char *name, struct error *err);

/*
 * Block sizes: a power of two from BLOCK_SIZE_MIN to BLOCK_SIZE_MAX.
 * ERR_INVALID "WHAT: must be a power of two from 64KiB to 64MiB, got N";
 * what names the field ("key 'cache.block_size'").
 */
enum error_code block_size_check(const char *what, uint64_t size, struct error *err);

/*
 * Object keys relative to a dataset's prefix: non-empty, no leading '/',
 * no empty, '.' or '..' segment, no control characters, at most
 * BLOCK_KEY_MAX bytes with the prefix. ERR_INVALID names the key.
 * Segments are checked because HTTP clients fold "a/../b" in a URL path:
 * "../" would step out of the prefix.
 */
enum error_code block_object_key_check(const char *prefix, const char *key,
				       struct error *err);

/*
 * A preload prefix (the objects under it, relative to the dataset's
 * prefix): an object key's rules, with one trailing '/' allowed
 * ("train/" or "train/shard-0"). ERR_INVALID names the prefix.
 */
enum error_code block_preload_prefix_check(const char *prefix, const char *sub,
					   struct error *err);

#endif

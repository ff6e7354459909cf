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

#endif

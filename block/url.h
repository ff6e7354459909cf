/*
 * url.h - how a client asks a worker for a block, and how the worker's
 * answer carries the checksums of what it sends (docs/worker-api.md):
 *
 *   GET /v1/blocks/{dataset}/{index}?key=K&etag=E[&size=S][&bs=B]&readahead=N[&verify=1]
 *   X-Granary-Crc32c: CHUNK_SIZE:CRC,CRC,...      (on the answer)
 *
 * The mount builds requests with these functions and the worker's router
 * (cache/http.c) parses them; unit/cache/test_http.c checks that what one
 * writes the other reads, for the longest dataset name.
 */
#ifndef GRANARY_BLOCK_URL_H
#define GRANARY_BLOCK_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/file.h"
#include "block/name.h"
#include "common/error.h"

#define BLOCK_URL_PREFIX "/v1/blocks/"
/* The longest path: the prefix, a dataset name, '/', 20 digits. */
#define BLOCK_URL_PATH_MAX (sizeof(BLOCK_URL_PREFIX) + BLOCK_DATASET_MAX + 1 + 20 + 1)
/* Most blocks one request may ask the worker to read ahead. */
#define BLOCK_URL_READAHEAD_MAX 256

/* The path of block index of dataset (block_dataset_name_check) into out;
 * returns snprintf's length (BLOCK_URL_PATH_MAX always fits). */
int block_url_path(const char *dataset, uint64_t index, char *out, size_t size);

/* The query of a block request: key (relative to the dataset prefix) and
 * etag percent-encoded, readahead, verify=1 when verify. malloc'd; NULL
 * when out of memory. */
char *block_url_query(const char *key, const char *etag, unsigned readahead, bool verify);
/* The same into out (size bytes): returns its length when it fits, else
 * a size that is enough, out left empty (size 0: out may be NULL), so a
 * caller that keeps a buffer of its own allocates nothing per request.
 * object_size, when not 0, adds size=S: the object's size from the
 * listing, which spares the worker a buffer of a whole block for a small
 * file's (a hint: it still takes a whole block's bytes from the store).
 * block_size, when not 0, adds bs=B: the block size the client numbers
 * blocks by. A worker whose dataset has other blocks answers 409 instead
 * of another range of the object under the same index (a dataset
 * registered without a block size takes each process's default, which a
 * rolling upgrade can leave different on either side).
 * cache_id, when not NULL or "", adds cache=ID: the id of the cache
 * directory the client reads (block_dir_id_read); a worker that owns that
 * directory and holds the block there answers 204 with no body, and the
 * client reads the block file itself (BLOCK_URL_IN_CACHE_DIR). */
size_t block_url_query_into(char *out, size_t size, const char *key, const char *etag,
			    uint64_t object_size, uint64_t block_size, unsigned readahead,
			    bool verify, const char *cache_id);

/*
 * Where a client sends a worker's requests, for the worker address addr
 * as the membership lists it ("10.0.0.7:7480", "[fd00::7]:7480" or
 * "unix:///path"). Plain HTTP: origin "http://10.0.0.7:7480". HTTPS
 * (tls true) with server_name: origin "https://NAME:7480" and connect_to
 * "NAME:7480:10.0.0.7:7480" (curl's CURLOPT_CONNECT_TO), so the TCP
 * connection goes to the worker's IP while the certificate is checked for
 * the one name every worker's certificate carries (workers come and go
 * with their pod IPs; a certificate per IP would be issued per pod).
 * Without server_name the address itself is verified. A unix socket's
 * origin names NAME or "localhost" (the caller sets the socket path).
 * connect_to is "" when not needed. ERR_INVALID for a malformed addr or
 * outputs too small (BLOCK_URL_ORIGIN_MAX each always fits).
 */
#define BLOCK_URL_ORIGIN_MAX 600
enum error_code block_url_origin(const char *addr, bool tls, const char *server_name,
				 char *origin, size_t origin_size, char *connect_to,
				 size_t connect_size, struct error *err);

/* The status of a block answer that says "in your cache directory". */
#define BLOCK_URL_IN_CACHE_DIR 204

/* Whether the worker held the block it answered with ("hit") or fetched it
 * for the request ("miss"). */
#define BLOCK_CACHE_HEADER "X-Granary-Cache"

/*
 * The checksums of a block answer, so that the client checks what crossed
 * the network: the chunk size, then the CRC32C of every chunk that holds
 * some of the bytes sent, from the one holding the first, as 8 lower-case
 * hex digits each: "65536:1a2b3c4d,00ff00ff". A client that asks for whole
 * chunks (block_chunk_size) can check every byte it gets.
 */
#define BLOCK_CRC_HEADER "X-Granary-Crc32c"
/* Longest value: the chunk size and BLOCK_CHUNKS_MAX checksums. */
#define BLOCK_CRC_HEADER_MAX (16 + 9 * BLOCK_CHUNKS_MAX)

/* The header's value for bytes [off, off + len) of the block s describes
 * (len > 0, inside the data); out holds BLOCK_CRC_HEADER_MAX. */
void block_crc_header_format(const struct block_sums *s, uint64_t off, uint64_t len, char *out);

/*
 * Parses the header's value of an answer carrying bytes [off, off + len)
 * of a block of data_len bytes into out (its data_len, chunk size and the
 * checksums of those chunks). ERR_INVALID "checksum header '...': ..."
 * when malformed, with another chunk size than chunk_size, or not exactly
 * one checksum per chunk of the range.
 */
enum error_code block_crc_header_parse(const char *value, uint32_t chunk_size, uint64_t off,
				       uint64_t len, uint64_t data_len, struct block_sums *out,
				       struct error *err);

#endif

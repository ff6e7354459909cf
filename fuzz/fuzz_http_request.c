/*
 * fuzz_http_request.c - what granary-worker parses of a request line and
 * its headers before any core sees it: the route (worker_http_route_parse),
 * the block query (worker_http_parse_block_query, worker_http_query_get),
 * the Range header (worker_http_range_parse, then worker_http_range_resolve
 * against blocks of a few lengths) and the body framing headers
 * (worker_http_check_framing).
 *
 * Input: METHOD "\n" PATH "\n" QUERY "\n" RANGE "\n" TRANSFER-ENCODING,
 * the last field taking the rest.
 */
#include <stdlib.h>
#include <string.h>

#include "cache/http.h"
#include "common/log.h"
#include "fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_set_level(LOG_LEVEL_ERROR);
	return 0;
}

static void check_range(const char *header)
{
	static const uint64_t lengths[] = { 0, 1, 4096, 4u << 20, UINT64_MAX };
	struct worker_http_range r;
	struct error err;
	size_t i;

	if (worker_http_range_parse(header, &r, &err) != ERR_OK)
		return;
	for (i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		uint64_t off = 0, len = 0;

		if (worker_http_range_resolve(&r, header, lengths[i], &off, &len, &err) != ERR_OK)
			continue;
		/* What is sent lies inside the block, and is empty only for an
		 * empty block. */
		if (off > lengths[i] || len > lengths[i] - off || (len == 0 && lengths[i] != 0))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *f[5];
	char *copy = fuzz_split(data, size, f, 5);
	struct worker_http_route route;
	struct worker_http_block_query bq;
	struct worker_http_framing framing;
	struct error err;
	char value[64];
	bool found;
	uint64_t n;

	if (!copy)
		return 0;
	if (worker_http_route_parse(f[0], f[1], &route, &err) == ERR_OK &&
	    !memchr(route.dataset, '\0', sizeof(route.dataset)))
		abort();
	if (worker_http_parse_block_query(f[2], &bq, &err) == ERR_OK &&
	    (!memchr(bq.key, '\0', sizeof(bq.key)) || !memchr(bq.etag, '\0', sizeof(bq.etag)) ||
	     bq.readahead > BLOCK_URL_READAHEAD_MAX))
		abort();
	if (worker_http_query_get(f[2], "key", value, sizeof(value), &found, &err) == ERR_OK &&
	    found && !memchr(value, '\0', sizeof(value)))
		abort();
	(void)worker_http_parse_u64("block index", f[1], &n, &err);
	check_range(f[3]);

	framing.content_lengths = size & 3;
	framing.transfer_encodings = *f[4] ? 1 + ((size >> 2) & 1) : 0;
	framing.transfer_encoding = *f[4] ? f[4] : NULL;
	(void)worker_http_check_framing(&framing, &err);
	free(copy);
	return 0;
}

/*
 * fuzz_s3_list.c - a ListObjectsV2 answer from an S3 endpoint
 * (s3_xml_parse_list): any body must parse or be refused, and a page that
 * parses holds only NUL-terminated keys, prefixes and ETags.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "fuzz/fuzz.h"
#include "store/s3_xml.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_set_level(LOG_LEVEL_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct store_list_page page;
	struct error err;
	size_t sum = 0;
	size_t i;

	if (s3_xml_parse_list((const char *)data, size, &page, &err) != ERR_OK) {
		if (!memchr(err.msg, '\0', sizeof(err.msg)))
			abort();
		return 0;
	}
	for (i = 0; i < page.nobjects; i++) {
		const struct store_object *o = &page.objects[i];

		if (!o->key || !memchr(o->etag, '\0', sizeof(o->etag)))
			abort();
		sum += strlen(o->key) + strlen(o->etag) + o->size;
	}
	for (i = 0; i < page.nprefixes; i++)
		sum += strlen(page.prefixes[i]);
	if (page.next_token)
		sum += strlen(page.next_token);
	fuzz_use(sum);
	store_list_page_release(&page);
	return 0;
}

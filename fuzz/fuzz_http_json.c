/*
 * fuzz_http_json.c - the JSON bodies granary-worker takes from clients:
 * PUT /v1/datasets/{name} (worker_http_parse_dataset_body) and POST
 * /v1/preload/{dataset} (worker_http_parse_preload_body). Both see every
 * input; an accepted body holds NUL-terminated strings.
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct worker_http_dataset_body *body = malloc(sizeof(*body));
	struct error err;
	char **objects = NULL;
	size_t n = 0, i;
	size_t sum = 0;

	if (!body)
		return 0;
	if (worker_http_parse_dataset_body((const char *)data, size, body, &err) == ERR_OK &&
	    (!memchr(body->source, '\0', sizeof(body->source)) ||
	     !memchr(body->endpoint, '\0', sizeof(body->endpoint)) ||
	     !memchr(body->region, '\0', sizeof(body->region)) ||
	     !memchr(body->credentials_file, '\0', sizeof(body->credentials_file))))
		abort();
	free(body);

	if (worker_http_parse_preload_body((const char *)data, size, &objects, &n, &err) == ERR_OK) {
		for (i = 0; i < n; i++)
			sum += strlen(objects[i]);
		fuzz_use(sum);
		worker_http_free_objects(objects, n);
	}
	return 0;
}

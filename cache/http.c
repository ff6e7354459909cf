/*
 * http.c - the worker's HTTP adapter: request parsers (pure) and the
 * libmicrohttpd server that calls fetch, preload and token.
 */
#include "cache/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/config.h"
#include "common/log.h"
#include "common/netaddr.h"
#include "common/retry.h"

/* --- parsers ------------------------------------------------------------- */

enum error_code worker_http_parse_u64(const char *what, const char *text, uint64_t *out,
				      struct error *err)
{
	uint64_t v = 0;
	size_t n = 0;

	for (const char *p = text; *p; p++, n++) {
		unsigned d = (unsigned)(*p - '0');

		if (*p < '0' || *p > '9' || n >= 20 || v > (UINT64_MAX - d) / 10)
			return error_set(err, ERR_INVALID, "%s '%.64s' is not a number", what, text);
		v = v * 10 + d;
	}
	if (n == 0)
		return error_set(err, ERR_INVALID, "%s '' is not a number", what);
	*out = v;
	return ERR_OK;
}

/* Copies segment i (0-based) of path "/a/b/c" into out; returns its length
 * or -1 when there is no such segment or it does not fit. */
static int segment(const char *path, int i, char *out, size_t size)
{
	const char *p = path;

	for (int k = 0; k <= i; k++) {
		if (*p != '/')
			return -1;
		p++;
		if (k == i)
			break;
		p = strchrnul(p, '/');
	}
	size_t n = strcspn(p, "/");

	if (n >= size)
		return -1;
	memcpy(out, p, n);
	out[n] = '\0';
	return (int)n;
}

static int count_segments(const char *path)
{
	int n = 0;

	for (const char *p = path; *p; p++)
		n += *p == '/';
	return n;
}

static void route_set(struct worker_http_route *r, enum worker_http_route_kind kind,
		      const char *method, const char *allow, bool token)
{
	char list[32];
	const char *tok;
	char *save = NULL;

	r->kind = kind;
	r->allow = allow;
	r->needs_token = token;
	r->method_allowed = false;
	snprintf(list, sizeof(list), "%s", allow);
	/* HEAD is GET without the body; microhttpd leaves the body out. */
	if (strcmp(method, "HEAD") == 0)
		method = "GET";
	for (tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
		if (strcmp(tok, method) == 0)
			r->method_allowed = true;
}

/* The dataset name that is path's third segment, checked, into out. */
static enum error_code route_dataset(const char *path, struct worker_http_route *out,
				     struct error *err)
{
	char name[BLOCK_DATASET_MAX + 2];
	enum error_code rc;

	if (segment(path, 2, name, sizeof(name)) < 0)
		return error_set(err, ERR_INVALID, "dataset name in '%.200s' is longer than %d characters",
				 path, BLOCK_DATASET_MAX);
	rc = block_dataset_name_check(name, err);
	if (rc != ERR_OK)
		return rc;
	snprintf(out->dataset, sizeof(out->dataset), "%s", name);
	return ERR_OK;
}

enum error_code worker_http_route_parse(const char *method, const char *path,
					struct worker_http_route *out, struct error *err)
{
	char s0[16], s1[16], s2[BLOCK_DATASET_MAX + 2], s3[32];
	const int nseg = count_segments(path);
	enum error_code rc;

	memset(out, 0, sizeof(*out));
	if (strcmp(path, "/metrics") == 0) {
		route_set(out, WORKER_HTTP_METRICS, method, "GET", false);
		return ERR_OK;
	}
	if (strcmp(path, "/healthz") == 0) {
		route_set(out, WORKER_HTTP_HEALTHZ, method, "GET", false);
		return ERR_OK;
	}
	if (strcmp(path, "/readyz") == 0) {
		route_set(out, WORKER_HTTP_READYZ, method, "GET", false);
		return ERR_OK;
	}
	if (segment(path, 0, s0, sizeof(s0)) < 0 || strcmp(s0, "v1") != 0 ||
	    segment(path, 1, s1, sizeof(s1)) < 0)
		goto unknown;

	if (strcmp(s1, "datasets") == 0 && nseg == 2) {
		route_set(out, WORKER_HTTP_DATASETS, method, "GET", true);
		return ERR_OK;
	}
	if (strcmp(s1, "datasets") == 0 && nseg == 3) {
		route_set(out, WORKER_HTTP_DATASET, method, "GET, PUT, DELETE", true);
		return route_dataset(path, out, err);
	}
	if (strcmp(s1, "blocks") == 0 && (nseg == 3 || nseg == 4)) {
		route_set(out, WORKER_HTTP_BLOCK, method, "GET", true);
		rc = route_dataset(path, out, err);
		if (rc != ERR_OK)
			return rc;
		if (nseg == 3)
			return error_set(err, ERR_INVALID,
					 "missing block index: expected /v1/blocks/{dataset}/{index}");
		if (segment(path, 3, s3, sizeof(s3)) < 0)
			return error_set(err, ERR_INVALID, "block index in '%.200s' is not a number",
					 path);
		return worker_http_parse_u64("block index", s3, &out->number, err);
	}
	if (strcmp(s1, "preload") == 0 && nseg == 3) {
		bool post = strcmp(method, "POST") == 0;

		route_set(out, post ? WORKER_HTTP_PRELOAD_START : WORKER_HTTP_PRELOAD_STATUS, method,
			  "GET, POST", true);
		if (segment(path, 2, s2, sizeof(s2)) < 0)
			return error_set(err, ERR_INVALID, "'%.200s': the last part is too long", path);
		if (post) {
			rc = block_dataset_name_check(s2, err);
			if (rc != ERR_OK)
				return rc;
			snprintf(out->dataset, sizeof(out->dataset), "%s", s2);
			return ERR_OK;
		}
		if (!out->method_allowed)
			return ERR_OK;
		return worker_http_parse_u64("preload id", s2, &out->number, err);
	}
	if (strcmp(s1, "prefetch") == 0 && nseg == 3) {
		route_set(out, WORKER_HTTP_PREFETCH, method, "POST", true);
		return route_dataset(path, out, err);
	}
unknown:
	return error_set(err, ERR_NOT_FOUND, "no such route '%.200s'", path);
}

/* Decodes n bytes of src into out (size bytes); -1 on a bad escape or
 * decoded NUL, -2 when it does not fit. */
static int decode(const char *src, size_t n, char *out, size_t size)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char c = src[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= n)
				return -1;
			hi = fileio_hex_value(src[i + 1]);
			lo = hi < 0 ? -1 : fileio_hex_value(src[i + 2]);
			if (lo < 0)
				return -1;
			c = (char)(hi << 4 | lo);
			if (c == '\0')
				return -1;
			i += 2;
		} else if (c == '+') {
			c = ' ';
		}
		if (o + 1 >= size)
			return -2;
		out[o++] = c;
	}
	out[o] = '\0';
	return 0;
}

enum error_code worker_http_query_get(const char *query, const char *name, char *out,
				      size_t size, bool *found, struct error *err)
{
	const size_t nlen = strlen(name);
	const char *p = query ? query : "";

	*found = false;
	if (size > 0)
		out[0] = '\0';
	while (*p) {
		const char *end = strchrnul(p, '&');
		const char *eq = memchr(p, '=', (size_t)(end - p));
		size_t klen = eq ? (size_t)(eq - p) : (size_t)(end - p);

		if (klen == nlen && memcmp(p, name, nlen) == 0) {
			const char *v = eq ? eq + 1 : end;
			int r;

			if (*found)
				return error_set(err, ERR_INVALID, "query parameter '%s' given twice", name);
			r = decode(v, (size_t)(end - v), out, size);
			if (r == -1)
				return error_set(err, ERR_INVALID,
						 "query parameter '%s' has a malformed %%-escape", name);
			if (r == -2)
				return error_set(err, ERR_INVALID,
						 "query parameter '%s' is longer than %zu bytes", name,
						 size - 1);
			*found = true;
		}
		p = *end ? end + 1 : end;
	}
	return ERR_OK;
}

enum error_code worker_http_parse_block_query(const char *query,
					      struct worker_http_block_query *out,
					      struct error *err)
{
	char ra[24];
	uint64_t v = 0;
	bool found;
	enum error_code rc;

	memset(out, 0, sizeof(*out));
	rc = worker_http_query_get(query, "key", out->key, sizeof(out->key), &found, err);
	if (rc != ERR_OK)
		return rc;
	if (!found || !out->key[0])
		return error_set(err, ERR_INVALID,
				 "missing query parameter 'key' (the object key, relative to the dataset)");
	rc = worker_http_query_get(query, "etag", out->etag, sizeof(out->etag), &found, err);
	if (rc != ERR_OK)
		return rc;
	if (!found || !out->etag[0])
		return error_set(err, ERR_INVALID,
				 "missing query parameter 'etag' (the object's version from the listing)");
	rc = worker_http_query_get(query, "size", ra, sizeof(ra), &found, err);
	if (rc != ERR_OK)
		return rc;
	if (found) {
		rc = worker_http_parse_u64("size", ra, &out->size, err);
		if (rc != ERR_OK)
			return rc;
		if (out->size == 0)
			return error_set(err, ERR_INVALID,
					 "size 0: an empty object has no blocks (leave size out when it is not known)");
	}
	rc = worker_http_query_get(query, "bs", ra, sizeof(ra), &found, err);
	if (rc != ERR_OK)
		return rc;
	if (found) {
		rc = worker_http_parse_u64("bs", ra, &out->block_size, err);
		if (rc != ERR_OK)
			return rc;
		if (out->block_size == 0)
			return error_set(err, ERR_INVALID,
					 "bs 0: a block size is 1 or more bytes (leave bs out when it is not known)");
	}
	rc = worker_http_query_get(query, "readahead", ra, sizeof(ra), &found, err);
	if (rc != ERR_OK)
		return rc;
	if (found) {
		rc = worker_http_parse_u64("readahead", ra, &v, err);
		if (rc != ERR_OK)
			return rc;
		if (v > BLOCK_URL_READAHEAD_MAX)
			return error_set(err, ERR_INVALID, "readahead %llu is more than %d blocks",
					 (unsigned long long)v, BLOCK_URL_READAHEAD_MAX);
		out->readahead = (unsigned)v;
	}
	rc = worker_http_query_get(query, "verify", ra, sizeof(ra), &found, err);
	if (rc != ERR_OK)
		return rc;
	if (found) {
		if (strcmp(ra, "0") != 0 && strcmp(ra, "1") != 0)
			return error_set(err, ERR_INVALID, "verify '%s' is not 0 or 1", ra);
		out->verify = ra[0] == '1';
	}
	rc = worker_http_query_get(query, "cache", out->cache_id, sizeof(out->cache_id), &found,
				   err);
	if (rc != ERR_OK)
		return rc;
	if (found && !block_dir_id_valid(out->cache_id))
		return error_set(err, ERR_INVALID, "cache '%s' is not a cache directory id",
				 out->cache_id);
	return ERR_OK;
}

/* Digits of a range bound; returns the position after them, or NULL. */
static const char *range_num(const char *p, uint64_t *out)
{
	uint64_t v = 0;
	int n = 0;

	for (; *p >= '0' && *p <= '9'; p++, n++) {
		unsigned d = (unsigned)(*p - '0');

		if (n >= 20 || v > (UINT64_MAX - d) / 10)
			return NULL;
		v = v * 10 + d;
	}
	if (n == 0)
		return NULL;
	*out = v;
	return p;
}

enum error_code worker_http_range_parse(const char *header, struct worker_http_range *out,
					struct error *err)
{
	const char *p;

	memset(out, 0, sizeof(*out));
	if (!header || !*header)
		return ERR_OK;
	out->present = true;
	if (strncasecmp(header, "bytes=", 6) != 0)
		goto bad;
	p = header + 6;
	if (*p == '-') {
		out->suffix = true;
		p = range_num(p + 1, &out->first);
		if (!p || *p)
			goto bad;
		return ERR_OK;
	}
	p = range_num(p, &out->first);
	if (!p || *p != '-')
		goto bad;
	p++;
	if (!*p) {
		out->open_end = true;
		return ERR_OK;
	}
	p = range_num(p, &out->last);
	if (!p || *p || out->last < out->first)
		goto bad;
	return ERR_OK;
bad:
	if (strchr(header, ','))
		return error_set(err, ERR_INVALID,
				 "range '%.100s' is malformed: only one range per request is supported",
				 header);
	return error_set(err, ERR_INVALID,
			 "range '%.100s' is malformed (expected bytes=FIRST-LAST, bytes=FIRST- or bytes=-COUNT)",
			 header);
}

enum error_code worker_http_range_resolve(const struct worker_http_range *r, const char *header,
					  uint64_t length, uint64_t *off, uint64_t *len,
					  struct error *err)
{
	if (!r->present) {
		*off = 0;
		*len = length;
		return ERR_OK;
	}
	if (r->suffix) {
		if (r->first == 0 || length == 0)
			goto past;
		*len = r->first < length ? r->first : length;
		*off = length - *len;
		return ERR_OK;
	}
	if (r->first >= length)
		goto past;
	*off = r->first;
	*len = (r->open_end || r->last >= length ? length - 1 : r->last) - r->first + 1;
	return ERR_OK;
past:
	return error_set(err, ERR_RANGE, "range '%.100s' is past the end of the block (%llu bytes)",
			 header ? header : "", (unsigned long long)length);
}

static enum error_code json_error(const json_error_t *je, struct error *err)
{
	return error_set(err, ERR_INVALID, "malformed JSON at line %d column %d: %s", je->line,
			 je->column, je->text);
}

static enum error_code json_string_field(json_t *v, const char *key, char *out, size_t size,
					 struct error *err)
{
	const char *s;

	if (!json_is_string(v))
		return error_set(err, ERR_INVALID, "field '%s' must be a string", key);
	s = json_string_value(v);
	if (strlen(s) != json_string_length(v))
		return error_set(err, ERR_INVALID, "field '%s' holds a NUL character", key);
	if (strlen(s) >= size)
		return error_set(err, ERR_INVALID, "field '%s' is longer than %zu bytes", key,
				 size - 1);
	memcpy(out, s, strlen(s) + 1);
	return ERR_OK;
}

enum error_code worker_http_parse_dataset_body(const char *body, size_t len,
					       struct worker_http_dataset_body *out,
					       struct error *err)
{
	json_error_t je;
	json_t *root, *v;
	const char *key;
	enum error_code rc = ERR_OK;
	bool has_source = false;

	memset(out, 0, sizeof(*out));
	root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return json_error(&je, err);
	if (!json_is_object(root)) {
		rc = error_set(err, ERR_INVALID, "the body must be a JSON object");
		goto out;
	}
	json_object_foreach(root, key, v) {
		if (strcmp(key, "source") == 0) {
			rc = json_string_field(v, key, out->source, sizeof(out->source), err);
			has_source = true;
		} else if (strcmp(key, "endpoint") == 0) {
			/* "" is left out, as in meta's specs: the worker's own. */
			rc = json_string_field(v, key, out->endpoint, sizeof(out->endpoint), err);
			out->has_endpoint = *out->endpoint != '\0';
		} else if (strcmp(key, "region") == 0) {
			rc = json_string_field(v, key, out->region, sizeof(out->region), err);
			if (rc == ERR_OK && store_check_region(out->region, err) != ERR_OK)
				rc = error_wrap(err, "field 'region'");
			out->has_region = *out->region != '\0';
		} else if (strcmp(key, "credentials_file") == 0) {
			rc = json_string_field(v, key, out->credentials_file,
					       sizeof(out->credentials_file), err);
			out->has_credentials_file = true;
		} else if (strcmp(key, "block_size") == 0) {
			out->has_block_size = true;
			if (json_is_integer(v) && json_integer_value(v) > 0) {
				out->block_size = (uint64_t)json_integer_value(v);
			} else if (json_is_string(v)) {
				if (config_parse_size(json_string_value(v), &out->block_size) != ERR_OK)
					rc = error_set(err, ERR_INVALID,
						       "field 'block_size': '%.64s' is not a size",
						       json_string_value(v));
			} else {
				rc = error_set(err, ERR_INVALID,
					       "field 'block_size' must be a positive integer or a size like \"4MiB\"");
			}
		} else if (strcmp(key, "policy") == 0) {
			const char *s = json_is_string(v) ? json_string_value(v) : NULL;

			out->has_policy = true;
			if (s && strcmp(s, "lru") == 0)
				out->policy = BLOCKSTORE_LRU;
			else if (s && strcmp(s, "scan-resistant") == 0)
				out->policy = BLOCKSTORE_SCAN_RESISTANT;
			else
				rc = error_set(err, ERR_INVALID,
					       "field 'policy' must be \"lru\" or \"scan-resistant\"");
		} else if (strcmp(key, "pin") == 0) {
			out->has_pin = true;
			if (json_is_boolean(v))
				out->pin = json_is_true(v);
			else
				rc = error_set(err, ERR_INVALID, "field 'pin' must be true or false");
		} else {
			rc = error_set(err, ERR_INVALID,
				       "unknown field '%.64s' (source, endpoint, region, credentials_file, block_size, policy, pin)",
				       key);
		}
		if (rc != ERR_OK)
			goto out;
	}
	if (!has_source || !out->source[0])
		rc = error_set(err, ERR_INVALID, "field 'source' is required, e.g. \"s3://bucket/prefix/\"");
out:
	json_decref(root);
	return rc;
}

void worker_http_free_objects(char **objects, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(objects[i]);
	free(objects);
}

/* Loads a body of the form {"objects": ...} into *root (decref it) and
 * points *arr at the field's value, NULL when absent. */
static enum error_code objects_body(const char *body, size_t len, json_t **root, json_t **arr,
				    struct error *err)
{
	json_error_t je;
	const char *key;
	json_t *v;

	*arr = NULL;
	*root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &je);
	if (!*root)
		return json_error(&je, err);
	if (!json_is_object(*root))
		return error_set(err, ERR_INVALID, "the body must be a JSON object");
	json_object_foreach(*root, key, v) {
		if (strcmp(key, "objects") != 0)
			return error_set(err, ERR_INVALID, "unknown field '%.64s' (objects)", key);
		*arr = v;
	}
	return ERR_OK;
}

enum error_code worker_http_parse_preload_body(const char *body, size_t len, char ***objects,
					       size_t *n, struct error *err)
{
	json_t *root, *arr, *v;
	char **list = NULL;
	size_t i, count = 0;
	enum error_code rc;

	*objects = NULL;
	*n = 0;
	if (!body || len == 0)
		return ERR_OK;
	rc = objects_body(body, len, &root, &arr, err);
	if (rc != ERR_OK || !arr)
		goto out;
	if (!json_is_array(arr)) {
		rc = error_set(err, ERR_INVALID, "field 'objects' must be an array of object keys");
		goto out;
	}
	count = json_array_size(arr);
	if (count > PRELOAD_MAX_OBJECTS) {
		rc = error_set(err, ERR_INVALID, "field 'objects' names %zu objects, at most %d",
			       count, PRELOAD_MAX_OBJECTS);
		goto out;
	}
	list = calloc(count ? count : 1, sizeof(*list));
	if (!list) {
		rc = error_set(err, ERR_NOMEM, "out of memory");
		goto out;
	}
	json_array_foreach(arr, i, v) {
		if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
			rc = error_set(err, ERR_INVALID, "field 'objects' item %zu must be a string", i);
			break;
		}
		list[i] = strdup(json_string_value(v));
		if (!list[i]) {
			rc = error_set(err, ERR_NOMEM, "out of memory");
			break;
		}
	}
	if (rc != ERR_OK) {
		worker_http_free_objects(list, count);
		goto out;
	}
	*objects = list;
	*n = count;
out:
	json_decref(root);
	return rc;
}

/* One item of a prefetch body into h; ERR_INVALID naming item i. */
static enum error_code prefetch_item(json_t *v, size_t i, struct worker_http_hint *h,
				     struct error *err)
{
	const char *name;
	json_t *field;
	char what[32];
	bool has_key = false, has_etag = false, has_size = false;
	enum error_code rc;

	if (!json_is_object(v))
		return error_set(err, ERR_INVALID,
				 "field 'objects' item %zu must be an object with key, etag and size", i);
	json_object_foreach(v, name, field) {
		snprintf(what, sizeof(what), "objects[%zu].%s", i, name);
		if (strcmp(name, "key") == 0) {
			rc = json_string_field(field, what, h->key, sizeof(h->key), err);
			has_key = rc == ERR_OK && h->key[0];
		} else if (strcmp(name, "etag") == 0) {
			rc = json_string_field(field, what, h->etag, sizeof(h->etag), err);
			has_etag = rc == ERR_OK && h->etag[0];
		} else if (strcmp(name, "size") == 0) {
			if (!json_is_integer(field) || json_integer_value(field) < 1)
				return error_set(err, ERR_INVALID,
						 "field '%s' must be a whole number of bytes, 1 or more",
						 what);
			h->size = (uint64_t)json_integer_value(field);
			has_size = true;
			rc = ERR_OK;
		} else {
			return error_set(err, ERR_INVALID, "unknown field '%.64s' (key, etag, size)",
					 what);
		}
		if (rc != ERR_OK)
			return rc;
	}
	if (!has_key || !has_etag || !has_size)
		return error_set(err, ERR_INVALID, "field 'objects' item %zu has no %s", i,
				 !has_key ? "key" : !has_etag ? "etag" : "size");
	return ERR_OK;
}

enum error_code worker_http_parse_prefetch_body(const char *body, size_t len,
						struct worker_http_hint **out, size_t *n,
						struct error *err)
{
	struct worker_http_hint *list = NULL;
	json_t *root, *arr, *v;
	size_t i, count;
	enum error_code rc;

	*out = NULL;
	*n = 0;
	rc = objects_body(body, len, &root, &arr, err);
	if (rc != ERR_OK)
		goto out;
	if (!arr || !json_is_array(arr) || json_array_size(arr) == 0) {
		rc = error_set(err, ERR_INVALID,
			       "field 'objects' must be an array of 1 to %d objects to prefetch",
			       WORKER_HTTP_PREFETCH_MAX);
		goto out;
	}
	count = json_array_size(arr);
	if (count > WORKER_HTTP_PREFETCH_MAX) {
		rc = error_set(err, ERR_INVALID, "field 'objects' names %zu objects, at most %d",
			       count, WORKER_HTTP_PREFETCH_MAX);
		goto out;
	}
	list = calloc(count, sizeof(*list));
	if (!list) {
		rc = error_set(err, ERR_NOMEM, "out of memory");
		goto out;
	}
	json_array_foreach(arr, i, v) {
		rc = prefetch_item(v, i, &list[i], err);
		if (rc != ERR_OK)
			break;
	}
	if (rc != ERR_OK) {
		free(list);
		goto out;
	}
	*out = list;
	*n = count;
out:
	json_decref(root);
	return rc;
}

enum error_code worker_http_check_framing(const struct worker_http_framing *f,
					  struct error *err)
{
	const char *te = f->transfer_encoding;
	size_t n;

	if (f->content_lengths > 0 && f->transfer_encodings > 0)
		return error_set(err, ERR_INVALID,
				 "request has both Content-Length and Transfer-Encoding: its length is ambiguous");
	if (f->content_lengths > 1)
		return error_set(err, ERR_INVALID,
				 "request has %u Content-Length headers: its length is ambiguous",
				 f->content_lengths);
	if (f->transfer_encodings > 1)
		return error_set(err, ERR_INVALID,
				 "request has %u Transfer-Encoding headers: its length is ambiguous",
				 f->transfer_encodings);
	if (f->transfer_encodings == 0)
		return ERR_OK;
	te = te ? te : "";
	te += strspn(te, " \t");
	n = strlen(te);
	while (n > 0 && (te[n - 1] == ' ' || te[n - 1] == '\t'))
		n--;
	if (n == 7 && strncasecmp(te, "chunked", 7) == 0)
		return ERR_OK;
	return error_set(err, ERR_UNSUPPORTED,
			 "transfer coding '%.64s' is not supported (only 'chunked')",
			 f->transfer_encoding ? f->transfer_encoding : "");
}

/* --- metrics ------------------------------------------------------------- */

void worker_http_render_metrics(struct fetcher *f, struct preloader *p, uint64_t served_bytes,
				uint64_t served_in_dir, struct metrics_buf *b)
{
	struct fetch_stats fs;
	struct blockstore_stats bs;
	struct preload_totals pt;

	fetch_get_stats(f, &fs);
	blockstore_get_stats(fetch_blockstore(f), &bs);
	preload_get_totals(p, &pt);

	metrics_render_counter(b, "granary_worker_hits_total",
			       "block requests served from the cache", fs.hits);
	metrics_render_counter(b, "granary_worker_misses_total",
			       "block requests that needed or waited for a store fetch", fs.misses);
	metrics_render_counter(b, "granary_worker_store_fetches_total",
			       "block fetches from the object store (one per single flight)",
			       fs.fetches);
	metrics_render_counter(b, "granary_worker_store_fetch_errors_total",
			       "block fetches from the object store that failed", fs.fetch_errors);
	metrics_render_counter(b, "granary_worker_store_requests_total",
			       "requests sent to the object stores, retries included",
			       fs.store_requests);
	metrics_render_counter(b, "granary_worker_store_bytes_total",
			       "block bytes received from the object stores", fs.store_bytes);
	metrics_render_counter(b, "granary_worker_served_bytes_total",
			       "block bytes sent to clients", served_bytes);
	metrics_render_counter(b, "granary_worker_served_in_dir_total",
			       "block requests of the node's mounts answered 'read it from the cache directory' (cache=ID)",
			       served_in_dir);
	metrics_render_counter(b, "granary_worker_evictions_total",
			       "blocks evicted from the cache", bs.evictions);
	metrics_render_counter(b, "granary_worker_corrupt_total",
			       "cached blocks dropped by a failed checksum or header check",
			       bs.corrupt);
	metrics_render_counter(b, "granary_worker_unowned_dropped_total",
			       "cached blocks dropped because another worker owns them (placement)",
			       bs.unowned);
	metrics_render_counter(b, "granary_worker_admission_rejected_total",
			       "blocks the cache refused to admit", bs.rejected);
	metrics_render_counter(b, "granary_worker_not_admitted_served_total",
			       "store fetches served from memory because the cache refused the block",
			       fs.not_admitted);
	metrics_render_counter(b, "granary_worker_readahead_queued_total",
			       "blocks queued for read-ahead", fs.readahead_queued);
	metrics_render_counter(b, "granary_worker_readahead_fetched_total",
			       "blocks fetched by read-ahead", fs.readahead_fetched);
	metrics_render_counter(b, "granary_worker_coalesced_gets_total",
			       "read-ahead GETs that fetched more than one block", fs.coalesced_gets);
	metrics_render_counter(b, "granary_worker_readahead_dropped_total",
			       "read-ahead blocks dropped because the queue was full",
			       fs.readahead_dropped);
	metrics_render_gauge(b, "granary_worker_capacity_bytes", "bytes the cache may hold",
			     bs.capacity);
	metrics_render_counter(b, "granary_worker_disk_full_total",
			       "times the cache disk was full and the capacity lowered to what it holds",
			       bs.disk_full);
	metrics_render_gauge(b, "granary_worker_used_bytes",
			     "bytes the cache holds, headers included", bs.used);
	metrics_render_gauge(b, "granary_worker_blocks", "blocks in the cache", bs.blocks);
	metrics_render_gauge(b, "granary_worker_fetches_inflight",
			     "object-store block fetches running now", fs.inflight);
	metrics_render_gauge(b, "granary_worker_readahead_limit",
			     "read-ahead jobs allowed at once now, found by trying (from threads down to threads_min)",
			     fetch_readahead_limit(f));
	metrics_render_gauge(b, "granary_worker_datasets", "datasets registered", fs.datasets);
	metrics_render_gauge(b, "granary_worker_preload_jobs_running", "preload jobs running",
			     pt.running);
	metrics_render_gauge(b, "granary_worker_preload_blocks_done",
			     "blocks cached so far by running preload jobs", pt.blocks_done);
	metrics_render_gauge(b, "granary_worker_preload_blocks_total",
			     "blocks to cache by running preload jobs", pt.blocks_total);
	metrics_render_gauge(b, "granary_worker_preload_bytes_done",
			     "bytes cached so far by running preload jobs", pt.bytes_done);
	metrics_render_gauge(b, "granary_worker_preload_bytes_total",
			     "bytes to cache by running preload jobs", pt.bytes_total);
	metrics_render_histogram(b, "granary_worker_fetch_seconds",
				 "duration of block fetches from the object store", fetch_latency(f));
}

/* --- the server ---------------------------------------------------------- */

/*
 * Connections are tracked from accept to close (microhttpd's socket
 * context) for two defences against clients that hold connections without
 * sending requests: the per-address limit, counted at accept, and the
 * request deadline, enforced by a watchdog thread that shuts the socket
 * down (microhttpd's own timeout counts inactivity, which a client
 * trickling a byte a second never shows). A deadline runs while a request
 * is awaited: from the accept for the first one, from its request line
 * for a later one (and from the previous answer, idle_timeout longer, for
 * a line that never ends); none while a request is being answered.
 */
struct conn_addr {
	int family;                       /* AF_INET or AF_INET6; 0: not limited (unix) */
	unsigned char bytes[16];
};

struct conn {
	struct conn *prev, *next;
	int fd;
	struct conn_addr addr;
	uint64_t deadline_ms;             /* 0: none (answering) */
	bool first;                       /* no request line yet: deadline from accept */
	bool cut;                         /* shut down by the watchdog */
};

/* One log line per HTTP_EVENT_LOG_MS at most, counting the events since
 * the last line. */
#define HTTP_EVENT_LOG_MS 10000
#define HTTP_MHD_LOG_KINDS 16

/*
 * Blocks sent, whose pages leave the page cache (block_file_drop) once the
 * client has read them (docs/ARCHITECTURE.md, "Memory"): when a response
 * completes, sendfile's pages are still held by the socket until the
 * client reads them (off loopback, until it acknowledges them), and the
 * kernel drops no page in use. So the watchdog drops them
 * HTTP_SENT_DROP_MS later (blockstore_drop_pages: by name, holding no
 * descriptor that would keep an evicted block's disk space); past
 * HTTP_SENT_MAX waiting, the oldest goes at once.
 */
#define HTTP_SENT_MAX 256
#define HTTP_SENT_DROP_MS 100

struct sent_block {
	uint8_t hash[BLOCK_HASH_LEN];
	uint64_t off, len;
	uint64_t at_ms;                   /* when its response completed */
};

struct event_log {
	uint64_t last_ms;
	uint64_t since;                   /* events since the last line */
	char address[INET6_ADDRSTRLEN];   /* the latest event's client */
};

struct worker_http {
	struct worker_http_config cfg;
	struct MHD_Daemon *mhd;
	int listen_fd;
	char unix_path[108];              /* "" for TCP */
	struct MHD_Daemon *probe;         /* cfg.probe_listen's; NULL: none */
	char probe_unix_path[108];        /* "" for TCP */
	atomic_uint_fast64_t active;      /* requests between start and completion */
	atomic_uint_fast64_t served;      /* block bytes sent */
	atomic_uint_fast64_t served_in_dir; /* answered 204: read it from the directory */
	pthread_mutex_t mu;
	pthread_cond_t cv;                /* wakes the watchdog to stop */
	pthread_t watchdog;
	bool watchdog_running;
	bool stopping;                    /* protected by mu */
	struct conn *conns;               /* protected by mu */
	struct sent_block sent[HTTP_SENT_MAX]; /* oldest first; protected by mu */
	unsigned nsent;                   /* protected by mu */
	struct event_log refused_log;     /* protected by mu */
	struct event_log cut_log;         /* protected by mu */
	struct {
		const char *fmt;
		struct event_log log;
	} mhd_logs[HTTP_MHD_LOG_KINDS];   /* protected by mu */
};

/* --- connection limits and deadlines ------------------------------------ */

static bool conn_addr_of(const struct sockaddr *sa, struct conn_addr *out)
{
	memset(out, 0, sizeof(*out));
	if (sa && sa->sa_family == AF_INET) {
		out->family = AF_INET;
		memcpy(out->bytes, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
		return true;
	}
	if (sa && sa->sa_family == AF_INET6) {
		out->family = AF_INET6;
		memcpy(out->bytes, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
		return true;
	}
	return false; /* unix socket: every client is this node's own */
}

static const char *conn_addr_text(const struct conn_addr *a, char *buf, size_t size)
{
	if (!a->family || !inet_ntop(a->family, a->bytes, buf, (socklen_t)size))
		snprintf(buf, size, "unix");
	return buf;
}

/* True (with the events since the last line in *count) when a line is
 * due: there are some and the last line is HTTP_EVENT_LOG_MS old. Caller
 * holds h->mu. */
static bool event_log_pending(struct event_log *e, uint64_t now, uint64_t *count)
{
	if (e->since == 0 || (e->last_ms && now - e->last_ms < HTTP_EVENT_LOG_MS))
		return false;
	*count = e->since;
	e->since = 0;
	e->last_ms = now;
	return true;
}

/* Counts an event from client address a (NULL: none); see event_log_pending. */
static bool event_log_due(struct event_log *e, uint64_t now, const struct conn_addr *a,
			  uint64_t *count)
{
	if (a)
		conn_addr_text(a, e->address, sizeof(e->address));
	e->since++;
	return event_log_pending(e, now, count);
}

static void log_refused(const struct worker_http *h, uint64_t count)
{
	log_warn("refusing connections: too many connections from one address",
		 LOG_S("address", h->refused_log.address),
		 LOG_U("http.max_connections_per_address", h->cfg.max_connections_per_address),
		 LOG_U("refused", count));
}

static void log_cut(const struct worker_http *h, uint64_t count)
{
	log_warn("closing connections: a request did not arrive within http.request_timeout",
		 LOG_S("address", h->cut_log.address),
		 LOG_U("http.request_timeout_ms", h->cfg.request_timeout_ms), LOG_U("closed", count));
}

/* microhttpd's accept policy: refuses a connection from an address that
 * holds max_connections_per_address already. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *sa, socklen_t len)
{
	struct worker_http *h = cls;
	unsigned limit = h->cfg.max_connections_per_address, held = 0;
	struct conn_addr a;
	uint64_t count;

	(void)len;
	if (limit == 0 || !conn_addr_of(sa, &a))
		return MHD_YES;
	pthread_mutex_lock(&h->mu);
	for (struct conn *c = h->conns; c && held < limit; c = c->next)
		held += c->addr.family == a.family && memcmp(c->addr.bytes, a.bytes, 16) == 0;
	if (held < limit) {
		pthread_mutex_unlock(&h->mu);
		return MHD_YES;
	}
	if (event_log_due(&h->refused_log, retry_now_ms(), &a, &count))
		log_refused(h, count);
	pthread_mutex_unlock(&h->mu);
	return MHD_NO;
}

/* microhttpd's connection notification: tracks each connection from
 * accept (in the listening thread) to close (before its socket is). */
static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct worker_http *h = cls;
	struct conn *c = *socket_context;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *fd =
			MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
		const union MHD_ConnectionInfo *peer =
			MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

		c = calloc(1, sizeof(*c));
		if (!c)
			return; /* untracked: neither counted nor timed */
		c->fd = fd ? fd->connect_fd : -1;
		conn_addr_of(peer ? peer->client_addr : NULL, &c->addr);
		c->first = true;
		pthread_mutex_lock(&h->mu);
		c->deadline_ms = retry_now_ms() + h->cfg.request_timeout_ms;
		c->next = h->conns;
		if (h->conns)
			h->conns->prev = c;
		h->conns = c;
		pthread_mutex_unlock(&h->mu);
		*socket_context = c;
		return;
	}
	if (!c)
		return;
	pthread_mutex_lock(&h->mu);
	if (c->prev)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&h->mu);
	free(c);
	*socket_context = NULL;
}

enum conn_phase {
	CONN_REQUEST_LINE,   /* a request line arrived: the rest must follow */
	CONN_ANSWERING,      /* the whole request arrived */
	CONN_ANSWERED,       /* waiting for the next request */
};

static void conn_enter(struct worker_http *h, struct MHD_Connection *mc, enum conn_phase phase)
{
	const union MHD_ConnectionInfo *info =
		MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct conn *c = info ? info->socket_context : NULL;
	uint64_t now = retry_now_ms();

	if (!c)
		return;
	pthread_mutex_lock(&h->mu);
	switch (phase) {
	case CONN_REQUEST_LINE:
		if (!c->first)
			c->deadline_ms = now + h->cfg.request_timeout_ms;
		c->first = false;
		break;
	case CONN_ANSWERING:
		c->deadline_ms = 0;
		break;
	case CONN_ANSWERED:
		/* An idle connection is microhttpd's to close at idle_timeout;
		 * this only catches a next request line that never ends. */
		c->deadline_ms = now + h->cfg.idle_timeout_ms + h->cfg.request_timeout_ms;
		break;
	}
	pthread_mutex_unlock(&h->mu);
}

static void sent_drop(struct worker_http *h, const struct sent_block *b)
{
	blockstore_drop_pages(fetch_blockstore(h->cfg.fetcher), b->hash, b->off, b->len);
}

/* Shuts down the connections past their deadline: their threads see the
 * end of the stream and close them. Until microhttpd reports a connection
 * closed its socket stays open, so c->fd is still that connection's. */
static void *watchdog(void *arg)
{
	struct worker_http *h = arg;

	pthread_mutex_lock(&h->mu);
	while (!h->stopping) {
		uint64_t now = retry_now_ms(), next = now + 500, count;
		struct sent_block due[HTTP_SENT_MAX];
		unsigned ndue = 0;
		struct timespec ts;

		while (ndue < h->nsent && h->sent[ndue].at_ms + HTTP_SENT_DROP_MS <= now) {
			due[ndue] = h->sent[ndue];
			ndue++;
		}
		if (ndue > 0) {
			h->nsent -= ndue;
			memmove(h->sent, h->sent + ndue, h->nsent * sizeof(h->sent[0]));
			pthread_mutex_unlock(&h->mu);
			for (unsigned i = 0; i < ndue; i++)
				sent_drop(h, &due[i]);
			pthread_mutex_lock(&h->mu);
			continue;
		}
		if (h->nsent > 0 && h->sent[0].at_ms + HTTP_SENT_DROP_MS < next)
			next = h->sent[0].at_ms + HTTP_SENT_DROP_MS;

		for (struct conn *c = h->conns; c; c = c->next) {
			if (!c->deadline_ms || c->cut)
				continue;
			if (c->deadline_ms > now) {
				next = c->deadline_ms < next ? c->deadline_ms : next;
				continue;
			}
			if (c->fd >= 0)
				shutdown(c->fd, SHUT_RDWR);
			c->cut = true;
			if (event_log_due(&h->cut_log, now, &c->addr, &count))
				log_cut(h, count);
		}
		/* The rest of a burst, once its window has passed. */
		if (event_log_pending(&h->cut_log, now, &count))
			log_cut(h, count);
		if (event_log_pending(&h->refused_log, now, &count))
			log_refused(h, count);
		ts = retry_deadline_ts(CLOCK_MONOTONIC, next - now);
		pthread_cond_timedwait(&h->cv, &h->mu, &ts);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

/* Per request, from the request line to completion. */
struct req {
	struct worker_http *h;
	char *raw;                        /* the request target: path '\0' query */
	const char *path, *query;
	bool started;
	bool authenticated;               /* its token checked (authenticate) */
	struct worker_http_route route;
	char *body;
	size_t body_len;
	bool body_too_large;
	struct fetch_result res;          /* held until the response is done */
	uint64_t sending;                 /* block bytes in the response */
	uint64_t sending_off;             /* where in the block they start */
};

static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct worker_http *h = cls;
	struct req *rq = calloc(1, sizeof(*rq));
	char *q;

	if (!rq)
		return NULL;
	rq->h = h;
	rq->raw = strdup(uri ? uri : "");
	if (!rq->raw) {
		free(rq);
		return NULL;
	}
	q = strchr(rq->raw, '?');
	if (q)
		*q++ = '\0';
	rq->path = rq->raw;
	rq->query = q ? q : "";
	atomic_fetch_add(&h->active, 1);
	conn_enter(h, conn, CONN_REQUEST_LINE);
	return rq;
}

/* Notes the block rq sent, for the watchdog to drop (struct sent_block);
 * with too many waiting, the oldest goes now. */
static void sent_add(struct worker_http *h, const struct req *rq)
{
	struct sent_block b = { .off = rq->sending_off, .len = rq->sending,
				.at_ms = retry_now_ms() }, oldest;
	bool full = false;

	memcpy(b.hash, blockstore_ref_hash(rq->res.ref), BLOCK_HASH_LEN);
	pthread_mutex_lock(&h->mu);
	if (h->nsent == HTTP_SENT_MAX) {
		oldest = h->sent[0];
		full = true;
		memmove(h->sent, h->sent + 1, --h->nsent * sizeof(h->sent[0]));
	}
	h->sent[h->nsent++] = b;
	pthread_mutex_unlock(&h->mu);
	if (full)
		sent_drop(h, &oldest);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct worker_http *h = cls;
	struct req *rq = *req_cls;

	conn_enter(h, conn, CONN_ANSWERED);
	if (!rq)
		return;
	if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
		atomic_fetch_add(&h->served, rq->sending);
	/* The bytes sent are the requester's now, in its page cache: on this
	 * node they would be a second copy of what a local mount holds, or
	 * memory spent for another node. */
	if (rq->res.ref && rq->sending > 0)
		sent_add(h, rq);
	fetch_result_release(h->cfg.fetcher, &rq->res);
	free(rq->body);
	free(rq->raw);
	free(rq);
	*req_cls = NULL;
	atomic_fetch_sub(&h->active, 1);
}

/* microhttpd's messages, one line per kind (format) and HTTP_EVENT_LOG_MS:
 * a flood of clients can make it say the same thing for each one. */
__attribute__((format(printf, 2, 0)))
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct worker_http *h = cls;
	uint64_t count = 1;
	bool due = true;
	char msg[512];
	size_t n;

	pthread_mutex_lock(&h->mu);
	for (size_t i = 0; i < HTTP_MHD_LOG_KINDS; i++) {
		if (h->mhd_logs[i].fmt && h->mhd_logs[i].fmt != fmt)
			continue;
		h->mhd_logs[i].fmt = fmt;
		due = event_log_due(&h->mhd_logs[i].log, retry_now_ms(), NULL, &count);
		break;
	}
	pthread_mutex_unlock(&h->mu);
	if (!due)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_warn("http server", LOG_S("cause", msg), LOG_U("times", count));
}

static enum MHD_Result queue(struct MHD_Connection *conn, unsigned status,
			     struct MHD_Response *resp)
{
	enum MHD_Result ret;

	if (!resp)
		return MHD_NO;
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
	char buf[ERROR_MSG_MAX + 2];
	struct MHD_Response *resp;
	int n = snprintf(buf, sizeof(buf), "%s\n", text);

	if (n < 0 || (size_t)n >= sizeof(buf))
		n = (int)sizeof(buf) - 1;
	resp = MHD_create_response_from_buffer((size_t)n, buf, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	return queue(conn, status, resp);
}

/* The one place a core error becomes an HTTP answer. 401 and 403 are the
 * client's token's (authenticate): once it passed, a refusal is the
 * store's (the worker's credentials, a bucket policy, a file it may not
 * read), 502 with the store's reason, so that it never reads as a token
 * rotation gone wrong. */
static enum MHD_Result reply_error(struct req *rq, struct MHD_Connection *conn,
				   const struct error *err)
{
	const bool refused = err->code == ERR_UNAUTHENTICATED || err->code == ERR_PERMISSION;
	unsigned status = rq->authenticated && refused ? MHD_HTTP_BAD_GATEWAY
						       : (unsigned)error_to_http(err->code);
	struct MHD_Response *resp;
	char buf[ERROR_MSG_MAX + 2];
	int n;

	if (status >= 500)
		log_warn("request failed", LOG_S("path", rq->path), LOG_I("status", status),
			 LOG_S("cause", err->msg));
	else
		log_debug("request refused", LOG_S("path", rq->path), LOG_I("status", status),
			  LOG_S("cause", err->msg));
	n = snprintf(buf, sizeof(buf), "%s\n", err->msg);
	if (n < 0 || (size_t)n >= sizeof(buf))
		n = (int)sizeof(buf) - 1;
	resp = MHD_create_response_from_buffer((size_t)n, buf, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	if (status == MHD_HTTP_UNAUTHORIZED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, TOKEN_SCHEME);
	return queue(conn, status, resp);
}

/* Takes ownership of root. */
static enum MHD_Result reply_json(struct MHD_Connection *conn, unsigned status, json_t *root)
{
	struct MHD_Response *resp;
	char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
	size_t n;

	json_decref(root);
	if (!text)
		return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
	n = strlen(text);
	resp = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	return queue(conn, status, resp);
}

static json_t *dataset_json(const struct fetch_dataset_desc *d)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:b}", "name", d->name, "source",
			 d->source, "endpoint", d->endpoint, "region", d->region,
			 "credentials_file", d->credentials_file, "block_size",
			 (json_int_t)d->block_size, "policy",
			 d->policy == BLOCKSTORE_LRU ? "lru" : "scan-resistant", "pin", d->pin);
}

/*
 * The block of a request, and the checksums of a cached block's file to
 * send with it. A client that found the bytes corrupt (verify=1) has the
 * cached copy checked first, which drops it when it is bad, so that it is
 * fetched again. *in_dir: the client reads this cache directory (the
 * node's mount) and the block is in it; the client then reads and checks
 * the file itself, so nothing more is read here. Otherwise the sums of a
 * cached block come from its header, read now; a header that fails its
 * checks drops the block, which is then fetched again, once. The sums of a
 * block in memory are left to the caller, for the range it sends.
 */
static enum error_code block_fetched(struct worker_http *h, struct fetch_dataset *ds,
				     const struct worker_http_block_query *q, uint64_t index,
				     struct fetch_result *res, struct block_sums *sums,
				     bool *in_dir, struct error *err)
{
	struct fetcher *f = h->cfg.fetcher;
	const bool this_dir = q->cache_id[0] &&
			      strcmp(q->cache_id, blockstore_dir_id(fetch_blockstore(f))) == 0;
	enum error_code rc;
	bool dropped = false, corrupt = false;

	*in_dir = false;
	if (q->verify) {
		rc = fetch_recheck(f, ds, q->key, q->etag, index, &dropped, err);
		if (rc != ERR_OK)
			return rc;
	}
	for (int round = 0;; round++) {
		rc = fetch_block_until(f, ds, q->key, q->etag, q->size, index, q->readahead, 0, res,
				       err);
		if (rc != ERR_OK)
			return rc;
		/* With direct_write the fetch hands out the block's bytes in
		 * memory; its file is committed by then (no write-behind
		 * here) unless the cache did not admit it, and then the
		 * bytes are sent. */
		*in_dir = this_dir &&
			  (res->ref || fetch_block_cached(f, ds, q->key, q->etag, index));
		if (*in_dir || !res->ref)
			return ERR_OK;
		rc = blockstore_ref_sums(fetch_blockstore(f), res->ref, sums, &corrupt, err);
		if (rc == ERR_OK)
			return ERR_OK;
		fetch_result_release(f, res);
		/* An unreadable header leaves the block in place: fetching
		 * again would find the same file. */
		if (!corrupt || round > 0)
			return rc;
		error_clear(err);
	}
}

static enum MHD_Result handle_block(struct req *rq, struct MHD_Connection *conn)
{
	struct worker_http *h = rq->h;
	struct worker_http_block_query q;
	struct worker_http_range range;
	struct fetch_dataset *ds = NULL;
	struct MHD_Response *resp = NULL;
	struct block_sums sums;
	const char *range_hdr;
	uint64_t length, off = 0, len = 0;
	char crange[96], crcs[BLOCK_CRC_HEADER_MAX];
	struct error err;
	enum error_code rc;
	uint32_t block_size = 0;
	bool in_dir;

	rc = worker_http_parse_block_query(rq->query, &q, &err);
	if (rc != ERR_OK)
		return reply_error(rq, conn, &err);
	range_hdr = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE);
	rc = worker_http_range_parse(range_hdr, &range, &err);
	if (rc != ERR_OK)
		return reply_error(rq, conn, &err);
	rc = fetch_dataset_get(h->cfg.fetcher, rq->route.dataset, &ds, &err);
	if (rc == ERR_NOT_FOUND && h->cfg.dataset_unknown &&
	    h->cfg.dataset_unknown(h->cfg.dataset_unknown_arg))
		rc = fetch_dataset_get(h->cfg.fetcher, rq->route.dataset, &ds, &err);
	if (rc != ERR_OK)
		return reply_error(rq, conn, &err);
	/* Block N of another block size is another range of the object, whose
	 * checksums the client would find right: 409, and the client reads
	 * the store. */
	if (q.block_size && q.block_size != fetch_dataset_describe(ds)->block_size) {
		error_set(&err, ERR_EXISTS,
			  "dataset '%s' has blocks of %llu bytes on this worker, the request numbers blocks of %llu (bs)",
			  rq->route.dataset,
			  (unsigned long long)fetch_dataset_describe(ds)->block_size,
			  (unsigned long long)q.block_size);
		fetch_dataset_put(h->cfg.fetcher, ds);
		return reply_error(rq, conn, &err);
	}
	/* in_dir: nothing crosses the socket and nothing is left for the
	 * watchdog to drop. */
	rc = block_fetched(h, ds, &q, rq->route.number, &rq->res, &sums, &in_dir, &err);
	if (rc == ERR_OK && !rq->res.ref)
		block_size = fetch_dataset_describe(ds)->block_size;
	fetch_dataset_put(h->cfg.fetcher, ds);
	if (rc != ERR_OK)
		return reply_error(rq, conn, &err);

	length = fetch_result_length(&rq->res);
	rc = worker_http_range_resolve(&range, range_hdr, length, &off, &len, &err);
	if (rc != ERR_OK) {
		struct MHD_Response *r416;
		char buf[ERROR_MSG_MAX + 2];
		int n = snprintf(buf, sizeof(buf), "%s\n", err.msg);

		if (n < 0 || (size_t)n >= sizeof(buf))
			n = (int)sizeof(buf) - 1;
		r416 = MHD_create_response_from_buffer((size_t)n, buf, MHD_RESPMEM_MUST_COPY);
		if (!r416)
			return MHD_NO;
		snprintf(crange, sizeof(crange), "bytes */%llu", (unsigned long long)length);
		MHD_add_response_header(r416, MHD_HTTP_HEADER_CONTENT_RANGE, crange);
		MHD_add_response_header(r416, MHD_HTTP_HEADER_CONTENT_TYPE,
					"text/plain; charset=utf-8");
		return queue(conn, (unsigned)error_to_http(rc), r416);
	}

	if (in_dir) {
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		if (!resp)
			return MHD_NO;
		MHD_add_response_header(resp, BLOCK_CACHE_HEADER, rq->res.hit ? "hit" : "miss");
		atomic_fetch_add(&h->served_in_dir, 1);
		return queue(conn, BLOCK_URL_IN_CACHE_DIR, resp);
	}
	if (len == 0) {
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	} else if (rq->res.ref) {
		/* MHD closes its own descriptor; the ref stays held until the
		 * request completes, so the block is not evicted mid-send. */
		int fd = fcntl(blockstore_ref_fd(rq->res.ref), F_DUPFD_CLOEXEC, 0);

		if (fd < 0) {
			error_set(&err, error_from_errno(errno), "dup block descriptor: %s",
				  strerror(errno));
			return reply_error(rq, conn, &err);
		}
		resp = MHD_create_response_from_fd_at_offset64(
			len, fd, (int64_t)(blockstore_ref_offset(rq->res.ref) + off));
		if (!resp)
			close(fd);
	} else {
		/* The buffer is the request's (rq->res), released at completion,
		 * after the last byte went out. */
		block_sums_of_range(fetch_result_data(&rq->res), length, block_size, off, len,
				    &sums);
		resp = MHD_create_response_from_buffer(
			(size_t)len, (char *)fetch_result_data(&rq->res) + off, MHD_RESPMEM_PERSISTENT);
	}
	if (!resp)
		return MHD_NO;
	rq->sending = len;
	rq->sending_off = off;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
	MHD_add_response_header(resp, BLOCK_CACHE_HEADER, rq->res.hit ? "hit" : "miss");
	if (len > 0) {
		block_crc_header_format(&sums, off, len, crcs);
		MHD_add_response_header(resp, BLOCK_CRC_HEADER, crcs);
	}
	if (range.present) {
		snprintf(crange, sizeof(crange), "bytes %llu-%llu/%llu", (unsigned long long)off,
			 (unsigned long long)(off + len - 1), (unsigned long long)length);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, crange);
		return queue(conn, MHD_HTTP_PARTIAL_CONTENT, resp);
	}
	return queue(conn, MHD_HTTP_OK, resp);
}

static enum MHD_Result handle_dataset_put(struct req *rq, struct MHD_Connection *conn)
{
	struct worker_http *h = rq->h;
	struct worker_http_dataset_body *body = NULL;
	struct fetch_dataset_config cfg;
	struct fetch_dataset *ds = NULL;
	struct error err;
	enum error_code rc;
	enum MHD_Result ret;
	bool created = false;

	body = malloc(sizeof(*body));
	if (!body)
		return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	rc = worker_http_parse_dataset_body(rq->body, rq->body_len, body, &err);
	if (rc != ERR_OK) {
		ret = reply_error(rq, conn, &err);
		goto out;
	}
	cfg = (struct fetch_dataset_config){
		.name = rq->route.dataset,
		.source = body->source,
		.store = h->cfg.store_defaults,
		.block_size = body->has_block_size ? body->block_size : h->cfg.block_size,
		.policy = body->has_policy ? body->policy : h->cfg.policy,
		.pin = body->has_pin && body->pin,
	};
	if (body->has_endpoint)
		cfg.store.endpoint = body->endpoint;
	if (body->has_region)
		cfg.store.region = body->region;
	if (body->has_credentials_file) {
		cfg.store.credentials_file = body->credentials_file;
		cfg.store.profile = NULL;
	}
	rc = fetch_dataset_register(h->cfg.fetcher, &cfg, &created, &err);
	if (rc == ERR_OK)
		rc = fetch_dataset_get(h->cfg.fetcher, rq->route.dataset, &ds, &err);
	if (rc != ERR_OK) {
		ret = reply_error(rq, conn, &err);
		goto out;
	}
	ret = reply_json(conn, created ? MHD_HTTP_CREATED : MHD_HTTP_OK,
			 dataset_json(fetch_dataset_describe(ds)));
	fetch_dataset_put(h->cfg.fetcher, ds);
out:
	free(body);
	return ret;
}

static enum MHD_Result handle_dataset(struct req *rq, struct MHD_Connection *conn,
				      const char *method)
{
	struct worker_http *h = rq->h;
	struct fetch_dataset *ds = NULL;
	struct error err;
	uint64_t dropped = 0;

	/* 403 itself: reply_error turns a permission error of an
	 * authenticated request into the store's refusal (502). */
	if ((strcmp(method, "PUT") == 0 || strcmp(method, "DELETE") == 0) &&
	    !h->cfg.dataset_writes) {
		char msg[ERROR_MSG_MAX];

		snprintf(msg, sizeof(msg),
			 "%s of dataset '%s' refused: this worker takes its datasets from granary-meta "
			 "alone (http.dataset_writes is off)",
			 method, rq->route.dataset);
		return reply_text(conn, MHD_HTTP_FORBIDDEN, msg);
	}
	if (strcmp(method, "PUT") == 0)
		return handle_dataset_put(rq, conn);
	if (strcmp(method, "DELETE") == 0) {
		char why[ERROR_MSG_MAX];

		/* Its jobs first: blocks they wrote after the drop would stay. */
		snprintf(why, sizeof(why), "cancelled: dataset '%s' was removed (DELETE)",
			 rq->route.dataset);
		preload_cancel(h->cfg.preloader, rq->route.dataset, 0, why);
		if (fetch_dataset_unregister(h->cfg.fetcher, rq->route.dataset, &dropped, &err) !=
		    ERR_OK)
			return reply_error(rq, conn, &err);
		return reply_json(conn, MHD_HTTP_OK,
				  json_pack("{s:s, s:I}", "name", rq->route.dataset,
					    "dropped_blocks", (json_int_t)dropped));
	}
	if (fetch_dataset_get(h->cfg.fetcher, rq->route.dataset, &ds, &err) != ERR_OK)
		return reply_error(rq, conn, &err);
	json_t *j = dataset_json(fetch_dataset_describe(ds));

	fetch_dataset_put(h->cfg.fetcher, ds);
	return reply_json(conn, MHD_HTTP_OK, j);
}

static enum MHD_Result handle_datasets(struct req *rq, struct MHD_Connection *conn)
{
	struct fetch_dataset **list = NULL;
	struct error err;
	json_t *arr;
	size_t n = 0;

	if (fetch_dataset_list(rq->h->cfg.fetcher, &list, &n, &err) != ERR_OK)
		return reply_error(rq, conn, &err);
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		json_array_append_new(arr, dataset_json(fetch_dataset_describe(list[i])));
	fetch_dataset_list_free(rq->h->cfg.fetcher, list, n);
	return reply_json(conn, MHD_HTTP_OK, arr ? json_pack("{s:o}", "datasets", arr) : NULL);
}

static enum MHD_Result handle_preload_start(struct req *rq, struct MHD_Connection *conn)
{
	char **objects = NULL;
	size_t n = 0;
	uint64_t id = 0;
	struct error err;
	enum error_code rc;

	rc = worker_http_parse_preload_body(rq->body, rq->body_len, &objects, &n, &err);
	if (rc == ERR_OK)
		rc = preload_start(rq->h->cfg.preloader, rq->route.dataset,
				   (const char *const *)objects, n, &id, &err);
	worker_http_free_objects(objects, n);
	if (rc != ERR_OK)
		return reply_error(rq, conn, &err);
	return reply_json(conn, MHD_HTTP_ACCEPTED, json_pack("{s:I}", "id", (json_int_t)id));
}

/*
 * Queues the first block of each named object for read-ahead, as the
 * objects' first reads would have, and answers 204 at once: a hint, so
 * that the node's mount asks once for the next files of a directory
 * instead of once per file. A block held, queued or in flight costs
 * nothing; one the cache would not admit is not fetched.
 */
static enum MHD_Result handle_prefetch(struct req *rq, struct MHD_Connection *conn)
{
	struct worker_http *h = rq->h;
	struct worker_http_hint *hints = NULL;
	struct fetch_dataset *ds = NULL;
	struct MHD_Response *resp;
	struct error err;
	enum error_code rc;
	size_t n = 0;

	rc = worker_http_parse_prefetch_body(rq->body, rq->body_len, &hints, &n, &err);
	if (rc == ERR_OK) {
		rc = fetch_dataset_get(h->cfg.fetcher, rq->route.dataset, &ds, &err);
		if (rc == ERR_NOT_FOUND && h->cfg.dataset_unknown &&
		    h->cfg.dataset_unknown(h->cfg.dataset_unknown_arg))
			rc = fetch_dataset_get(h->cfg.fetcher, rq->route.dataset, &ds, &err);
	}
	if (rc != ERR_OK) {
		free(hints);
		return reply_error(rq, conn, &err);
	}
	for (size_t i = 0; i < n; i++)
		fetch_prefetch(h->cfg.fetcher, ds, hints[i].key, hints[i].etag, hints[i].size, 0);
	fetch_dataset_put(h->cfg.fetcher, ds);
	free(hints);
	resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	return queue(conn, MHD_HTTP_NO_CONTENT, resp);
}

static enum MHD_Result handle_preload_status(struct req *rq, struct MHD_Connection *conn)
{
	struct preload_status st;
	struct error err;

	if (preload_get(rq->h->cfg.preloader, rq->route.number, &st, &err) != ERR_OK)
		return reply_error(rq, conn, &err);
	return reply_json(
		conn, MHD_HTTP_OK,
		json_pack("{s:I, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s, s:b}",
			  "id", (json_int_t)st.id, "dataset", st.dataset, "state",
			  preload_state_name(st.state), "objects", (json_int_t)st.objects,
			  "blocks_done", (json_int_t)st.blocks_done, "blocks_total",
			  (json_int_t)st.blocks_total, "bytes_done", (json_int_t)st.bytes_done,
			  "bytes_total", (json_int_t)st.bytes_total, "blocks_fetched",
			  (json_int_t)st.blocks_fetched, "blocks_skipped",
			  (json_int_t)st.blocks_skipped, "errors", (json_int_t)st.errors, "error",
			  st.error, "code", error_code_name(st.code), "lasting",
			  st.code != ERR_OK && preload_error_lasts(st.code)));
}

static enum MHD_Result handle_metrics(struct req *rq, struct MHD_Connection *conn)
{
	struct metrics_buf b = { 0 };
	struct MHD_Response *resp;

	worker_http_render_metrics(rq->h->cfg.fetcher, rq->h->cfg.preloader,
				   atomic_load(&rq->h->served), atomic_load(&rq->h->served_in_dir), &b);
	if (b.failed || !b.data) {
		metrics_buf_release(&b);
		return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	}
	resp = MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		metrics_buf_release(&b);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				"text/plain; version=0.0.4; charset=utf-8");
	return queue(conn, MHD_HTTP_OK, resp);
}

/* 503 with the reason, not error_to_http(): a probe only tells ready from
 * not ready. */
static enum MHD_Result reply_readyz(struct worker_http *h, struct MHD_Connection *conn)
{
	struct error err;

	if (h->cfg.readiness && readiness_check(h->cfg.readiness, retry_now_ms(), &err) != ERR_OK)
		return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, err.msg);
	return reply_text(conn, MHD_HTTP_OK, "ok");
}

static enum MHD_Result dispatch(struct req *rq, struct MHD_Connection *conn, const char *method)
{
	if (rq->body_too_large) {
		struct error err;

		error_set(&err, ERR_INVALID, "request body is larger than %u bytes",
			  WORKER_HTTP_BODY_MAX);
		return reply_error(rq, conn, &err);
	}
	switch (rq->route.kind) {
	case WORKER_HTTP_BLOCK:
		return handle_block(rq, conn);
	case WORKER_HTTP_DATASETS:
		return handle_datasets(rq, conn);
	case WORKER_HTTP_DATASET:
		return handle_dataset(rq, conn, method);
	case WORKER_HTTP_PRELOAD_START:
		return handle_preload_start(rq, conn);
	case WORKER_HTTP_PRELOAD_STATUS:
		return handle_preload_status(rq, conn);
	case WORKER_HTTP_PREFETCH:
		return handle_prefetch(rq, conn);
	case WORKER_HTTP_METRICS:
		return handle_metrics(rq, conn);
	case WORKER_HTTP_HEALTHZ:
		return reply_text(conn, MHD_HTTP_OK, "ok");
	case WORKER_HTTP_READYZ:
		return reply_readyz(rq->h, conn);
	}
	return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "unrouted request");
}

/* A /v1 request's token (common/token.h): checked before anything else
 * of the request is looked at, its body included, so that without the
 * token even its errors say nothing and no byte of a body is held. */
static enum error_code authenticate(struct req *rq, struct MHD_Connection *conn,
				    const char *method, struct error *err)
{
	const char *auth;

	if (strncmp(rq->path, "/v1/", 4) != 0 && strcmp(rq->path, "/v1") != 0)
		return ERR_OK;
	auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (token_verify(rq->h->cfg.token, method, rq->path, rq->query, auth, err) != ERR_OK)
		return err->code;
	rq->authenticated = true;
	return ERR_OK;
}

/* Routes and answers a request whose body has arrived (its token checked
 * when its headers came in). */
static enum MHD_Result answer(struct req *rq, struct MHD_Connection *conn, const char *method)
{
	struct error err;

	if (worker_http_route_parse(method, rq->path, &rq->route, &err) != ERR_OK)
		return reply_error(rq, conn, &err);
	if (!rq->route.method_allowed) {
		struct MHD_Response *resp;
		char msg[300];
		int n = snprintf(msg, sizeof(msg), "method '%.16s' is not allowed on '%.200s' (allowed: %s)\n",
				 method, rq->path, rq->route.allow);

		if (n < 0 || (size_t)n >= sizeof(msg))
			n = (int)sizeof(msg) - 1;
		resp = MHD_create_response_from_buffer((size_t)n, msg, MHD_RESPMEM_MUST_COPY);
		if (!resp)
			return MHD_NO;
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rq->route.allow);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
					"text/plain; charset=utf-8");
		return queue(conn, MHD_HTTP_METHOD_NOT_ALLOWED, resp);
	}
	return dispatch(rq, conn, method);
}

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
				     const char *value)
{
	struct worker_http_framing *f = cls;

	(void)kind;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		f->content_lengths++;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		if (f->transfer_encodings++ == 0)
			f->transfer_encoding = value;
	}
	return MHD_YES;
}

static enum error_code check_framing(struct MHD_Connection *conn, struct error *err)
{
	struct worker_http_framing f = { 0 };

	MHD_get_connection_values(conn, MHD_HEADER_KIND, count_framing, &f);
	return worker_http_check_framing(&f, err);
}

/*
 * microhttpd calls this once when the headers are in, once per piece of
 * body, and once more at the end. Answering only at the end keeps the
 * connection alive: a response queued before the request is complete makes
 * microhttpd close the connection after it.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size,
				  void **req_cls)
{
	struct req *rq = *req_cls;
	struct error err;

	(void)cls;
	(void)url;
	(void)version;
	if (!rq)
		return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	if (!rq->started) {
		rq->started = true;
		/* Before any of the body is read: an answer queued now makes
		 * microhttpd discard the rest and close the connection. */
		if (check_framing(conn, &err) != ERR_OK ||
		    authenticate(rq, conn, method, &err) != ERR_OK)
			return reply_error(rq, conn, &err);
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		size_t n = *upload_data_size;
		char *grown;

		*upload_data_size = 0;
		if (rq->body_too_large || rq->body_len + n > WORKER_HTTP_BODY_MAX) {
			rq->body_too_large = true;
			return MHD_YES;
		}
		grown = realloc(rq->body, rq->body_len + n + 1);
		if (!grown)
			return MHD_NO;
		memcpy(grown + rq->body_len, upload_data, n);
		rq->body = grown;
		rq->body_len += n;
		rq->body[rq->body_len] = '\0';
		return MHD_YES;
	}
	conn_enter(rq->h, conn, CONN_ANSWERING);
	return answer(rq, conn, method);
}

/* --- the probes' listener ------------------------------------------------ */

/* A request on probe_listen: answered as soon as its headers are in (a
 * body, which no probe sends, is discarded with the connection). */
static enum MHD_Result on_probe_request(void *cls, struct MHD_Connection *conn, const char *url,
					const char *method, const char *version,
					const char *upload_data, size_t *upload_data_size,
					void **req_cls)
{
	struct worker_http *h = cls;
	struct MHD_Response *resp;
	char msg[300];
	int n;

	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)req_cls;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		n = snprintf(msg, sizeof(msg),
			     "method '%.16s' is not allowed on the probe listener (allowed: GET, HEAD)\n",
			     method);
		resp = MHD_create_response_from_buffer((size_t)n, msg, MHD_RESPMEM_MUST_COPY);
		if (!resp)
			return MHD_NO;
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
		return queue(conn, MHD_HTTP_METHOD_NOT_ALLOWED, resp);
	}
	if (strcmp(url, "/healthz") == 0)
		return reply_text(conn, MHD_HTTP_OK, "ok");
	if (strcmp(url, "/readyz") == 0)
		return reply_readyz(h, conn);
	snprintf(msg, sizeof(msg),
		 "no such route '%.200s' on the probe listener: it serves /healthz and /readyz", url);
	return reply_text(conn, MHD_HTTP_NOT_FOUND, msg);
}

/* probe_listen's server: one event thread, since a probe's answer never
 * waits, and few connections. */
static void probe_stop(struct worker_http *h)
{
	if (!h->probe)
		return;
	MHD_stop_daemon(h->probe);
	h->probe = NULL;
	if (h->probe_unix_path[0])
		unlink(h->probe_unix_path);
}

static enum error_code probe_start(struct worker_http *h, unsigned tls_flag,
				   struct MHD_OptionItem *tls_opts, struct error *err)
{
	int fd = netaddr_listen(h->cfg.probe_listen, "probe_listen", h->probe_unix_path,
				sizeof(h->probe_unix_path), err);

	if (fd < 0)
		return err->code;
	h->probe = MHD_start_daemon(
		MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | tls_flag, 0, NULL, NULL,
		on_probe_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
		MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
		(unsigned)WORKER_HTTP_PROBE_CONNECTIONS, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
		(unsigned)WORKER_HTTP_PROBE_PER_ADDRESS, MHD_OPTION_CONNECTION_TIMEOUT,
		(unsigned)WORKER_HTTP_PROBE_TIMEOUT_S, MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_END);
	if (h->probe)
		return ERR_OK;
	close(fd);
	if (h->probe_unix_path[0])
		unlink(h->probe_unix_path);
	return error_set(err, ERR_UNAVAILABLE, "probe_listen '%s': the HTTP server did not start",
			 h->cfg.probe_listen);
}

enum error_code worker_http_start(const struct worker_http_config *cfg, struct worker_http **out,
				  struct error *err)
{
	struct worker_http *h;
	pthread_condattr_t ca;
	unsigned idle_s;
	unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION |
			 MHD_USE_ITC | MHD_USE_ERROR_LOG;
	struct MHD_OptionItem tls_opts[3] = {
		{ MHD_OPTION_END, 0, NULL },
		{ MHD_OPTION_END, 0, NULL },
		{ MHD_OPTION_END, 0, NULL },
	};

	*out = NULL;
	if (!cfg->fetcher || !cfg->preloader || !cfg->token)
		return error_set(err, ERR_INVALID, "http: a fetcher, a preloader and a token are required");
	if (tls_material_server(cfg->tls) && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
		return error_set(err, ERR_UNSUPPORTED,
				 "listen '%s': TLS is configured (tls.cert_file) but this libmicrohttpd was built without TLS support",
				 cfg->listen);
	h = calloc(1, sizeof(*h));
	if (!h)
		return error_set(err, ERR_NOMEM, "http: out of memory");
	h->cfg = *cfg;
	h->listen_fd = netaddr_listen(cfg->listen, "listen", h->unix_path, sizeof(h->unix_path), err);
	if (h->listen_fd < 0) {
		free(h);
		return err ? err->code : ERR_UNAVAILABLE;
	}
	if (!h->cfg.request_timeout_ms)
		h->cfg.request_timeout_ms = 10000;
	pthread_mutex_init(&h->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cv, &ca);
	pthread_condattr_destroy(&ca);
	idle_s = (unsigned)((cfg->idle_timeout_ms + 999) / 1000);
	if (tls_material_server(cfg->tls)) {
		/* The key and certificate are handed over as memory, read once at
		 * start (common/tls.h), so that nothing is read from the mounted
		 * Secret while serving. */
		tls_opts[0] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0, cfg->tls->key };
		tls_opts[1] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0,
						       cfg->tls->cert };
		flags |= MHD_USE_TLS;
	}
	h->mhd = MHD_start_daemon(
		flags,
		0, on_accept, h, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
		MHD_OPTION_LISTEN_SOCKET, h->listen_fd, MHD_OPTION_URI_LOG_CALLBACK,
		on_request_line, h, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
		MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections ? cfg->max_connections : 1024u,
		MHD_OPTION_CONNECTION_TIMEOUT, idle_s, MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_END);
	if (!h->mhd) {
		error_set(err, ERR_UNAVAILABLE, "listen '%s': the HTTP server did not start",
			  cfg->listen);
		goto fail;
	}
	if (cfg->probe_listen && *cfg->probe_listen &&
	    probe_start(h, flags & MHD_USE_TLS, tls_opts, err) != ERR_OK)
		goto fail;
	if (pthread_create(&h->watchdog, NULL, watchdog, h) != 0) {
		error_set(err, ERR_NOMEM, "listen '%s': cannot start the request watchdog",
			  cfg->listen);
		goto fail;
	}
	h->watchdog_running = true;
	*out = h;
	return ERR_OK;

fail:
	probe_stop(h);
	if (h->mhd)
		MHD_stop_daemon(h->mhd); /* closes the listening socket */
	else
		close(h->listen_fd);
	if (h->unix_path[0])
		unlink(h->unix_path);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	free(h);
	return err ? err->code : ERR_UNAVAILABLE;
}

void worker_http_stop(struct worker_http *h, uint64_t grace_ms)
{
	uint64_t deadline;
	MHD_socket fd;

	if (!h)
		return;
	fd = MHD_quiesce_daemon(h->mhd);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	if (h->unix_path[0])
		unlink(h->unix_path);
	deadline = retry_now_ms() + grace_ms;
	while (atomic_load(&h->active) > 0 && retry_now_ms() < deadline)
		retry_sleep_ms(10);
	if (atomic_load(&h->active) > 0) {
		log_warn("closing connections with requests still in progress",
			 LOG_U("requests", atomic_load(&h->active)), LOG_U("grace_ms", grace_ms));
		/* Their threads are joined below: do not let them wait for
		 * store fetches that may take the whole store deadline. */
		fetch_cancel(h->cfg.fetcher);
	}
	pthread_mutex_lock(&h->mu);
	h->stopping = true;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
	if (h->watchdog_running)
		pthread_join(h->watchdog, NULL);
	MHD_stop_daemon(h->mhd);
	/* Last: the probes are answered while requests drain. */
	probe_stop(h);
	for (unsigned i = 0; i < h->nsent; i++)
		sent_drop(h, &h->sent[i]);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

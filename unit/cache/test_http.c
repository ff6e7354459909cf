/*
 * test_http.c - the worker's request parsers, without a server: routes,
 * numbers, query parameters, Range headers, the JSON bodies of the
 * dataset and preload calls, and the headers that frame a request body.
 */
#include <stdlib.h>
#include <string.h>

#include "cache/http.h"
#include "unit/check_main.h"

static struct worker_http_route route(const char *method, const char *path, enum error_code want)
{
	struct worker_http_route r;
	struct error err;
	enum error_code rc = worker_http_route_parse(method, path, &r, &err);

	ck_assert_msg(rc == want, "%s %s: got %s (%s), want %s", method, path,
		      error_code_name(rc), rc ? err.msg : "", error_code_name(want));
	return r;
}

START_TEST(test_http_routes_known_paths)
{
	struct worker_http_route r;

	r = route("GET", "/v1/blocks/imagenet-1k/42", ERR_OK);
	ck_assert_int_eq(r.kind, WORKER_HTTP_BLOCK);
	ck_assert_str_eq(r.dataset, "imagenet-1k");
	ck_assert_uint_eq(r.number, 42);
	ck_assert(r.method_allowed && r.needs_token);

	r = route("GET", "/v1/blocks/ds/18446744073709551615", ERR_OK);
	ck_assert_uint_eq(r.number, UINT64_MAX);

	r = route("GET", "/v1/datasets", ERR_OK);
	ck_assert_int_eq(r.kind, WORKER_HTTP_DATASETS);
	r = route("PUT", "/v1/datasets/coco-2017.v2", ERR_OK);
	ck_assert_int_eq(r.kind, WORKER_HTTP_DATASET);
	ck_assert_str_eq(r.dataset, "coco-2017.v2");
	ck_assert(r.method_allowed);
	r = route("DELETE", "/v1/datasets/x", ERR_OK);
	ck_assert(r.method_allowed);

	r = route("POST", "/v1/preload/ds", ERR_OK);
	ck_assert_int_eq(r.kind, WORKER_HTTP_PRELOAD_START);
	ck_assert_str_eq(r.dataset, "ds");
	r = route("GET", "/v1/preload/17", ERR_OK);
	ck_assert_int_eq(r.kind, WORKER_HTTP_PRELOAD_STATUS);
	ck_assert_uint_eq(r.number, 17);
	r = route("POST", "/v1/prefetch/coco", ERR_OK);
	ck_assert_int_eq(r.kind, WORKER_HTTP_PREFETCH);
	ck_assert_str_eq(r.dataset, "coco");
	ck_assert(r.method_allowed && r.needs_token);
	r = route("GET", "/v1/prefetch/coco", ERR_OK);
	ck_assert(!r.method_allowed);
	ck_assert_str_eq(r.allow, "POST");

	r = route("GET", "/metrics", ERR_OK);
	ck_assert_int_eq(r.kind, WORKER_HTTP_METRICS);
	ck_assert(!r.needs_token);
	r = route("GET", "/healthz", ERR_OK);
	ck_assert_int_eq(r.kind, WORKER_HTTP_HEALTHZ);
	ck_assert(!r.needs_token);
	r = route("HEAD", "/healthz", ERR_OK);
	ck_assert(r.method_allowed);
	r = route("GET", "/readyz", ERR_OK);
	ck_assert_int_eq(r.kind, WORKER_HTTP_READYZ);
	ck_assert(!r.needs_token);
	r = route("HEAD", "/v1/datasets/x", ERR_OK);
	ck_assert(r.method_allowed);
}
END_TEST

START_TEST(test_http_wrong_method_is_routed_but_not_allowed)
{
	struct worker_http_route r;

	r = route("PUT", "/v1/blocks/ds/1", ERR_OK);
	ck_assert(!r.method_allowed);
	ck_assert_str_eq(r.allow, "GET");
	r = route("POST", "/v1/datasets/ds", ERR_OK);
	ck_assert(!r.method_allowed);
	ck_assert_str_eq(r.allow, "GET, PUT, DELETE");
	r = route("DELETE", "/v1/preload/3", ERR_OK);
	ck_assert(!r.method_allowed);
	r = route("POST", "/metrics", ERR_OK);
	ck_assert(!r.method_allowed);
	/* A method name that only contains an allowed one is not it. */
	r = route("GETX", "/healthz", ERR_OK);
	ck_assert(!r.method_allowed);
}
END_TEST

/*
 * The block contract's two sides meet here: what the mount writes
 * (block_url_path, block_url_query) the router and the query parser
 * read back, for the longest dataset name and a key that needs escapes;
 * one byte more is refused with the rule's own message.
 */
START_TEST(test_http_block_url_round_trips_the_longest_name)
{
	char name[BLOCK_DATASET_MAX + 2], path[BLOCK_URL_PATH_MAX + 8];
	struct worker_http_block_query q;
	struct worker_http_route r;
	struct error err;
	char *query = NULL;

	memset(name, 'a', BLOCK_DATASET_MAX);
	name[BLOCK_DATASET_MAX] = '\0';
	ck_assert_int_lt(block_url_path(name, UINT64_MAX, path, sizeof(path)), BLOCK_URL_PATH_MAX);
	r = route("GET", path, ERR_OK);
	ck_assert_int_eq(r.kind, WORKER_HTTP_BLOCK);
	ck_assert_str_eq(r.dataset, name);
	ck_assert_uint_eq(r.number, UINT64_MAX);

	query = block_url_query("train/a b&c=d%.rec", "\"e1\"", 7, true);
	ck_assert_ptr_nonnull(query);
	ck_assert_int_eq(worker_http_parse_block_query(query, &q, &err), ERR_OK);
	ck_assert_str_eq(q.key, "train/a b&c=d%.rec");
	ck_assert_str_eq(q.etag, "\"e1\"");
	ck_assert_uint_eq(q.readahead, 7);
	ck_assert(q.verify);
	free(query);

	strcat(name, "a");
	block_url_path(name, 1, path, sizeof(path));
	ck_assert_int_eq(worker_http_route_parse("GET", path, &r, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "longer than 253"));
}
END_TEST

START_TEST(test_http_unknown_paths_are_not_found)
{
	static const char *const paths[] = {
		"/", "/v1", "/v1/", "/v2/blocks/ds/1", "/v1/block/ds/1", "/v1/blocks/ds/1/extra",
		"/metrics/", "/healthz/x", "/v1/datasets/a/b", "/v1/preload", "//v1/datasets",
		"http://h/v1/datasets", "",
	};
	struct error err;

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		route("GET", paths[i], ERR_NOT_FOUND);
		worker_http_route_parse("GET", paths[i], &(struct worker_http_route){ 0 }, &err);
		ck_assert_ptr_nonnull(strstr(err.msg, "no such route"));
	}
}
END_TEST

START_TEST(test_http_malformed_parts_say_what_is_wrong)
{
	static const struct {
		const char *method, *path, *expect;
	} cases[] = {
		{ "GET", "/v1/blocks/ds/abc", "block index 'abc' is not a number" },
		{ "GET", "/v1/blocks/ds/-1", "block index '-1' is not a number" },
		{ "GET", "/v1/blocks/ds/+1", "block index '+1' is not a number" },
		{ "GET", "/v1/blocks/ds/18446744073709551616", "is not a number" },
		{ "GET", "/v1/blocks/ds/", "block index '' is not a number" },
		{ "GET", "/v1/blocks/ds", "missing block index" },
		{ "GET", "/v1/blocks/a%20b/1", "dataset name 'a%20b'" },
		{ "GET", "/v1/blocks/.hidden/1", "each '.'-separated label" },
		{ "GET", "/v1/blocks/Coco_2017/1", "only lowercase letters" },
		{ "GET", "/v1/blocks//1", "dataset name '': empty" },
		{ "PUT", "/v1/datasets/", "dataset name '': empty" },
		{ "PUT", "/v1/datasets/a..b?", "dataset name 'a..b?'" },
		{ "GET", "/v1/preload/x1", "preload id 'x1' is not a number" },
		{ "POST", "/v1/preload/bad name", "dataset name 'bad name'" },
		{ "POST", "/v1/prefetch/Bad", "only lowercase letters" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct worker_http_route r;
		struct error err;

		ck_assert_msg(worker_http_route_parse(cases[i].method, cases[i].path, &r, &err) ==
				      ERR_INVALID,
			      "%s accepted", cases[i].path);
		ck_assert_msg(strstr(err.msg, cases[i].expect), "%s: '%s' lacks '%s'", cases[i].path,
			      err.msg, cases[i].expect);
	}
}
END_TEST

START_TEST(test_http_query_decodes_and_refuses_bad_escapes)
{
	char out[64];
	bool found;
	struct error err;

	ck_assert_int_eq(worker_http_query_get("key=train%2Fa%20b.rec&etag=x", "key", out,
					       sizeof(out), &found, &err), ERR_OK);
	ck_assert(found);
	ck_assert_str_eq(out, "train/a b.rec");
	ck_assert_int_eq(worker_http_query_get("a=1&key=x+y&b", "key", out, sizeof(out), &found,
					       &err), ERR_OK);
	ck_assert_str_eq(out, "x y");
	ck_assert_int_eq(worker_http_query_get("keys=1&akey=2", "key", out, sizeof(out), &found,
					       &err), ERR_OK);
	ck_assert(!found);
	ck_assert_int_eq(worker_http_query_get("", "key", out, sizeof(out), &found, &err), ERR_OK);
	ck_assert(!found);
	ck_assert_int_eq(worker_http_query_get("key", "key", out, sizeof(out), &found, &err), ERR_OK);
	ck_assert(found);
	ck_assert_str_eq(out, "");
	ck_assert_int_eq(worker_http_query_get("key=%2", "key", out, sizeof(out), &found, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "malformed %-escape"));
	ck_assert_int_eq(worker_http_query_get("key=%zz", "key", out, sizeof(out), &found, &err),
			 ERR_INVALID);
	ck_assert_int_eq(worker_http_query_get("key=a%00b", "key", out, sizeof(out), &found, &err),
			 ERR_INVALID);
	ck_assert_int_eq(worker_http_query_get("key=a&key=b", "key", out, sizeof(out), &found,
					       &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "given twice"));
	ck_assert_int_eq(worker_http_query_get("key=0123456789", "key", out, 8, &found, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "longer than 7 bytes"));
}
END_TEST

START_TEST(test_http_block_query_requires_key_and_etag)
{
	struct worker_http_block_query q;
	struct error err;

	ck_assert_int_eq(worker_http_parse_block_query("key=a%2Fb&etag=%22e1%22&readahead=4", &q,
						       &err), ERR_OK);
	ck_assert_str_eq(q.key, "a/b");
	ck_assert_str_eq(q.etag, "\"e1\"");
	ck_assert_uint_eq(q.readahead, 4);
	ck_assert_int_eq(worker_http_parse_block_query("etag=e", &q, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "missing query parameter 'key'"));
	ck_assert_int_eq(worker_http_parse_block_query("key=a&etag=", &q, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "missing query parameter 'etag'"));
	ck_assert_int_eq(worker_http_parse_block_query("key=a&etag=e&readahead=x", &q, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "readahead 'x' is not a number"));
	ck_assert_int_eq(worker_http_parse_block_query("key=a&etag=e&readahead=257", &q, &err),
			 ERR_INVALID);
	ck_assert(!q.verify);
	ck_assert_int_eq(worker_http_parse_block_query("key=a&etag=e&verify=1", &q, &err), ERR_OK);
	ck_assert(q.verify);
	ck_assert_int_eq(worker_http_parse_block_query("key=a&etag=e&verify=yes", &q, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "verify 'yes' is not 0 or 1"));
	/* cache: a cache directory id, or absent */
	ck_assert_str_eq(q.cache_id, "");
	ck_assert_int_eq(worker_http_parse_block_query(
				 "key=a&etag=e&cache=0123456789abcdef0123456789abcdef", &q, &err),
			 ERR_OK);
	ck_assert_str_eq(q.cache_id, "0123456789abcdef0123456789abcdef");
	ck_assert_int_eq(worker_http_parse_block_query("key=a&etag=e&cache=../x", &q, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "cache '../x' is not a cache directory id"));
	ck_assert_int_eq(worker_http_parse_block_query(
				 "key=a&etag=e&cache=0123456789abcdef0123456789abcdef0", &q, &err),
			 ERR_INVALID);
	/* size: the object's, optional, 1 or more */
	ck_assert_uint_eq(q.size, 0);
	ck_assert_int_eq(worker_http_parse_block_query("key=a&etag=e&size=18446744073709551615",
						       &q, &err), ERR_OK);
	ck_assert_uint_eq(q.size, UINT64_MAX);
	ck_assert_int_eq(worker_http_parse_block_query("key=a&etag=e&size=0", &q, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "size 0"));
	ck_assert_int_eq(worker_http_parse_block_query("key=a&etag=e&size=-1", &q, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "size '-1' is not a number"));
	/* bs: the client's block size, optional, 1 or more */
	ck_assert_uint_eq(q.block_size, 0);
	ck_assert_int_eq(worker_http_parse_block_query("key=a&etag=e&bs=4194304", &q, &err),
			 ERR_OK);
	ck_assert_uint_eq(q.block_size, 4194304);
	ck_assert_int_eq(worker_http_parse_block_query("key=a&etag=e&bs=0", &q, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "bs 0"));
}
END_TEST

/*
 * The checksum header: what the worker writes for a range the client
 * parses back for the same range, chunk for chunk; a value for another
 * range, chunk size or with a bad digit is refused, naming the header.
 */
/* Parses and resolves h against a block of length; returns the code. */
static enum error_code range(const char *h, uint64_t length, uint64_t *off, uint64_t *len,
			     struct error *err)
{
	struct worker_http_range r;
	enum error_code rc = worker_http_range_parse(h, &r, err);

	if (rc != ERR_OK)
		return rc;
	return worker_http_range_resolve(&r, h, length, off, len, err);
}

START_TEST(test_http_range_forms_resolve_against_the_block)
{
	static const struct {
		const char *h;
		uint64_t length, off, len;
	} ok[] = {
		{ NULL, 100, 0, 100 },         { "", 100, 0, 100 },
		{ "bytes=0-99", 100, 0, 100 }, { "bytes=10-19", 100, 10, 10 },
		{ "bytes=10-10", 100, 10, 1 }, { "bytes=90-500", 100, 90, 10 },
		{ "bytes=90-", 100, 90, 10 },  { "bytes=-10", 100, 90, 10 },
		{ "bytes=-1000", 100, 0, 100 }, { "Bytes=0-0", 100, 0, 1 },
		{ NULL, 0, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint64_t off = 99, len = 99;
		struct error err;

		ck_assert_msg(range(ok[i].h, ok[i].length, &off, &len, &err) == ERR_OK, "%s: %s",
			      ok[i].h ? ok[i].h : "(none)", err.msg);
		ck_assert_msg(off == ok[i].off && len == ok[i].len, "%s: off %llu len %llu",
			      ok[i].h ? ok[i].h : "(none)", (unsigned long long)off,
			      (unsigned long long)len);
	}
}
END_TEST

START_TEST(test_http_range_past_the_end_is_out_of_range)
{
	static const char *const past[] = { "bytes=100-", "bytes=100-200", "bytes=5000-6000",
					    "bytes=-0" };
	uint64_t off, len;
	struct error err;

	for (size_t i = 0; i < sizeof(past) / sizeof(past[0]); i++) {
		ck_assert_msg(range(past[i], 100, &off, &len, &err) == ERR_RANGE, "%s", past[i]);
		ck_assert_ptr_nonnull(strstr(err.msg, "past the end of the block (100 bytes)"));
	}
	ck_assert_int_eq(range("bytes=0-0", 0, &off, &len, &err), ERR_RANGE);
	ck_assert_int_eq(range("bytes=-5", 0, &off, &len, &err), ERR_RANGE);
}
END_TEST

START_TEST(test_http_malformed_range_is_invalid)
{
	static const char *const bad[] = {
		"bytes=9-3", "bytes=", "bytes=-", "bytes=a-b", "bytes=1-2,4-5", "bits=0-1",
		"bytes 0-1", "bytes=0-1 ", "bytes= 0-1", "bytes=+1-2", "bytes=1--2",
		"bytes=99999999999999999999-", "bytes=--1",
	};
	struct worker_http_range r;
	struct error err;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(worker_http_range_parse(bad[i], &r, &err) == ERR_INVALID,
			      "'%s' accepted", bad[i]);
		ck_assert_msg(strstr(err.msg, "is malformed"), "%s: %s", bad[i], err.msg);
	}
	worker_http_range_parse("bytes=9-3", &r, &err);
	ck_assert_ptr_nonnull(strstr(err.msg, "range 'bytes=9-3' is malformed"));
	worker_http_range_parse("bytes=1-2,4-5", &r, &err);
	ck_assert_ptr_nonnull(strstr(err.msg, "only one range"));
}
END_TEST

START_TEST(test_http_dataset_body_full_and_minimal)
{
	static const char full[] = "{\"source\":\"s3://bucket/train/\",\"endpoint\":\"http://127.0.0.1:7070\","
				   "\"region\":\"eu-west-1\",\"credentials_file\":\"/etc/granary/creds\","
				   "\"block_size\":1048576,\"policy\":\"lru\",\"pin\":true}";
	static const char minimal[] =
		"{\"source\":\"s3://b/\",\"block_size\":\"4MiB\",\"policy\":\"scan-resistant\"}";
	struct worker_http_dataset_body b;
	struct error err;

	ck_assert_int_eq(worker_http_parse_dataset_body(full, strlen(full), &b, &err), ERR_OK);
	ck_assert_str_eq(b.source, "s3://bucket/train/");
	ck_assert(b.has_endpoint && b.has_region && b.has_credentials_file);
	ck_assert_str_eq(b.endpoint, "http://127.0.0.1:7070");
	ck_assert_str_eq(b.region, "eu-west-1");
	ck_assert_str_eq(b.credentials_file, "/etc/granary/creds");
	ck_assert(b.has_block_size && b.block_size == 1048576);
	ck_assert(b.has_policy && b.policy == BLOCKSTORE_LRU);
	ck_assert(b.has_pin && b.pin);

	ck_assert_int_eq(worker_http_parse_dataset_body(minimal, strlen(minimal), &b, &err), ERR_OK);
	ck_assert_uint_eq(b.block_size, 4u << 20);
	ck_assert_int_eq(b.policy, BLOCKSTORE_SCAN_RESISTANT);
	ck_assert(!b.has_endpoint && !b.has_pin);

	/* Empty is left out, as in meta's specs: the worker's own endpoint
	 * and region, never an empty endpoint's AWS default. */
	static const char empty[] = "{\"source\":\"s3://b/\",\"endpoint\":\"\",\"region\":\"\"}";

	ck_assert_int_eq(worker_http_parse_dataset_body(empty, strlen(empty), &b, &err), ERR_OK);
	ck_assert(!b.has_endpoint && !b.has_region);
}
END_TEST

START_TEST(test_http_dataset_body_refuses_naming_the_field)
{
	static const struct {
		const char *body, *expect;
	} bad[] = {
		{ "", "malformed JSON" },
		{ "{", "malformed JSON at line 1" },
		{ "[]", "must be a JSON object" },
		{ "{}", "field 'source' is required" },
		{ "{\"source\":\"\"}", "field 'source' is required" },
		{ "{\"source\":3}", "field 'source' must be a string" },
		{ "{\"source\":\"s3://b/\",\"pin\":\"yes\"}", "field 'pin' must be true or false" },
		{ "{\"source\":\"s3://b/\",\"policy\":\"fifo\"}", "field 'policy'" },
		{ "{\"source\":\"s3://b/\",\"block_size\":-1}", "field 'block_size'" },
		{ "{\"source\":\"s3://b/\",\"block_size\":\"big\"}", "field 'block_size': 'big'" },
		{ "{\"source\":\"s3://b/\",\"colour\":1}", "unknown field 'colour'" },
		{ "{\"source\":\"s3://a/\",\"source\":\"s3://b/\"}", "malformed JSON" },
		{ "{\"source\":\"s3://a/\\u0000x\"}", "NUL" },
		/* A region goes into every store request's headers. */
		{ "{\"source\":\"s3://b/\",\"region\":\"eu\\r\\nX-Evil: 1\"}",
		  "field 'region': region: byte 3 (0x0d)" },
		{ "{\"source\":\"s3://b/\",\"region\":\"eu west\"}", "field 'region': region 'eu west'" },
	};
	struct worker_http_dataset_body b;
	struct error err;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(worker_http_parse_dataset_body(bad[i].body, strlen(bad[i].body), &b,
							     &err) == ERR_INVALID,
			      "'%s' accepted", bad[i].body);
		ck_assert_msg(strstr(err.msg, bad[i].expect), "'%s': '%s' lacks '%s'", bad[i].body,
			      err.msg, bad[i].expect);
	}
}
END_TEST

START_TEST(test_http_preload_body_lists_objects_or_means_all)
{
	char **objs = NULL;
	size_t n = 99;
	struct error err;
	const char *two = "{\"objects\":[\"a/1.rec\",\"b.rec\"]}";

	ck_assert_int_eq(worker_http_parse_preload_body(two, strlen(two), &objs, &n, &err), ERR_OK);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(objs[0], "a/1.rec");
	ck_assert_str_eq(objs[1], "b.rec");
	worker_http_free_objects(objs, n);

	ck_assert_int_eq(worker_http_parse_preload_body("{}", 2, &objs, &n, &err), ERR_OK);
	ck_assert_ptr_null(objs);
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(worker_http_parse_preload_body(NULL, 0, &objs, &n, &err), ERR_OK);
	ck_assert_ptr_null(objs);

	ck_assert_int_eq(worker_http_parse_preload_body("{\"objects\":\"a\"}", 15, &objs, &n, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "must be an array"));
	ck_assert_int_eq(worker_http_parse_preload_body("{\"objects\":[\"a\",1]}", 19, &objs, &n,
							&err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "item 1 must be a string"));
	ck_assert_int_eq(worker_http_parse_preload_body("{\"all\":true}", 12, &objs, &n, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "unknown field 'all'"));
}
END_TEST

START_TEST(test_http_prefetch_body_names_objects_with_etag_and_size)
{
	static const struct {
		const char *body, *expect;
	} bad[] = {
		{ "", "malformed JSON" },
		{ "[]", "must be a JSON object" },
		{ "{}", "array of 1 to 64 objects" },
		{ "{\"objects\":[]}", "array of 1 to 64 objects" },
		{ "{\"objects\":[\"a\"]}", "item 0 must be an object" },
		{ "{\"objects\":[{\"key\":\"a\",\"etag\":\"e\"}]}", "item 0 has no size" },
		{ "{\"objects\":[{\"key\":\"a\",\"size\":1},{\"key\":\"b\",\"etag\":\"\",\"size\":1}]}",
		  "item 0 has no etag" },
		{ "{\"objects\":[{\"etag\":\"e\",\"size\":1}]}", "item 0 has no key" },
		{ "{\"objects\":[{\"key\":\"a\",\"etag\":\"e\",\"size\":0}]}",
		  "'objects[0].size' must be a whole number of bytes, 1 or more" },
		{ "{\"objects\":[{\"key\":\"a\",\"etag\":\"e\",\"size\":\"9\"}]}",
		  "'objects[0].size' must be a whole number" },
		{ "{\"objects\":[{\"key\":7,\"etag\":\"e\",\"size\":1}]}",
		  "'objects[0].key' must be a string" },
		{ "{\"objects\":[{\"key\":\"a\",\"etag\":\"e\",\"size\":1,\"index\":2}]}",
		  "unknown field 'objects[0].index'" },
		{ "{\"objects\":[],\"all\":true}", "unknown field 'all'" },
	};
	const char *two = "{\"objects\":[{\"key\":\"train/a \\\"1\\\".jpg\",\"etag\":\"\\\"x\\\"\","
			  "\"size\":110592},{\"size\":1,\"etag\":\"y\",\"key\":\"b\"}]}";
	struct worker_http_hint *hints = NULL;
	size_t n = 99;
	struct error err;
	char many[64 * 48 + 64];
	size_t len;

	ck_assert_int_eq(worker_http_parse_prefetch_body(two, strlen(two), &hints, &n, &err),
			 ERR_OK);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(hints[0].key, "train/a \"1\".jpg");
	ck_assert_str_eq(hints[0].etag, "\"x\"");
	ck_assert_uint_eq(hints[0].size, 110592);
	ck_assert_str_eq(hints[1].key, "b");
	ck_assert_uint_eq(hints[1].size, 1);
	free(hints);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		hints = NULL;
		ck_assert_msg(worker_http_parse_prefetch_body(bad[i].body, strlen(bad[i].body), &hints,
							      &n, &err) == ERR_INVALID,
			      "'%s' accepted", bad[i].body);
		ck_assert_ptr_null(hints);
		ck_assert_msg(strstr(err.msg, bad[i].expect), "'%s': '%s' lacks '%s'", bad[i].body,
			      err.msg, bad[i].expect);
	}

	/* 64 objects are taken, 65 refused */
	for (int want = 64; want <= 65; want++) {
		len = (size_t)snprintf(many, sizeof(many), "{\"objects\":[");
		for (int i = 0; i < want; i++)
			len += (size_t)snprintf(many + len, sizeof(many) - len,
						"%s{\"key\":\"f%d\",\"etag\":\"e\",\"size\":9}",
						i ? "," : "", i);
		len += (size_t)snprintf(many + len, sizeof(many) - len, "]}");
		ck_assert_uint_lt(len, sizeof(many));
		hints = NULL;
		ck_assert_int_eq(worker_http_parse_prefetch_body(many, len, &hints, &n, &err),
				 want == 64 ? ERR_OK : ERR_INVALID);
		if (want == 64) {
			ck_assert_uint_eq(n, 64);
			ck_assert_str_eq(hints[63].key, "f63");
		} else {
			ck_assert_ptr_nonnull(strstr(err.msg, "names 65 objects, at most 64"));
		}
		free(hints);
	}
}
END_TEST

START_TEST(test_http_framing_refuses_two_lengths)
{
	static const struct {
		struct worker_http_framing f;
		enum error_code want;
		const char *expect;
	} cases[] = {
		{ { 0, 0, NULL }, ERR_OK, NULL },
		{ { 1, 0, NULL }, ERR_OK, NULL },
		{ { 0, 1, "chunked" }, ERR_OK, NULL },
		{ { 0, 1, " Chunked " }, ERR_OK, NULL },
		{ { 1, 1, "chunked" }, ERR_INVALID,
		  "request has both Content-Length and Transfer-Encoding" },
		{ { 2, 0, NULL }, ERR_INVALID, "request has 2 Content-Length headers" },
		{ { 0, 2, "chunked" }, ERR_INVALID, "request has 2 Transfer-Encoding headers" },
		{ { 0, 1, "xchunked" }, ERR_UNSUPPORTED,
		  "transfer coding 'xchunked' is not supported (only 'chunked')" },
		{ { 0, 1, "gzip, chunked" }, ERR_UNSUPPORTED, "transfer coding 'gzip, chunked'" },
		{ { 0, 1, "" }, ERR_UNSUPPORTED, "transfer coding ''" },
	};
	struct error err;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum error_code rc = worker_http_check_framing(&cases[i].f, &err);

		ck_assert_msg(rc == cases[i].want, "case %zu: got %s (%s)", i, error_code_name(rc),
			      rc ? err.msg : "");
		if (cases[i].expect)
			ck_assert_msg(strstr(err.msg, cases[i].expect), "case %zu: '%s' lacks '%s'", i,
				      err.msg, cases[i].expect);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("http");
	TCase *tc = tcase_create("parsers");

	tcase_add_test(tc, test_http_routes_known_paths);
	tcase_add_test(tc, test_http_wrong_method_is_routed_but_not_allowed);
	tcase_add_test(tc, test_http_block_url_round_trips_the_longest_name);
	tcase_add_test(tc, test_http_unknown_paths_are_not_found);
	tcase_add_test(tc, test_http_malformed_parts_say_what_is_wrong);
	tcase_add_test(tc, test_http_query_decodes_and_refuses_bad_escapes);
	tcase_add_test(tc, test_http_block_query_requires_key_and_etag);
	tcase_add_test(tc, test_http_range_forms_resolve_against_the_block);
	tcase_add_test(tc, test_http_range_past_the_end_is_out_of_range);
	tcase_add_test(tc, test_http_malformed_range_is_invalid);
	tcase_add_test(tc, test_http_dataset_body_full_and_minimal);
	tcase_add_test(tc, test_http_dataset_body_refuses_naming_the_field);
	tcase_add_test(tc, test_http_preload_body_lists_objects_or_means_all);
	tcase_add_test(tc, test_http_prefetch_body_names_objects_with_etag_and_size);
	tcase_add_test(tc, test_http_framing_refuses_two_lengths);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}

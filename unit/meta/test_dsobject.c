/*
 * test_dsobject.c - the Dataset resource read into C: the fields the
 * controller uses, the refusals of what the schema should have stopped,
 * the registry name and spec, a Secret turned into a credentials file, and
 * the sizes status prints.
 */
#include <jansson.h>
#include <string.h>

#include "meta/dsobject.h"
#include "unit/check_main.h"

static json_t *object(const char *spec)
{
	char text[2048];
	json_error_t jerr;
	json_t *o;

	snprintf(text, sizeof(text),
		 "{\"metadata\": {\"namespace\": \"team-a\", \"name\": \"imagenet\", \"uid\": \"u1\","
		 " \"resourceVersion\": \"42\", \"generation\": 3, \"finalizers\": [\"other\", \"granary.io/dataset\"]},"
		 " \"spec\": %s, \"status\": {\"phase\": \"Ready\", \"refreshed\": \"r1\","
		 " \"observedGeneration\": 2, \"snapshotGeneration\": 5}}",
		 spec);
	o = json_loads(text, 0, &jerr);
	ck_assert_msg(o != NULL, "%s", jerr.text);
	return o;
}

START_TEST(test_dsobject_parse_reads_every_field)
{
	json_t *o = object("{\"source\": \"s3://bucket/train/\", \"endpoint\": \"http://s3:9000\","
			   " \"region\": \"eu-1\", \"secretRef\": {\"name\": \"creds\"},"
			   " \"blockSize\": \"8Mi\", \"cachePolicy\": \"lru\", \"pin\": true,"
			   " \"preload\": true, \"preloadPrefixes\": [\"train/\", \"val/a\"],"
			   " \"refresh\": \"r2\"}");
	struct dsobject d;
	struct error err;

	ck_assert_int_eq(dsobject_parse(o, &d, &err), ERR_OK);
	ck_assert_str_eq(d.ns, "team-a");
	ck_assert_str_eq(d.name, "imagenet");
	ck_assert_str_eq(d.resource_version, "42");
	ck_assert_int_eq(d.generation, 3);
	ck_assert(d.has_finalizer);
	ck_assert(!d.deleting);
	ck_assert_str_eq(d.source, "s3://bucket/train/");
	ck_assert_str_eq(d.endpoint, "http://s3:9000");
	ck_assert_str_eq(d.region, "eu-1");
	ck_assert_str_eq(d.secret, "creds");
	ck_assert_uint_eq(d.block_size, 8u << 20);
	ck_assert_int_eq(d.cache_policy, GRANARY__V1__CACHE_POLICY__CACHE_POLICY_LRU);
	ck_assert(d.pin && d.preload);
	ck_assert_uint_eq(d.n_preload_prefixes, 2);
	ck_assert_str_eq(d.preload_prefixes[0], "train/");
	ck_assert_str_eq(d.preload_prefixes[1], "val/a");
	ck_assert_str_eq(d.refresh, "r2");
	ck_assert_str_eq(d.refreshed, "r1");
	ck_assert_str_eq(d.phase, "Ready");
	ck_assert_int_eq(d.observed, 2);
	ck_assert_uint_eq(d.snapshot, 5);
	json_decref(o);
}
END_TEST

START_TEST(test_dsobject_parse_defaults_and_deletion)
{
	json_t *o = object("{\"source\": \"s3://bucket/\"}");
	struct dsobject d;
	struct error err;

	json_object_set_new(json_object_get(o, "metadata"), "deletionTimestamp",
			    json_string("2026-12-03T00:00:00Z"));
	json_object_set_new(json_object_get(o, "metadata"), "finalizers", json_array());
	ck_assert_int_eq(dsobject_parse(o, &d, &err), ERR_OK);
	ck_assert(d.deleting);
	ck_assert(!d.has_finalizer);
	ck_assert_uint_eq(d.block_size, 0);
	ck_assert_int_eq(d.cache_policy, GRANARY__V1__CACHE_POLICY__CACHE_POLICY_UNSPECIFIED);
	ck_assert_str_eq(d.secret, "");
	ck_assert_str_eq(d.refresh, "");
	json_decref(o);
}
END_TEST

START_TEST(test_dsobject_parse_refuses_what_the_schema_stops)
{
	static const char *const bad[][2] = {
		{ "{}", "spec.source" },
		{ "{\"source\": \"s3://b/\", \"blockSize\": \"3Mi\"}", "spec.blockSize" },
		{ "{\"source\": \"s3://b/\", \"blockSize\": \"128Mi\"}", "spec.blockSize" },
		{ "{\"source\": \"s3://b/\", \"blockSize\": \"4MiB\"}", "spec.blockSize" },
		{ "{\"source\": \"s3://b/\", \"cachePolicy\": \"fifo\"}", "spec.cachePolicy" },
		{ "{\"source\": \"s3://b/\", \"preloadPrefixes\": [1]}", "spec.preloadPrefixes" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *o = object(bad[i][0]);
		struct dsobject d;
		struct error err;

		ck_assert_int_eq(dsobject_parse(o, &d, &err), ERR_INVALID);
		ck_assert_msg(strstr(err.msg, bad[i][1]) != NULL, "%s: %s", bad[i][0], err.msg);
		json_decref(o);
	}
}
END_TEST

START_TEST(test_dsobject_name_and_spec)
{
	json_t *o = object("{\"source\": \"s3://bucket/train/\", \"blockSize\": \"64Ki\","
			   " \"cachePolicy\": \"scan-resistant\"}");
	Granary__V1__DatasetSpec spec;
	Granary__V1__DatasetOptions opts;
	char name[DSOBJECT_NAME_MAX + 1], small[8];
	struct dsobject d;
	struct error err;

	ck_assert_int_eq(dsobject_parse(o, &d, &err), ERR_OK);
	ck_assert_int_eq(dsobject_dataset_name(&d, "granary-system", name, sizeof(name), &err),
			 ERR_OK);
	ck_assert_str_eq(name, "team-a.imagenet");
	ck_assert_int_eq(dsobject_dataset_name(&d, NULL, small, sizeof(small), &err), ERR_INVALID);
	dsobject_spec(&d, name, "/creds/x", &spec, &opts);
	ck_assert_str_eq(spec.name, "team-a.imagenet");
	ck_assert_str_eq(spec.source_uri, "s3://bucket/train/");
	ck_assert_str_eq(spec.credentials_ref, "/creds/x");
	ck_assert_uint_eq(spec.options->block_size, 64u << 10);
	ck_assert_int_eq(spec.options->cache_policy,
			 GRANARY__V1__CACHE_POLICY__CACHE_POLICY_SCAN_RESISTANT);
	/* A claim's mirror is the volume's own dataset, only in the release
	 * namespace and only with the label naming itself. */
	d.volume = "imagenet";
	ck_assert(!dsobject_is_mirror(&d, "granary-system"));
	d.ns = "granary-system";
	ck_assert(dsobject_is_mirror(&d, "granary-system"));
	ck_assert_int_eq(dsobject_dataset_name(&d, "granary-system", name, sizeof(name), &err),
			 ERR_OK);
	ck_assert_str_eq(name, "imagenet");
	d.volume = "other";
	ck_assert(!dsobject_is_mirror(&d, "granary-system"));
	json_decref(o);
}
END_TEST

static json_t *secret(const char *id, const char *key, const char *token)
{
	json_t *data = json_object();

	if (id)
		json_object_set_new(data, "accessKeyID", json_string(id));
	if (key)
		json_object_set_new(data, "secretAccessKey", json_string(key));
	if (token)
		json_object_set_new(data, "sessionToken", json_string(token));
	return json_pack("{s:o}", "data", data);
}

START_TEST(test_dsobject_credentials_from_a_secret)
{
	/* base64 of "AKID", "s3cr3t/+=", "tok" */
	json_t *s = secret("QUtJRA==", "czNjcjN0Lys9", "dG9r");
	char *text = NULL;
	size_t len = 0;
	struct error err;

	ck_assert_int_eq(dsobject_credentials(s, &text, &len, &err), ERR_OK);
	ck_assert_str_eq(text, "[default]\naws_access_key_id = AKID\naws_secret_access_key = s3cr3t/+=\n"
			       "aws_session_token = tok\n");
	ck_assert_uint_eq(len, strlen(text));
	free(text);
	json_decref(s);
}
END_TEST

START_TEST(test_dsobject_credentials_refusals_name_the_key_not_the_value)
{
	struct {
		json_t *secret;
		const char *names;
	} cases[] = {
		{ secret(NULL, "czNjcjN0", NULL), "accessKeyID" },
		{ secret("QUtJRA==", NULL, NULL), "secretAccessKey" },
		{ secret("QUtJRA=", "czNjcjN0", NULL), "accessKeyID" },          /* not base64 */
		{ secret("QUtJRA==", "czNj\ncjN0", NULL), "secretAccessKey" },   /* not base64 */
		{ secret("QSBC", "czNjcjN0", NULL), "accessKeyID" },             /* "A B" */
		{ secret("QUtJRA==", "czNjcjN0", "YQpi"), "sessionToken" },      /* "a\nb" */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *text = NULL;
		size_t len = 0;
		struct error err;

		ck_assert_int_eq(dsobject_credentials(cases[i].secret, &text, &len, &err), ERR_INVALID);
		ck_assert(text == NULL);
		ck_assert_msg(strstr(err.msg, cases[i].names) != NULL, "%zu: %s", i, err.msg);
		ck_assert(strstr(err.msg, "s3cr3t") == NULL);
		json_decref(cases[i].secret);
	}
}
END_TEST

START_TEST(test_dsobject_sizes)
{
	char b[32];

	dsobject_size(7, b, sizeof(b));
	ck_assert_str_eq(b, "7B");
	dsobject_size(1536, b, sizeof(b));
	ck_assert_str_eq(b, "1.5KiB");
	dsobject_size(300ull << 20, b, sizeof(b));
	ck_assert_str_eq(b, "300MiB");
	dsobject_size(3ull << 40, b, sizeof(b));
	ck_assert_str_eq(b, "3.0TiB");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dsobject");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_dsobject_parse_reads_every_field);
	tcase_add_test(tc, test_dsobject_parse_defaults_and_deletion);
	tcase_add_test(tc, test_dsobject_parse_refuses_what_the_schema_stops);
	tcase_add_test(tc, test_dsobject_name_and_spec);
	tcase_add_test(tc, test_dsobject_credentials_from_a_secret);
	tcase_add_test(tc, test_dsobject_credentials_refusals_name_the_key_not_the_value);
	tcase_add_test(tc, test_dsobject_sizes);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}

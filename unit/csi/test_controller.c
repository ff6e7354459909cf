/*
 * test_controller.c - the controller's pure parts: StorageClass parameters
 * and their errors (naming the parameter), secrets (naming the key, never
 * the value), the credentials file (mode 0600, exact content), volume id
 * derivation, the access-mode rule, and the volume context (what
 * CreateVolume returns reads back to the same registration, by the same
 * rules), a refused CreateVolume leaving an existing volume's
 * credentials file alone, and a DeleteVolume whose Dataset stays failing
 * (against a meta in this process).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "csi/controller.h"
#include "meta/service.h"
#include "unit/check_main.h"

#define KV(k, v) { (k), (v) }
#define N(a) (sizeof(a) / sizeof((a)[0]))

START_TEST(test_controller_params_parse_every_key)
{
	static const struct controller_kv kv[] = {
		KV("source", "s3://granary-e2e/imagenet/"), KV("endpoint", "http://127.0.0.1:9000"),
		KV("region", "eu-west-1"), KV("blockSize", "8MiB"), KV("cachePolicy", "scan-resistant"),
		KV("pin", "true"), KV("preload", "yes"),
		/* The provisioner's own keys are not ours to refuse. */
		KV("csi.storage.k8s.io/pvc/name", "imagenet"),
	};
	struct controller_params p;
	struct error err;

	ck_assert_msg(controller_parse_params(kv, N(kv), &p, &err) == ERR_OK, "%s", err.msg);
	ck_assert_str_eq(p.source, "s3://granary-e2e/imagenet/");
	ck_assert_str_eq(p.endpoint, "http://127.0.0.1:9000");
	ck_assert_str_eq(p.region, "eu-west-1");
	ck_assert_uint_eq(p.block_size, 8u << 20);
	ck_assert_int_eq(p.cache_policy, GRANARY__V1__CACHE_POLICY__CACHE_POLICY_SCAN_RESISTANT);
	ck_assert(p.pin);
	ck_assert(p.preload);
	controller_params_release(&p);
}
END_TEST

START_TEST(test_controller_params_defaults_with_source_only)
{
	static const struct controller_kv kv[] = { KV("source", "s3://bucket-a/") };
	struct controller_params p;
	struct error err;

	ck_assert_int_eq(controller_parse_params(kv, N(kv), &p, &err), ERR_OK);
	ck_assert_str_eq(p.endpoint, "");
	ck_assert_str_eq(p.region, "");
	ck_assert_uint_eq(p.block_size, 0);
	ck_assert_int_eq(p.cache_policy, 0);
	ck_assert(!p.pin && !p.preload);
	controller_params_release(&p);

	ck_assert_int_eq(controller_parse_params((const struct controller_kv[]){
						 KV("source", "s3://b-1/x/"), KV("cachePolicy", "lru") },
					 2, &p, &err),
			 ERR_OK);
	ck_assert_int_eq(p.cache_policy, GRANARY__V1__CACHE_POLICY__CACHE_POLICY_LRU);
	controller_params_release(&p);

	/* Empty blockSize and cachePolicy are the worker's defaults. */
	ck_assert_int_eq(controller_parse_params((const struct controller_kv[]){
						 KV("source", "s3://b-1/x/"), KV("blockSize", ""),
						 KV("cachePolicy", "") },
					 3, &p, &err),
			 ERR_OK);
	ck_assert_uint_eq(p.block_size, 0);
	ck_assert_int_eq(p.cache_policy, 0);
	controller_params_release(&p);
}
END_TEST

START_TEST(test_controller_params_errors_name_the_parameter)
{
	static const struct {
		struct controller_kv kv[3];
		size_t n;
		const char *expect;
	} bad[] = {
		{ { KV("endpoint", "http://x:1") }, 1, "parameter 'source': required" },
		{ { KV("source", "") }, 1, "parameter 'source': required" },
		{ { KV("source", "gs://bucket/x/") }, 1, "parameter 'source'" },
		{ { KV("source", "s3://bucket/no-slash") }, 1, "parameter 'source'" },
		{ { KV("source", "s3://B/x/") }, 1, "parameter 'source'" },
		{ { KV("source", "s3://bucket/"), KV("endpoint", "ftp://x") }, 2, "parameter 'endpoint'" },
		{ { KV("source", "s3://bucket/"), KV("region", "us east") }, 2, "parameter 'region'" },
		{ { KV("source", "s3://bucket/"), KV("blockSize", "3MiB") }, 2,
		  "parameter 'blockSize': must be a power of two" },
		{ { KV("source", "s3://bucket/"), KV("blockSize", "big") }, 2, "parameter 'blockSize'" },
		{ { KV("source", "s3://bucket/"), KV("blockSize", "128MiB") }, 2, "parameter 'blockSize'" },
		{ { KV("source", "s3://bucket/"), KV("cachePolicy", "fifo") }, 2,
		  "parameter 'cachePolicy': must be lru or scan-resistant, got 'fifo'" },
		{ { KV("source", "s3://bucket/"), KV("pin", "maybe") }, 2, "parameter 'pin'" },
		{ { KV("source", "s3://bucket/"), KV("preload", "2") }, 2, "parameter 'preload'" },
		{ { KV("source", "s3://bucket/"), KV("sourcee", "x") }, 2, "unknown parameter 'sourcee'" },
		{ { KV("source", "s3://bucket/"), KV("source", "s3://other/") }, 2,
		  "parameter 'source': given twice" },
	};

	for (size_t i = 0; i < N(bad); i++) {
		struct controller_params p;
		struct error err;

		ck_assert_msg(controller_parse_params(bad[i].kv, bad[i].n, &p, &err) == ERR_INVALID,
			      "case %zu accepted", i);
		ck_assert_msg(strstr(err.msg, bad[i].expect), "case %zu: '%s' lacks '%s'", i, err.msg,
			      bad[i].expect);
		controller_params_release(&p);
	}
}
END_TEST

START_TEST(test_controller_secret_keys_and_errors)
{
	static const struct controller_kv full[] = { KV("accessKeyID", "AKIDEXAMPLE"),
						     KV("secretAccessKey", "s3cr3t/Value+x"),
						     KV("sessionToken", "tok") };
	static const struct {
		struct controller_kv kv[2];
		size_t n;
		const char *expect;
	} bad[] = {
		{ { KV("accessKeyID", "AK") }, 1, "key 'secretAccessKey': required" },
		{ { KV("secretAccessKey", "hidden-value-1") }, 1, "key 'accessKeyID': required" },
		{ { KV("accessKeyID", "AK"), KV("password", "hidden-value-2") }, 2,
		  "key 'password': unknown" },
		{ { KV("accessKeyID", "AK"), KV("secretAccessKey", "hidden\nvalue-3") }, 2,
		  "key 'secretAccessKey': must be one non-empty line" },
		{ { KV("accessKeyID", " AK"), KV("secretAccessKey", "x") }, 2, "key 'accessKeyID'" },
		{ { KV("accessKeyID", ""), KV("secretAccessKey", "x") }, 2, "key 'accessKeyID'" },
	};
	struct controller_secret s;
	struct error err;
	bool present = true;

	ck_assert_int_eq(controller_parse_secret("secret", NULL, 0, &s, &present, &err), ERR_OK);
	ck_assert(!present);
	ck_assert_ptr_null(s.access_key_id);
	ck_assert_int_eq(controller_parse_secret("secret", full, 3, &s, &present, &err), ERR_OK);
	ck_assert(present);
	ck_assert_str_eq(s.access_key_id, "AKIDEXAMPLE");
	ck_assert_str_eq(s.secret_access_key, "s3cr3t/Value+x");
	ck_assert_str_eq(s.session_token, "tok");
	controller_secret_release(&s);
	ck_assert_ptr_null(s.secret_access_key);

	for (size_t i = 0; i < N(bad); i++) {
		ck_assert_msg(controller_parse_secret("secret", bad[i].kv, bad[i].n, &s, &present,
						      &err) == ERR_INVALID,
			      "case %zu accepted", i);
		ck_assert_msg(strstr(err.msg, bad[i].expect), "case %zu: '%s' lacks '%s'", i, err.msg,
			      bad[i].expect);
		ck_assert_msg(!strstr(err.msg, "hidden"), "case %zu leaks a value: %s", i, err.msg);
		ck_assert_ptr_null(s.access_key_id);
	}

	/* A key of 300 bytes is named as the unknown key it is, not blamed
	 * on another field. */
	{
		char key[301];
		struct controller_kv kv[] = { KV("accessKeyID", "AK"), KV(key, "x") };

		memset(key, 'k', sizeof(key) - 1);
		key[sizeof(key) - 1] = '\0';
		ck_assert_int_eq(controller_parse_secret("secret", kv, 2, &s, &present, &err),
				 ERR_INVALID);
		ck_assert_msg(strncmp(err.msg, "secret key 'kkkkkkkk", 20) == 0, "%s", err.msg);
		ck_assert_msg(!strstr(err.msg, "source"), "%s", err.msg);
	}
}
END_TEST

static char *read_all(const char *path)
{
	static char buf[1024];
	FILE *f = fopen(path, "r");
	size_t n;

	ck_assert_ptr_nonnull(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

START_TEST(test_controller_credentials_file_is_0600_with_exact_content)
{
	struct controller_secret s = { .access_key_id = "AKID", .secret_access_key = "SECRET" };
	char dir[] = "/tmp/test_controller_XXXXXX", path[128];
	struct error err;
	struct stat st;
	mode_t old = umask(0);
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/vol.credentials", dir);
	/* A file already there with a loose mode is replaced, not reused. */
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_msg(controller_write_credentials(path, &s, &err) == ERR_OK, "%s", err.msg);
	umask(old);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	ck_assert_str_eq(read_all(path),
			 "[default]\naws_access_key_id = AKID\naws_secret_access_key = SECRET\n");
	s.session_token = "TOKEN";
	ck_assert_int_eq(controller_write_credentials(path, &s, &err), ERR_OK);
	ck_assert_str_eq(read_all(path), "[default]\naws_access_key_id = AKID\n"
					 "aws_secret_access_key = SECRET\naws_session_token = TOKEN\n");
	unlink(path);
	/* A directory that is not there: an error naming the path, no value. */
	snprintf(path, sizeof(path), "%s/missing/vol.credentials", dir);
	ck_assert_int_eq(controller_write_credentials(path, &s, &err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "missing/vol.credentials"));
	ck_assert_ptr_null(strstr(err.msg, "SECRET"));
	rmdir(dir);
}
END_TEST

START_TEST(test_controller_volume_id_keeps_valid_names)
{
	char id[CONTROLLER_ID_MAX];
	struct error err;

	ck_assert_int_eq(controller_volume_id("pvc-6a1c7a5e-8b57-4c2e-9d2b-0f6b1f6d2b11", id,
					      sizeof(id), &err),
			 ERR_OK);
	ck_assert_str_eq(id, "pvc-6a1c7a5e-8b57-4c2e-9d2b-0f6b1f6d2b11");
	ck_assert_int_eq(controller_volume_id("imagenet.v2", id, sizeof(id), &err), ERR_OK);
	ck_assert_str_eq(id, "imagenet.v2");
	ck_assert_int_eq(controller_volume_id("", id, sizeof(id), &err), ERR_INVALID);
	ck_assert_str_eq(err.msg, "field 'name': required");
}
END_TEST

START_TEST(test_controller_volume_id_sanitises_stably_and_distinctly)
{
	char a[CONTROLLER_ID_MAX], b[CONTROLLER_ID_MAX], c[CONTROLLER_ID_MAX],
		big[CONTROLLER_NAME_MAX + 1];
	struct error err;

	ck_assert_int_eq(controller_volume_id("Sanity_Vol--X", a, sizeof(a), &err), ERR_OK);
	ck_assert_int_eq(controller_volume_id("Sanity_Vol--X", b, sizeof(b), &err), ERR_OK);
	ck_assert_str_eq(a, b);
	ck_assert_msg(strncmp(a, "sanity-vol-x-", 13) == 0, "%s", a);
	ck_assert_uint_eq(strlen(a), 13 + 12);
	ck_assert(controller_valid_id(a));
	/* Names that sanitise alike stay apart. */
	ck_assert_int_eq(controller_volume_id("sanity_vol_x", c, sizeof(c), &err), ERR_OK);
	ck_assert_str_ne(a, c);
	ck_assert_int_eq(controller_volume_id("___", a, sizeof(a), &err), ERR_OK);
	ck_assert_msg(strncmp(a, "vol-", 4) == 0 && controller_valid_id(a), "%s", a);
	memset(big, 'A', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ck_assert_int_eq(controller_volume_id(big, a, sizeof(a), &err), ERR_OK);
	ck_assert_uint_eq(strlen(a), CONTROLLER_ID_LEN);
	ck_assert(controller_valid_id(a));
	/* A DNS name over the id's length is shortened the same way. */
	memset(big, 'a', sizeof(big) - 1);
	ck_assert_int_eq(controller_volume_id(big, a, sizeof(a), &err), ERR_OK);
	ck_assert_uint_eq(strlen(a), CONTROLLER_ID_LEN);
	ck_assert(controller_valid_id(a));
}
END_TEST

START_TEST(test_controller_valid_id_is_dns_1123_subdomain_of_128_bytes)
{
	static const char *const good[] = { "a", "pvc-1", "a.b-c.d", "0abc" };
	static const char *const bad[] = { "", "-a", "a-", "A", "a..b", ".a", "a.", "a_b", "a/b",
					   "a.-b" };

	for (size_t i = 0; i < N(good); i++)
		ck_assert_msg(controller_valid_id(good[i]), "'%s' refused", good[i]);
	char longest[CONTROLLER_ID_LEN + 2];

	for (size_t i = 0; i < N(bad); i++)
		ck_assert_msg(!controller_valid_id(bad[i]), "'%s' accepted", bad[i]);
	memset(longest, 'a', sizeof(longest) - 1);
	longest[CONTROLLER_ID_LEN] = '\0';
	ck_assert(controller_valid_id(longest));
	longest[CONTROLLER_ID_LEN] = 'a';
	longest[CONTROLLER_ID_LEN + 1] = '\0';
	ck_assert(!controller_valid_id(longest));
}
END_TEST

START_TEST(test_controller_access_rule_serves_readers_and_single_node_writers)
{
	static const int ok[] = { CONTROLLER_MODE_SINGLE_NODE_WRITER,
				  CONTROLLER_MODE_SINGLE_NODE_READER_ONLY,
				  CONTROLLER_MODE_MULTI_NODE_READER_ONLY,
				  CONTROLLER_MODE_SINGLE_NODE_SINGLE_WRITER,
				  CONTROLLER_MODE_SINGLE_NODE_MULTI_WRITER };
	static const int refused[] = { CONTROLLER_MODE_UNKNOWN, CONTROLLER_MODE_MULTI_NODE_SINGLE_WRITER,
				       CONTROLLER_MODE_MULTI_NODE_MULTI_WRITER, 99 };
	struct controller_capability cap = { .access_type = CONTROLLER_ACCESS_MOUNT };
	struct error err;

	for (size_t i = 0; i < N(ok); i++) {
		cap.mode = ok[i];
		ck_assert_msg(controller_check_capability(&cap, "cap", &err) == ERR_OK, "mode %d: %s",
			      ok[i], err.msg);
	}
	for (size_t i = 0; i < N(refused); i++) {
		cap.mode = refused[i];
		ck_assert_int_eq(controller_check_capability(&cap, "volume_capability", &err),
				 ERR_INVALID);
		ck_assert_msg(strstr(err.msg, "field 'volume_capability'"), "%s", err.msg);
	}
	cap = (struct controller_capability){ CONTROLLER_ACCESS_BLOCK,
					      CONTROLLER_MODE_MULTI_NODE_READER_ONLY };
	ck_assert_int_eq(controller_check_capability(&cap, "c", &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "block access is not supported"));
	cap.access_type = CONTROLLER_ACCESS_UNSET;
	ck_assert_int_eq(controller_check_capability(&cap, "c", &err), ERR_INVALID);
}
END_TEST

/* The value of key in a context, or NULL. */
static const char *context_get(const struct controller_context *ctx, const char *key)
{
	for (size_t i = 0; i < ctx->n; i++)
		if (strcmp(ctx->kv[i].key, key) == 0)
			return ctx->kv[i].value;
	return NULL;
}

static void assert_params_eq(const struct controller_params *a, const struct controller_params *b)
{
	ck_assert_str_eq(a->source, b->source);
	ck_assert_str_eq(a->endpoint, b->endpoint);
	ck_assert_str_eq(a->region, b->region);
	ck_assert_uint_eq(a->block_size, b->block_size);
	ck_assert_int_eq(a->cache_policy, b->cache_policy);
	ck_assert_int_eq(a->pin, b->pin);
	ck_assert_int_eq(a->preload, b->preload);
}

START_TEST(test_controller_context_round_trips_the_registration)
{
	static const struct controller_kv every[] = {
		KV("source", "s3://granary-e2e/imagenet/"), KV("endpoint", "http://127.0.0.1:9000"),
		KV("region", "eu-west-1"), KV("blockSize", "8MiB"), KV("cachePolicy", "scan-resistant"),
		KV("pin", "yes"), KV("preload", "on"),
	};
	static const struct controller_kv bare[] = { KV("source", "s3://bucket-a/") };
	struct controller_params made, back;
	struct controller_context ctx;
	struct controller_kv seen[12];
	bool present = false;
	struct error err;

	/* Every key: the values come back normalised. */
	ck_assert_int_eq(controller_parse_params(every, N(every), &made, &err), ERR_OK);
	controller_context_init(&ctx, "pvc-1", &made);
	ck_assert_uint_eq(ctx.n, 8);
	ck_assert_str_eq(context_get(&ctx, "dataset"), "pvc-1");
	ck_assert_str_eq(context_get(&ctx, "source"), "s3://granary-e2e/imagenet/");
	ck_assert_str_eq(context_get(&ctx, "endpoint"), "http://127.0.0.1:9000");
	ck_assert_str_eq(context_get(&ctx, "region"), "eu-west-1");
	ck_assert_str_eq(context_get(&ctx, "blockSize"), "8388608");
	ck_assert_str_eq(context_get(&ctx, "cachePolicy"), "scan-resistant");
	ck_assert_str_eq(context_get(&ctx, "pin"), "true");
	ck_assert_str_eq(context_get(&ctx, "preload"), "true");
	/* What the kubelet passes back: the context plus keys of others. */
	memcpy(seen, ctx.kv, ctx.n * sizeof(seen[0]));
	seen[ctx.n] = (struct controller_kv)KV("storage.kubernetes.io/csiProvisionerIdentity",
					       "1700000000000-1234-csi.granary.io");
	seen[ctx.n + 1] = (struct controller_kv)KV("csi.storage.k8s.io/pod.name", "trainer-0");
	ck_assert_msg(controller_context_params(seen, ctx.n + 2, &back, &present, &err) == ERR_OK,
		      "%s", err.msg);
	ck_assert(present);
	assert_params_eq(&back, &made);
	controller_params_release(&back);
	controller_params_release(&made);

	/* Defaults: empty values and false, and they read back as defaults. */
	ck_assert_int_eq(controller_parse_params(bare, N(bare), &made, &err), ERR_OK);
	controller_context_init(&ctx, "pvc-2", &made);
	ck_assert_str_eq(context_get(&ctx, "endpoint"), "");
	ck_assert_str_eq(context_get(&ctx, "region"), "");
	ck_assert_str_eq(context_get(&ctx, "blockSize"), "");
	ck_assert_str_eq(context_get(&ctx, "cachePolicy"), "");
	ck_assert_str_eq(context_get(&ctx, "pin"), "false");
	ck_assert_str_eq(context_get(&ctx, "preload"), "false");
	ck_assert_int_eq(controller_context_params(ctx.kv, ctx.n, &back, &present, &err), ERR_OK);
	ck_assert(present);
	assert_params_eq(&back, &made);
	controller_params_release(&back);
	controller_params_release(&made);
}
END_TEST

START_TEST(test_controller_context_without_registration_is_absent)
{
	static const struct controller_kv old[] = {
		KV("dataset", "pvc-1"),
		KV("storage.kubernetes.io/csiProvisionerIdentity", "1700000000000-1234-csi.granary.io"),
	};
	struct controller_params p;
	bool present = true;
	struct error err;

	/* A volume made before CreateVolume returned its registration. */
	ck_assert_int_eq(controller_context_params(old, N(old), &p, &present, &err), ERR_OK);
	ck_assert(!present);
	ck_assert_ptr_null(p.source);
	controller_params_release(&p);
	present = true;
	ck_assert_int_eq(controller_context_params(NULL, 0, &p, &present, &err), ERR_OK);
	ck_assert(!present);
	controller_params_release(&p);
}
END_TEST

START_TEST(test_controller_context_errors_name_the_key)
{
	static const struct {
		struct controller_kv kv[3];
		size_t n;
		const char *expect;
	} bad[] = {
		{ { KV("dataset", "pvc-1"), KV("region", "eu-west-1") }, 2,
		  "volume_context key 'source': required" },
		{ { KV("source", "") }, 1, "volume_context key 'source': required" },
		{ { KV("source", "s3://bucket/no-slash") }, 1, "volume_context key 'source'" },
		{ { KV("source", "s3://bucket/"), KV("endpoint", "ftp://x") }, 2,
		  "volume_context key 'endpoint'" },
		{ { KV("source", "s3://bucket/"), KV("region", "us east") }, 2,
		  "volume_context key 'region'" },
		{ { KV("source", "s3://bucket/"), KV("blockSize", "3MiB") }, 2,
		  "volume_context key 'blockSize': must be a power of two" },
		{ { KV("source", "s3://bucket/"), KV("blockSize", "0") }, 2,
		  "volume_context key 'blockSize'" },
		{ { KV("source", "s3://bucket/"), KV("cachePolicy", "fifo") }, 2,
		  "volume_context key 'cachePolicy': must be lru or scan-resistant, got 'fifo'" },
		{ { KV("source", "s3://bucket/"), KV("pin", "maybe") }, 2, "volume_context key 'pin'" },
		{ { KV("source", "s3://bucket/"), KV("preload", "2") }, 2,
		  "volume_context key 'preload'" },
		{ { KV("source", "s3://bucket/"), KV("source", "s3://other/") }, 2,
		  "volume_context key 'source': given twice" },
	};

	for (size_t i = 0; i < N(bad); i++) {
		struct controller_params p;
		bool present = true;
		struct error err;

		ck_assert_msg(controller_context_params(bad[i].kv, bad[i].n, &p, &present, &err) ==
				      ERR_INVALID,
			      "case %zu accepted", i);
		ck_assert(!present);
		ck_assert_msg(strstr(err.msg, bad[i].expect), "case %zu: '%s' lacks '%s'", i, err.msg,
			      bad[i].expect);
		controller_params_release(&p);
	}
}
END_TEST

/* A controller on a fresh directory, with a meta nobody serves. */
static struct controller *controller_in(char *dir, struct meta_client **meta,
					char *const *file_roots, size_t nfile_roots)
{
	struct meta_client_options mopt = { .timeout_ms = 1000, .build_timeout_ms = 1000 };
	struct controller_config cfg = { .state_dir = dir, .file_roots = file_roots,
					 .nfile_roots = nfile_roots };
	struct controller *c = NULL;
	struct error err;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(meta_client_new("unix:///nonexistent/meta.sock", &mopt, meta, &err), ERR_OK);
	cfg.meta = *meta;
	ck_assert_msg(controller_new(&cfg, &c, &err) == ERR_OK, "%s", err.msg);
	return c;
}

static void controller_gone(struct controller *c, struct meta_client *meta, const char *dir)
{
	char cmd[96];

	controller_free(c);
	meta_client_free(meta);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_controller_refuses_volume_ids_that_are_not_ids)
{
	struct controller_capability cap = { CONTROLLER_ACCESS_MOUNT,
					     CONTROLLER_MODE_MULTI_NODE_READER_ONLY };
	char dir[] = "/tmp/test_controller_XXXXXX", msg[ERROR_MSG_MAX], longid[300];
	struct meta_client *meta = NULL;
	struct controller *c = controller_in(dir, &meta, NULL, 0);
	bool ok = true;
	struct error err;

	ck_assert_int_eq(controller_delete_volume(c, "../../victim/v", &err), ERR_INVALID);
	ck_assert_str_eq(err.msg,
			 "field 'volume_id': '../../victim/v' is not a volume id (lowercase letters, digits, '-' and '.', at most 128 bytes)");
	ck_assert_int_eq(controller_validate(c, "a/b", &cap, 1, &ok, msg, sizeof(msg), &err),
			 ERR_INVALID);
	ck_assert_msg(strncmp(err.msg, "field 'volume_id': 'a/b' is not a volume id", 43) == 0, "%s",
		      err.msg);
	ck_assert(!ok);
	memset(longid, 'a', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	ck_assert_int_eq(controller_delete_volume(c, longid, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "aaaa...' is not a volume id") && strlen(err.msg) < 200, "%s",
		      err.msg);
	controller_gone(c, meta, dir);
}
END_TEST

START_TEST(test_controller_refuses_names_over_the_limit)
{
	static const struct controller_kv params[] = { { "source", "s3://bucket/prefix/" } };
	struct controller_capability cap = { CONTROLLER_ACCESS_MOUNT,
					     CONTROLLER_MODE_MULTI_NODE_READER_ONLY };
	char dir[] = "/tmp/test_controller_XXXXXX", name[1100];
	struct controller_create_request req = { .name = name, .params = params, .nparams = 1,
						 .caps = &cap, .ncaps = 1 };
	struct meta_client *meta = NULL;
	struct controller *c = controller_in(dir, &meta, NULL, 0);
	struct controller_volume v;
	struct error err;

	memset(name, 'a', sizeof(name) - 1);
	name[1024] = '\0';
	ck_assert_int_eq(controller_create_volume(c, &req, &v, &err), ERR_INVALID);
	ck_assert_str_eq(err.msg, "field 'name': 1024 bytes, longer than 253 bytes");
	name[254] = '\0';
	ck_assert_int_eq(controller_create_volume(c, &req, &v, &err), ERR_INVALID);
	ck_assert_str_eq(err.msg, "field 'name': 254 bytes, longer than 253 bytes");
	/* 253 is a name: it gets as far as meta. */
	name[253] = '\0';
	ck_assert_int_eq(controller_create_volume(c, &req, &v, &err), ERR_UNAVAILABLE);
	controller_gone(c, meta, dir);
}
END_TEST

/* CreateVolume of source in c: what the controller answers. */
static enum error_code create_from(struct controller *c, const char *source, struct error *err)
{
	const struct controller_kv params[] = { { "source", source } };
	struct controller_capability cap = { CONTROLLER_ACCESS_MOUNT,
					     CONTROLLER_MODE_MULTI_NODE_READER_ONLY };
	struct controller_create_request req = { .name = "pvc-files", .params = params,
						 .nparams = 1, .caps = &cap, .ncaps = 1 };
	struct controller_volume v;
	enum error_code rc = controller_create_volume(c, &req, &v, err);

	if (rc == ERR_OK)
		controller_volume_release(&v);
	return rc;
}

START_TEST(test_controller_file_sources_only_under_allowed_file_roots)
{
	char dir[] = "/tmp/test_controller_XXXXXX", top[] = "/tmp/test_file_roots_XXXXXX";
	char root[128], data[128], link[128], uri[200], *roots[] = { root };
	struct meta_client *meta = NULL;
	struct controller *c = controller_in(dir, &meta, NULL, 0);
	struct error err;

	/* Off by default: nothing of the host is listed, not even for "/". */
	ck_assert_int_eq(create_from(c, "file:///etc/", &err), ERR_INVALID);
	ck_assert_str_eq(err.msg,
			 "parameter 'source': file:// sources are off (allowed_file_roots is empty), got 'file:///etc/'");
	ck_assert_int_eq(create_from(c, "file:///", &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "file:// sources are off"));
	controller_gone(c, meta, dir);

	ck_assert_ptr_nonnull(mkdtemp(top));
	snprintf(root, sizeof(root), "%s/datasets", top);
	snprintf(data, sizeof(data), "%s/datasets/mnist", top);
	ck_assert_int_eq(mkdir(root, 0755), 0);
	ck_assert_int_eq(mkdir(data, 0755), 0);
	snprintf(link, sizeof(link), "%s/datasets/etc", top);
	ck_assert_int_eq(symlink("/etc", link), 0);
	snprintf(dir, sizeof(dir), "/tmp/test_controller_XXXXXX");
	c = controller_in(dir, &meta, roots, 1);
	/* Inside a root: it gets as far as meta. */
	snprintf(uri, sizeof(uri), "file://%s/", data);
	ck_assert_msg(create_from(c, uri, &err) == ERR_UNAVAILABLE, "%s", err.msg);
	/* Out of it: through a link, a "..", or another directory. */
	snprintf(uri, sizeof(uri), "file://%s/", link);
	ck_assert_int_eq(create_from(c, uri, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "parameter 'source': ") && strstr(err.msg, "resolves to '/etc'") &&
			      strstr(err.msg, "outside allowed_file_roots"),
		      "%s", err.msg);
	snprintf(uri, sizeof(uri), "file://%s/../", data);
	ck_assert_int_eq(create_from(c, uri, &err), ERR_INVALID);
	snprintf(uri, sizeof(uri), "file://%s/mnist/../../", root);
	ck_assert_int_eq(create_from(c, uri, &err), ERR_INVALID);
	ck_assert_int_eq(create_from(c, "file:///", &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "outside allowed_file_roots"));
	ck_assert_int_eq(create_from(c, "file:///etc/", &err), ERR_INVALID);
	snprintf(uri, sizeof(uri), "file://%s/missing/", root);
	ck_assert_int_eq(create_from(c, uri, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "No such file or directory"), "%s", err.msg);
	controller_gone(c, meta, dir);
	snprintf(uri, sizeof(uri), "rm -rf '%s'", top);
	ck_assert_int_eq(system(uri), 0);
}
END_TEST

/* CreateVolume of an s3:// source at endpoint ep in c. */
static enum error_code create_at(struct controller *c, const char *ep, struct error *err)
{
	const struct controller_kv params[] = { { "source", "s3://bucket/prefix/" },
						{ "endpoint", ep } };
	struct controller_capability cap = { CONTROLLER_ACCESS_MOUNT,
					     CONTROLLER_MODE_MULTI_NODE_READER_ONLY };
	struct controller_create_request req = { .name = "pvc-ep", .params = params,
						 .nparams = 2, .caps = &cap, .ncaps = 1 };
	struct controller_volume v;
	enum error_code rc = controller_create_volume(c, &req, &v, err);

	if (rc == ERR_OK)
		controller_volume_release(&v);
	return rc;
}

/*
 * A StorageClass names the endpoint meta lists its dataset at: only the
 * cluster's store.endpoint and store.allowed_endpoints, refused by the
 * controller before any Secret is written or meta asked.
 */
START_TEST(test_controller_endpoints_only_those_allowed)
{
	char dir[] = "/tmp/test_controller_XXXXXX";
	struct meta_client_options mopt = { .timeout_ms = 1000, .build_timeout_ms = 1000 };
	struct controller_config cfg = { .state_dir = dir,
					 .default_endpoint = "http://minio.storage:9000",
					 .allowed_endpoints = "https://s3.example.com/, http://10.0.0.5:7070" };
	struct meta_client *meta = NULL;
	struct controller *c = NULL;
	struct error err;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(meta_client_new("unix:///nonexistent/meta.sock", &mopt, &meta, &err), ERR_OK);
	cfg.meta = meta;
	ck_assert_msg(controller_new(&cfg, &c, &err) == ERR_OK, "%s", err.msg);
	ck_assert_int_eq(create_at(c, "http://attacker.example:8080", &err), ERR_INVALID);
	ck_assert_str_eq(err.msg,
			 "parameter 'endpoint': endpoint 'http://attacker.example:8080' is not allowed: "
			 "the endpoints a dataset may name are store.endpoint and store.allowed_endpoints");
	/* Allowed ones get as far as meta; case and a trailing '/' do not matter. */
	ck_assert_int_eq(create_at(c, "", &err), ERR_UNAVAILABLE);
	ck_assert_int_eq(create_at(c, "http://MINIO.storage:9000/", &err), ERR_UNAVAILABLE);
	ck_assert_int_eq(create_at(c, "https://s3.example.com", &err), ERR_UNAVAILABLE);
	ck_assert_int_eq(create_at(c, "http://10.0.0.5:7070", &err), ERR_UNAVAILABLE);
	/* Another port or scheme is another endpoint. */
	ck_assert_int_eq(create_at(c, "http://10.0.0.5:7071", &err), ERR_INVALID);
	ck_assert_int_eq(create_at(c, "http://s3.example.com", &err), ERR_INVALID);
	controller_gone(c, meta, dir);
}
END_TEST

/*
 * A CreateVolume that fails for a volume that exists (here meta is away;
 * other parameters are refused by meta the same way, after this point)
 * leaves the volume's credentials file, which meta refreshes its dataset
 * with, as it was: the refused request's keys never replace it.
 */
START_TEST(test_controller_refused_create_keeps_the_volume_credentials)
{
	static const char old_keys[] =
		"[default]\naws_access_key_id = OLDKEY\naws_secret_access_key = OLDSECRET\n";
	static const struct controller_kv params[] = { { "source", "s3://other/prefix/" } };
	static const struct controller_kv secrets[] = { { "accessKeyID", "NEWKEY" },
							{ "secretAccessKey", "NEWSECRET" } };
	struct controller_capability cap = { CONTROLLER_ACCESS_MOUNT,
					     CONTROLLER_MODE_MULTI_NODE_READER_ONLY };
	struct controller_create_request req = { .name = "pvc-kept", .params = params,
						 .nparams = 1, .secrets = secrets, .nsecrets = 2,
						 .caps = &cap, .ncaps = 1 };
	char dir[] = "/tmp/test_controller_XXXXXX", path[128];
	struct meta_client *meta = NULL;
	struct controller *c = controller_in(dir, &meta, NULL, 0);
	struct controller_volume v;
	struct error err;
	struct stat st;
	FILE *f;

	snprintf(path, sizeof(path), "%s/controller/pvc-kept.json", dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("{\"version\": 1, \"name\": \"pvc-kept\", \"has_capacity\": false, "
	      "\"required_bytes\": 0, \"limit_bytes\": 0}",
	      f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/controller/pvc-kept.credentials", dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(old_keys, f);
	fclose(f);
	ck_assert_int_eq(chmod(path, 0600), 0);

	ck_assert_int_eq(controller_create_volume(c, &req, &v, &err), ERR_UNAVAILABLE);
	ck_assert_str_eq(read_all(path), old_keys);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	controller_gone(c, meta, dir);
}
END_TEST

/* ---- DeleteVolume and the volume's Dataset -------------------------------- */

/* A meta in this process, on a unix socket under dir, with no dataset. */
struct meta_here {
	struct registry *reg;
	struct membership *mem;
	struct rpc_server *srv;
	struct meta_service svc;
	struct meta_client *cl;
};

static void meta_here_start(struct meta_here *m, const char *dir)
{
	struct membership_options mopt = { .interval_ms = 1000, .expiry_ms = 3000 };
	struct meta_client_options copt = { .timeout_ms = 5000, .wait_for_ready = true };
	struct rpc_server_options sopt = { .threads = 2 };
	struct registry_options ropt = { 0 };
	char data[128], address[128];
	struct error err;

	log_set_level(LOG_LEVEL_ERROR);
	snprintf(data, sizeof(data), "%s/meta", dir);
	snprintf(address, sizeof(address), "unix://%s/meta.sock", dir);
	ropt.data_dir = data;
	memset(m, 0, sizeof(*m));
	ck_assert_msg(registry_open(&ropt, &m->reg, &err) == ERR_OK, "%s", err.msg);
	ck_assert_int_eq(membership_new(&mopt, &m->mem, &err), ERR_OK);
	m->svc.registry = m->reg;
	m->svc.membership = m->mem;
	ck_assert_int_eq(rpc_server_new(&sopt, &m->srv, &err), ERR_OK);
	ck_assert_int_eq(meta_service_add(m->srv, &m->svc, &err), ERR_OK);
	ck_assert_msg(rpc_server_listen(m->srv, address, NULL, &err) == ERR_OK, "%s", err.msg);
	ck_assert_int_eq(rpc_server_start(m->srv, &err), ERR_OK);
	ck_assert_int_eq(meta_client_new(address, &copt, &m->cl, &err), ERR_OK);
}

static void meta_here_stop(struct meta_here *m)
{
	meta_client_free(m->cl);
	rpc_server_free(m->srv);
	membership_free(m->mem);
	registry_free(m->reg);
}

/* on_volume, as csi/dsmirror.c: the deletion of the volume's Dataset fails
 * while *fail holds; the calls are counted. */
struct mirror_stub {
	bool fail;
	unsigned deletes;
};

static enum error_code mirror_stub(const char *id, const struct controller_params *p,
				   bool created, void *arg, struct error *err)
{
	struct mirror_stub *m = arg;

	(void)p;
	if (created)
		return ERR_OK;
	m->deletes++;
	if (m->fail)
		return error_set(err, ERR_UNAVAILABLE,
				 "delete Dataset granary-system/%s: HTTP 500: etcdserver: request timed out",
				 id);
	return ERR_OK;
}

/*
 * The volume's Dataset cannot be deleted (the apiserver answers 500):
 * DeleteVolume fails with that error, naming the volume, and deletes
 * nothing, so that the provisioner retries (were it to succeed, meta's
 * Dataset controller would register the volume again from the Dataset
 * left). The retry, once the apiserver takes it, succeeds, and so does
 * the one after (idempotent).
 */
START_TEST(test_controller_delete_fails_when_the_dataset_stays)
{
	char dir[] = "/tmp/test_controller_XXXXXX", record[128], cmd[96];
	struct mirror_stub stub = { .fail = true };
	struct controller_config cfg = { .state_dir = dir, .on_volume = mirror_stub,
					 .on_volume_arg = &stub };
	struct controller *c = NULL;
	struct meta_here m;
	struct error err;
	struct stat st;
	FILE *f;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	meta_here_start(&m, dir);
	cfg.meta = m.cl;
	ck_assert_msg(controller_new(&cfg, &c, &err) == ERR_OK, "%s", err.msg);
	snprintf(record, sizeof(record), "%s/controller/pvc-gone.json", dir);
	f = fopen(record, "w");
	ck_assert_ptr_nonnull(f);
	fputs("{\"version\": 1, \"name\": \"pvc-gone\", \"has_capacity\": false, "
	      "\"required_bytes\": 0, \"limit_bytes\": 0}",
	      f);
	fclose(f);

	ck_assert_int_eq(controller_delete_volume(c, "pvc-gone", &err), ERR_UNAVAILABLE);
	ck_assert_str_eq(err.msg, "delete volume 'pvc-gone': delete Dataset "
				  "granary-system/pvc-gone: HTTP 500: etcdserver: request timed out");
	ck_assert_int_eq(stat(record, &st), 0);
	stub.fail = false;
	ck_assert_msg(controller_delete_volume(c, "pvc-gone", &err) == ERR_OK, "%s", err.msg);
	ck_assert_int_ne(stat(record, &st), 0);
	ck_assert_msg(controller_delete_volume(c, "pvc-gone", &err) == ERR_OK, "%s", err.msg);
	ck_assert_uint_eq(stub.deletes, 3);

	controller_free(c);
	meta_here_stop(&m);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("csi_controller");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_controller_params_parse_every_key);
	tcase_add_test(tc, test_controller_params_defaults_with_source_only);
	tcase_add_test(tc, test_controller_params_errors_name_the_parameter);
	tcase_add_test(tc, test_controller_secret_keys_and_errors);
	tcase_add_test(tc, test_controller_credentials_file_is_0600_with_exact_content);
	tcase_add_test(tc, test_controller_volume_id_keeps_valid_names);
	tcase_add_test(tc, test_controller_volume_id_sanitises_stably_and_distinctly);
	tcase_add_test(tc, test_controller_valid_id_is_dns_1123_subdomain_of_128_bytes);
	tcase_add_test(tc, test_controller_access_rule_serves_readers_and_single_node_writers);
	tcase_add_test(tc, test_controller_context_round_trips_the_registration);
	tcase_add_test(tc, test_controller_context_without_registration_is_absent);
	tcase_add_test(tc, test_controller_context_errors_name_the_key);
	tcase_add_test(tc, test_controller_refuses_volume_ids_that_are_not_ids);
	tcase_add_test(tc, test_controller_refuses_names_over_the_limit);
	tcase_add_test(tc, test_controller_file_sources_only_under_allowed_file_roots);
	tcase_add_test(tc, test_controller_endpoints_only_those_allowed);
	tcase_add_test(tc, test_controller_refused_create_keeps_the_volume_credentials);
	tcase_add_test(tc, test_controller_delete_fails_when_the_dataset_stays);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}

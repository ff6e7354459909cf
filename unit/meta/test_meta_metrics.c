/*
 * test_meta_metrics.c - granary-meta's /metrics text from a real registry
 * (a file:// dataset listed from a temporary tree) and membership.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fileio.h"
#include "meta/meta_metrics.h"
#include "unit/check_main.h"

START_TEST(test_meta_metrics_datasets_by_state_and_workers_caches)
{
	char root[] = "/tmp/granary-meta-metrics-XXXXXX", data[128], src[128], file[160], uri[160];
	struct membership_options mopt = { .interval_ms = 1000, .expiry_ms = 3000 };
	struct registry_options opt = { 0 };
	Granary__V1__DatasetSpec spec;
	Granary__V1__DatasetOptions dopt;
	struct registry *reg = NULL;
	struct membership *mem = NULL;
	struct registry_dataset d;
	struct metrics_buf b = { 0 };
	struct error err;
	uint64_t version;
	char cmd[200];

	ck_assert_ptr_nonnull(mkdtemp(root));
	snprintf(data, sizeof(data), "%s/data", root);
	snprintf(src, sizeof(src), "%s/src", root);
	snprintf(file, sizeof(file), "%s/a.bin", src);
	snprintf(uri, sizeof(uri), "file://%s/", src);
	ck_assert_int_eq(mkdir(src, 0755), 0);
	ck_assert_int_eq(fileio_replace(file, "0123456789", 10, 0644, &err), ERR_OK);
	opt.data_dir = data;
	opt.file_roots = root;
	ck_assert_int_eq(registry_open(&opt, &reg, &err), ERR_OK);
	ck_assert_int_eq(membership_new(&mopt, &mem, &err), ERR_OK);

	granary__v1__dataset_spec__init(&spec);
	granary__v1__dataset_options__init(&dopt);
	spec.name = "ten-bytes";
	spec.source_uri = uri;
	spec.options = &dopt;
	ck_assert_msg(registry_register(reg, &spec, &d, &err) == ERR_OK, "%s", err.msg);
	registry_dataset_release(&d);
	ck_assert_int_eq(membership_heartbeat(mem, "node-a", "10.0.0.1:7480", 1, 1000, 250,
					      &version, &err),
			 ERR_OK);

	ck_assert_int_eq(meta_metrics_render(reg, mem, NULL, &b, &err), ERR_OK);
	ck_assert_ptr_nonnull(strstr(b.data, "# TYPE granary_meta_datasets gauge\n"
					     "granary_meta_datasets{state=\"registering\"} 0\n"
					     "granary_meta_datasets{state=\"ready\"} 1\n"
					     "granary_meta_datasets{state=\"refreshing\"} 0\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "\ngranary_meta_dataset_files{dataset=\"ten-bytes\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "\ngranary_meta_dataset_bytes{dataset=\"ten-bytes\"} 10\n"));
	ck_assert_ptr_nonnull(
		strstr(b.data, "\ngranary_meta_dataset_generation{dataset=\"ten-bytes\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "\ngranary_meta_workers 1\n"));
	ck_assert_ptr_nonnull(
		strstr(b.data, "\ngranary_meta_worker_capacity_bytes{worker=\"node-a\"} 1000\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "\ngranary_meta_worker_used_bytes{worker=\"node-a\"} 250\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "\ngranary_meta_datasets_damaged 0\n"));
	/* Outside Kubernetes no token is judged. */
	ck_assert_ptr_null(strstr(b.data, "granary_meta_worker_token_checks_total"));
	metrics_buf_release(&b);
	membership_free(mem);
	registry_free(reg);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Every review answers: not authenticated. */
static enum error_code refusing_review(const char *token, const char *audience,
				       struct kubeapi_token_review *out, void *arg,
				       struct error *err)
{
	(void)token;
	(void)audience;
	(void)arg;
	(void)err;
	memset(out, 0, sizeof(*out));
	return ERR_OK;
}

/* In Kubernetes: the workers' tokens judged, by what judged them. */
START_TEST(test_meta_metrics_worker_token_checks)
{
	struct worker_identity_config cfg = { .ns = "granary-system",
					      .service_account = "granary-worker",
					      .audience = "granary-meta",
					      .review = refusing_review };
	struct membership_options mopt = { .interval_ms = 1000, .expiry_ms = 3000 };
	char root[] = "/tmp/granary-meta-metrics-XXXXXX", cmd[200];
	struct registry_options opt = { .data_dir = root };
	struct metrics_buf b = { 0 };
	struct worker_identity *wi = NULL;
	struct membership *mem = NULL;
	struct registry *reg = NULL;
	struct error err;

	ck_assert_ptr_nonnull(mkdtemp(root));
	ck_assert_int_eq(registry_open(&opt, &reg, &err), ERR_OK);
	ck_assert_int_eq(membership_new(&mopt, &mem, &err), ERR_OK);
	ck_assert_int_eq(worker_identity_new(&cfg, &wi, &err), ERR_OK);
	ck_assert_int_eq(worker_identity_check(wi, "a-token", "node-a", &err), ERR_UNAUTHENTICATED);
	ck_assert_int_eq(meta_metrics_render(reg, mem, wi, &b, &err), ERR_OK);
	ck_assert_ptr_nonnull(strstr(b.data, "# TYPE granary_meta_worker_token_checks_total counter\n"
					     "granary_meta_worker_token_checks_total{by=\"review\"} 1\n"
					     "granary_meta_worker_token_checks_total{by=\"kept\"} 0\n"
					     "granary_meta_worker_token_checks_total{by=\"kept_stale\"} 0\n"));
	metrics_buf_release(&b);
	worker_identity_free(wi);
	membership_free(mem);
	registry_free(reg);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("meta_metrics");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_meta_metrics_datasets_by_state_and_workers_caches);
	tcase_add_test(tc, test_meta_metrics_worker_token_checks);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}

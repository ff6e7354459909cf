/*
 * test_cachegate.c - what a gated pod asks, and the verdict on it given
 * its Datasets (meta/cachegate.c, the pure part); the controller's thread
 * stopped while it backs off, against a fake apiserver that refuses every
 * call (unit/kube/fake_apiserver.h: a real one cannot be made to fail
 * every call on demand). The controller's work runs in
 * e2e/meta/test_meta_kube and e2e/kube/test_datasets.
 */
#include <jansson.h>
#include <stdatomic.h>
#include <string.h>

#include "common/retry.h"
#include "meta/cachegate.h"
#include "unit/check_main.h"
#include "unit/kube/fake_apiserver.h"

static json_t *pod(const char *labels, const char *annotations, const char *gates)
{
	char text[2048];
	json_error_t jerr;
	json_t *o;

	snprintf(text, sizeof(text),
		 "{\"metadata\": {\"namespace\": \"team\", \"name\": \"trainer\", \"labels\": %s,"
		 " \"annotations\": %s},"
		 " \"spec\": {\"schedulingGates\": %s, \"volumes\": ["
		 "  {\"name\": \"data\", \"persistentVolumeClaim\": {\"claimName\": \"imagenet\"}},"
		 "  {\"name\": \"tmp\", \"emptyDir\": {}},"
		 "  {\"name\": \"val\", \"persistentVolumeClaim\": {\"claimName\": \"val\"}}]}}",
		 labels, annotations, gates);
	o = json_loads(text, 0, &jerr);
	ck_assert_msg(o != NULL, "%s", jerr.text);
	return o;
}

static json_t *dataset(const char *name, const char *phase, long long bytes, long long cached)
{
	return json_pack("{s:{s:s}, s:{s:s, s:I, s:I, s:s}}", "metadata", "name", name, "status",
			 "phase", phase, "bytes", bytes, "cachedBytes", cached, "message",
			 "no such bucket");
}

START_TEST(test_cachegate_reads_the_ask_the_gate_and_the_claims)
{
	json_t *p = pod("{\"granary.io/wait-for-cache\": \"90\"}",
			"{\"granary.io/wait-for-cache-seconds\": \"600\"}",
			"[{\"name\": \"other\"}, {\"name\": \"granary.io/cache\"}]");
	struct cachegate_ask ask;
	const char *claims[4];
	struct error err;

	ck_assert_int_eq(cachegate_ask(p, &ask, &err), ERR_OK);
	ck_assert_uint_eq(ask.percent, 90);
	ck_assert_uint_eq(ask.timeout_s, 600);
	ck_assert_int_eq(cachegate_index(p), 1);
	ck_assert_uint_eq(cachegate_claims(p, claims, 4), 2);
	ck_assert_str_eq(claims[0], "imagenet");
	ck_assert_str_eq(claims[1], "val");
	ck_assert_uint_eq(cachegate_claims(p, claims, 1), 1);
	json_decref(p);

	p = pod("{\"granary.io/wait-for-cache\": \"100\"}", "{}", "[]");
	ck_assert_int_eq(cachegate_ask(p, &ask, &err), ERR_OK);
	ck_assert_uint_eq(ask.timeout_s, CACHEGATE_TIMEOUT_S);
	ck_assert_int_eq(cachegate_index(p), -1);
	json_decref(p);

	static const char *const bad[][2] = {
		{ "{\"granary.io/wait-for-cache\": \"0\"}", "{}" },
		{ "{\"granary.io/wait-for-cache\": \"101\"}", "{}" },
		{ "{\"granary.io/wait-for-cache\": \"90%\"}", "{}" },
		{ "{}", "{}" },
		{ "{\"granary.io/wait-for-cache\": \"50\"}",
		  "{\"granary.io/wait-for-cache-seconds\": \"soon\"}" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p = pod(bad[i][0], bad[i][1], "[]");
		ck_assert_int_eq(cachegate_ask(p, &ask, &err), ERR_INVALID);
		ck_assert_msg(strstr(err.msg, i < 4 ? "label granary.io/wait-for-cache"
						    : "annotation granary.io/wait-for-cache-seconds"),
			      "%s", err.msg);
		json_decref(p);
	}
}
END_TEST

START_TEST(test_cachegate_judges_every_dataset_of_the_pod)
{
	const struct cachegate_ask ask = { .percent = 90, .timeout_s = 600 };
	const char *claims[] = { "imagenet", "val" };
	json_t *ds[2];
	const char *reason = NULL;
	char msg[512];

	/* one Dataset at 50%: wait, and say so */
	ds[0] = dataset("imagenet", "Ready", 1000, 500);
	ds[1] = dataset("val", "Ready", 100, 100);
	ck_assert_int_eq(cachegate_judge(&ask, claims, ds, 2, 10, &reason, msg, sizeof(msg)),
			 CACHEGATE_WAIT);
	ck_assert_str_eq(reason, "WaitingForCache");
	ck_assert_msg(strstr(msg, "Dataset imagenet 50% cached; Dataset val 100% cached; 90% asked"),
		      "%s", msg);
	/* past its wait: opened, with a warning */
	ck_assert_int_eq(cachegate_judge(&ask, claims, ds, 2, 600, &reason, msg, sizeof(msg)),
			 CACHEGATE_OPEN_WARNING);
	ck_assert_str_eq(reason, "CacheWaitTimedOut");
	json_decref(ds[0]);
	/* both there: opened */
	ds[0] = dataset("imagenet", "Refreshing", 1000, 900);
	ck_assert_int_eq(cachegate_judge(&ask, claims, ds, 2, 10, &reason, msg, sizeof(msg)),
			 CACHEGATE_OPEN);
	ck_assert_str_eq(reason, "DatasetCached");
	json_decref(ds[0]);
	/* still listing: wait */
	ds[0] = dataset("imagenet", "Listing", 0, 0);
	ck_assert_int_eq(cachegate_judge(&ask, claims, ds, 2, 10, &reason, msg, sizeof(msg)),
			 CACHEGATE_WAIT);
	ck_assert_msg(strstr(msg, "Dataset imagenet is Listing"), "%s", msg);
	json_decref(ds[0]);
	/* Failed: opened at once, saying why */
	ds[0] = dataset("imagenet", "Failed", 0, 0);
	ck_assert_int_eq(cachegate_judge(&ask, claims, ds, 2, 10, &reason, msg, sizeof(msg)),
			 CACHEGATE_OPEN_WARNING);
	ck_assert_str_eq(reason, "DatasetFailed");
	ck_assert_msg(strstr(msg, "Dataset imagenet (claim imagenet) is Failed: no such bucket"),
		      "%s", msg);
	json_decref(ds[0]);
	/* an empty Dataset counts as cached; a claim that is no Dataset's is passed over */
	ds[0] = NULL;
	json_decref(ds[1]);
	ds[1] = dataset("val", "Ready", 0, 0);
	ck_assert_int_eq(cachegate_judge(&ask, claims, ds, 2, 10, &reason, msg, sizeof(msg)),
			 CACHEGATE_OPEN);
	/* no Dataset at all: nothing to wait for */
	json_decref(ds[1]);
	ds[1] = NULL;
	ck_assert_int_eq(cachegate_judge(&ask, claims, ds, 2, 10, &reason, msg, sizeof(msg)),
			 CACHEGATE_OPEN_WARNING);
	ck_assert_str_eq(reason, "NoDataset");
	/* cached bytes over the total (identical objects) count as 100% */
	ds[0] = dataset("imagenet", "Ready", 100, 150);
	ck_assert_int_eq(cachegate_judge(&(struct cachegate_ask){ 100, 60 }, claims, ds, 1, 0,
					 &reason, msg, sizeof(msg)),
			 CACHEGATE_OPEN);
	ck_assert_msg(strstr(msg, "Dataset imagenet 100% cached"), "%s", msg);
	json_decref(ds[0]);
}
END_TEST

static atomic_bool sigterm;

static bool stop_fn(void)
{
	return sigterm;
}

/*
 * The lists of gated pods are refused at 0, 0.5, 1.5 and 3.5 s, and the
 * gate then waits 4 s before the next. SIGTERM as meta/main.c handles it
 * (the flag, then cachegate_stop): the gate ends at once, not when the
 * 4 s are up, and asks nothing more.
 */
START_TEST(test_cachegate_stop_ends_a_backoff_at_once)
{
	struct cachegate_config cfg = { .mirror_ns = "granary-system", .stop = stop_fn };
	struct cachegate *g = NULL;
	struct error err;
	struct fake f;
	char token[64];
	uint64_t t0, took;

	fake_start(&f, fake_refuse_all);
	cfg.kube = fake_client_new(&f, token, sizeof(token));
	sigterm = false;
	ck_assert_msg(cachegate_start(&cfg, &g, &err) == ERR_OK, "%s", err.msg);
	ck_assert_msg(fake_wait_requests(&f, 4, 20000), "%u lists in 20 s", (unsigned)f.n);

	t0 = retry_now_ms();
	sigterm = true;
	cachegate_stop(g);
	took = retry_now_ms() - t0;
	ck_assert_msg(took < 1000, "the gate took %llu ms to stop in a backoff of 4000 ms",
		      (unsigned long long)took);
	ck_assert_uint_eq(f.n, 4);
	kubeapi_free(cfg.kube);
	fake_stop(&f);
	unlink(token);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cachegate");
	TCase *tc = tcase_create("core");
	TCase *controller = tcase_create("controller");

	tcase_add_test(tc, test_cachegate_reads_the_ask_the_gate_and_the_claims);
	tcase_add_test(tc, test_cachegate_judges_every_dataset_of_the_pod);
	suite_add_tcase(s, tc);
	tcase_add_test(controller, test_cachegate_stop_ends_a_backoff_at_once);
	suite_add_tcase(s, controller);
	return check_main_run(s);
}

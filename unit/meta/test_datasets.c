/*
 * test_datasets.c - the Dataset controller's thread (meta/datasets.c)
 * against a fake apiserver that refuses every call
 * (unit/kube/fake_apiserver.h: a real one cannot be made to fail every
 * call on demand): stopped while it backs off, it ends at once. Its work
 * against a real apiserver is e2e/meta/test_meta_kube's.
 */
#include <stdatomic.h>
#include <string.h>

#include "common/retry.h"
#include "meta/datasets.h"
#include "unit/check_main.h"
#include "unit/kube/fake_apiserver.h"

static atomic_bool sigterm;

static bool stop_fn(void)
{
	return sigterm;
}

/*
 * The lists are refused at 0, 0.5, 1.5 and 3.5 s, and the controller then
 * waits 4 s before the next. SIGTERM as meta/main.c handles it (the flag,
 * then datasets_stop): the controller ends at once, not when the 4 s are
 * up, and asks nothing more.
 */
START_TEST(test_datasets_stop_ends_a_backoff_at_once)
{
	char token[64], dir[64] = "/tmp/granary-unit-XXXXXX";
	struct datasets_config dc = { .driver = "csi.granary.io", .stop = stop_fn };
	struct datasets *d = NULL;
	struct error err;
	struct fake f;
	uint64_t t0, took;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	dc.credentials_dir = dir;
	fake_start(&f, fake_refuse_all);
	dc.kube = fake_client_new(&f, token, sizeof(token));
	sigterm = false;
	ck_assert_msg(datasets_start(&dc, &d, &err) == ERR_OK, "%s", err.msg);
	ck_assert_msg(fake_wait_requests(&f, 4, 20000), "%u lists in 20 s", (unsigned)f.n);

	t0 = retry_now_ms();
	sigterm = true;
	ck_assert(datasets_stop(d, 0));
	took = retry_now_ms() - t0;
	ck_assert_msg(took < 1000, "the controller took %llu ms to stop in a backoff of 4000 ms",
		      (unsigned long long)took);
	ck_assert_uint_eq(f.n, 4);
	kubeapi_free(dc.kube);
	fake_stop(&f);
	unlink(token);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("datasets");
	TCase *tc = tcase_create("controller");

	tcase_add_test(tc, test_datasets_stop_ends_a_backoff_at_once);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}

/*
 * test_dsmirror.c - a StorageClass volume's Dataset (csi/dsmirror.c)
 * deleted against a fake apiserver (unit/kube/fake_apiserver.h: a real
 * one cannot be made to fail or hang on demand): what DeleteVolume then
 * answers, the CSI spec's code for each outcome.
 */
#include <string.h>

#include "csi/dsmirror.h"
#include "unit/check_main.h"
#include "unit/kube/fake_apiserver.h"

#define PATH "/apis/granary.io/v1alpha1/namespaces/granary-system/datasets/pvc-1"

static int status_of(unsigned n, const char *target, int status, char **body)
{
	(void)n;
	ck_assert_str_eq(target, PATH);
	*body = fake_text("{\"kind\":\"Status\",\"message\":\"as the test says\"}");
	return status;
}

static int ok_200(unsigned n, const char *target, char **body)
{
	return status_of(n, target, 200, body);
}

static int gone_404(unsigned n, const char *target, char **body)
{
	return status_of(n, target, 404, body);
}

static int busy_429(unsigned n, const char *target, char **body)
{
	return status_of(n, target, 429, body);
}

static int broken_500(unsigned n, const char *target, char **body)
{
	return status_of(n, target, 500, body);
}

static int refused_403(unsigned n, const char *target, char **body)
{
	return status_of(n, target, 403, body);
}

static int hang(unsigned n, const char *target, char **body)
{
	(void)n, (void)target, (void)body;
	return FAKE_HANG;
}

/* dsmirror_delete of pvc-1 against a fake answering as answer. */
static enum error_code delete_with(fake_answer_fn answer, struct error *err)
{
	struct kubeapi *k;
	struct fake f;
	char token[64];
	enum error_code rc;

	fake_start(&f, answer);
	k = fake_client_new(&f, token, sizeof(token));
	kubeapi_set_timeout(k, 300);
	rc = dsmirror_delete(k, "granary-system", "pvc-1", err);
	kubeapi_free(k);
	fake_stop(&f);
	unlink(token);
	ck_assert_uint_eq(f.n, 1);
	return rc;
}

/* Deleted, or gone already: success (DeleteVolume is idempotent). */
START_TEST(test_dsmirror_delete_done_or_gone)
{
	struct error err;

	ck_assert_int_eq(delete_with(ok_200, &err), ERR_OK);
	ck_assert_int_eq(delete_with(gone_404, &err), ERR_OK);
}
END_TEST

/* What a retry may mend is UNAVAILABLE; the rest INTERNAL; each names the
 * Dataset, the HTTP status and the apiserver's message. */
START_TEST(test_dsmirror_delete_failures_and_their_codes)
{
	struct error err;

	ck_assert_int_eq(delete_with(broken_500, &err), ERR_UNAVAILABLE);
	ck_assert_str_eq(err.msg, "delete Dataset granary-system/pvc-1: HTTP 500: as the test says");
	ck_assert_int_eq(delete_with(busy_429, &err), ERR_UNAVAILABLE);
	ck_assert_int_eq(delete_with(refused_403, &err), ERR_INTERNAL);
	ck_assert_str_eq(err.msg, "delete Dataset granary-system/pvc-1: HTTP 403: as the test says");
	ck_assert_int_eq(delete_with(hang, &err), ERR_UNAVAILABLE);
	ck_assert_msg(strstr(err.msg, PATH ": no answer within 300 ms"), "%s", err.msg);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("csi_dsmirror");
	TCase *tc = tcase_create("delete");

	tcase_add_test(tc, test_dsmirror_delete_done_or_gone);
	tcase_add_test(tc, test_dsmirror_delete_failures_and_their_codes);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}

/*
 * test_kubeapi.c - the pure parts of the Kubernetes API client: a
 * TokenReview answer read into its verdict.
 */
#include <string.h>

#include "kube/kubeapi.h"
#include "unit/check_main.h"

static void parse(const char *text, const char *audience, struct kubeapi_token_review *out)
{
	json_t *j = json_loads(text, 0, NULL);

	ck_assert_ptr_nonnull(j);
	kubeapi_token_review_parse(j, audience, out);
	json_decref(j);
}

static void expect(const struct kubeapi_token_review *r, bool authenticated, bool audience_ok,
		   const char *username, const char *node_name, const char *error)
{
	ck_assert_int_eq(r->authenticated, authenticated);
	ck_assert_int_eq(r->audience_ok, audience_ok);
	ck_assert_str_eq(r->username, username);
	ck_assert_str_eq(r->node_name, node_name);
	ck_assert_str_eq(r->error, error);
}

START_TEST(test_kubeapi_token_review_reads_a_pods_token)
{
	struct kubeapi_token_review r;

	parse("{\"kind\":\"TokenReview\",\"spec\":{\"token\":\"t\",\"audiences\":[\"granary-meta\"]},"
	      "\"status\":{\"authenticated\":true,\"audiences\":[\"granary-meta\"],"
	      "\"user\":{\"username\":\"system:serviceaccount:gs:granary-worker\","
	      "\"groups\":[\"system:serviceaccounts\"],"
	      "\"extra\":{\"authentication.kubernetes.io/pod-name\":[\"granary-worker-x1\"],"
	      "\"authentication.kubernetes.io/node-name\":[\"node-a\"]}}}}",
	      "granary-meta", &r);
	expect(&r, true, true, "system:serviceaccount:gs:granary-worker", "node-a", "");
}
END_TEST

START_TEST(test_kubeapi_token_review_refused_token)
{
	struct kubeapi_token_review r;

	parse("{\"status\":{\"authenticated\":false,\"error\":\"token lookup failed\"}}",
	      "granary-meta", &r);
	expect(&r, false, false, "", "", "token lookup failed");
}
END_TEST

/* No audiences in the answer: the token is the apiserver's own, not ours. */
START_TEST(test_kubeapi_token_review_audience_must_be_named)
{
	struct kubeapi_token_review r;

	parse("{\"status\":{\"authenticated\":true,\"user\":{\"username\":\"u\"}}}", "granary-meta",
	      &r);
	ck_assert(r.authenticated);
	ck_assert(!r.audience_ok);
	parse("{\"status\":{\"authenticated\":true,\"audiences\":[\"other\",\"granary-meta\"]}}",
	      "granary-meta", &r);
	ck_assert(r.audience_ok);
	parse("{\"status\":{\"authenticated\":true,\"audiences\":[\"other\"]}}", "granary-meta", &r);
	ck_assert(!r.audience_ok);
}
END_TEST

/* Fields of another type read as false or "". */
START_TEST(test_kubeapi_token_review_odd_types)
{
	struct kubeapi_token_review r;

	parse("{\"status\":{\"authenticated\":\"true\",\"audiences\":\"granary-meta\","
	      "\"user\":{\"username\":7,\"extra\":{\"authentication.kubernetes.io/node-name\":"
	      "\"node-a\"}}}}",
	      "granary-meta", &r);
	expect(&r, false, false, "", "", "");
	parse("[]", "granary-meta", &r);
	expect(&r, false, false, "", "", "");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kubeapi");
	TCase *tc = tcase_create("token_review");

	tcase_add_test(tc, test_kubeapi_token_review_reads_a_pods_token);
	tcase_add_test(tc, test_kubeapi_token_review_refused_token);
	tcase_add_test(tc, test_kubeapi_token_review_audience_must_be_named);
	tcase_add_test(tc, test_kubeapi_token_review_odd_types);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}

/*
 * test_kubeapi.c - the Kubernetes API client: a TokenReview answer read
 * into its verdict; lists page by page and calls to an apiserver that
 * hangs, against a fake apiserver in this process (unit/kube/fake_apiserver.h:
 * a real one cannot be made to let a continue token expire, to send a page
 * over the cap on one answer, or to hang, when asked); a token that cannot
 * be read.
 */
#include <string.h>

#include "common/retry.h"
#include "kube/kubeapi.h"
#include "unit/check_main.h"
#include "unit/kube/fake_apiserver.h"

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

/* ---- lists, against a fake apiserver ------------------------------------- */

/* kubeapi_list of path from the fake: its status, *list the answer. */
static enum error_code list(fake_answer_fn answer, struct fake *f, const char *path, long *status,
			    json_t **out, struct error *err)
{
	char token[64];
	struct kubeapi *k;
	enum error_code rc;

	fake_start(f, answer);
	k = fake_client_new(f, token, sizeof(token));
	rc = kubeapi_list(k, path, status, out, err);
	kubeapi_free(k);
	fake_stop(f);
	unlink(token);
	return rc;
}

/* A request the test did not ask for: 400. */
static int unexpected(char **body)
{
	*body = fake_text("{\"kind\":\"Status\",\"message\":\"unexpected request\"}");
	return 400;
}

/* list holds the items numbered want ("1,2,3") under resourceVersion rv
 * and no continue token; released. */
static void expect_items(json_t *list, const char *want, const char *rv)
{
	json_t *meta = json_object_get(list, "metadata"), *item;
	char got[64] = "";
	size_t i, at = 0;

	json_array_foreach(json_object_get(list, "items"), i, item)
		at += (size_t)snprintf(got + at, sizeof(got) - at, "%s%lld", i ? "," : "",
				       (long long)json_integer_value(json_object_get(item, "n")));
	ck_assert_str_eq(got, want);
	ck_assert_str_eq(json_string_value(json_object_get(meta, "resourceVersion")) ?: "", rv);
	ck_assert_ptr_null(json_object_get(meta, "continue"));
	ck_assert_ptr_null(json_object_get(meta, "remainingItemCount"));
	json_decref(list);
}

static int two_pages(unsigned n, const char *target, char **body)
{
	(void)n;
	if (strcmp(target, "/l?x=1&limit=250") == 0) {
		*body = fake_text("{\"kind\":\"List\",\"metadata\":{\"resourceVersion\":\"7\","
			          "\"continue\":\"a+b/=\",\"remainingItemCount\":1},"
			          "\"items\":[{\"n\":1},{\"n\":2}]}");
		return 200;
	}
	if (strcmp(target, "/l?x=1&limit=250&continue=a%2Bb%2F%3D") == 0) {
		*body = fake_text(
			"{\"metadata\":{\"resourceVersion\":\"7\"},\"items\":[{\"n\":3}]}");
		return 200;
	}
	return unexpected(body);
}

/* The pages are asked with limit and the last page's continue token
 * (escaped), and merged under the first page's metadata. */
START_TEST(test_kubeapi_list_merges_the_pages)
{
	struct fake f;
	struct error err;
	json_t *l = NULL;
	long status = 0;

	ck_assert_int_eq(list(two_pages, &f, "/l?x=1", &status, &l, &err), ERR_OK);
	ck_assert_int_eq(status, 200);
	ck_assert_uint_eq(f.n, 2);
	expect_items(l, "1,2,3", "7");
}
END_TEST

/* Snapshot 7 expires after its first page; snapshot 9 is listed whole. */
static int expiring(unsigned n, const char *target, char **body)
{
	(void)target;
	switch (n) {
	case 0:
		*body = fake_text("{\"metadata\":{\"resourceVersion\":\"7\",\"continue\":\"c7\"},"
			          "\"items\":[{\"n\":1}]}");
		return 200;
	case 1:
		*body = fake_text("{\"kind\":\"Status\",\"code\":410,\"reason\":\"Expired\","
			          "\"message\":\"the provided continue parameter is too old\"}");
		return 410;
	case 2:
		*body = fake_text("{\"metadata\":{\"resourceVersion\":\"9\",\"continue\":\"c9\"},"
			          "\"items\":[{\"n\":10}]}");
		return 200;
	default:
		*body = fake_text(
			"{\"metadata\":{\"resourceVersion\":\"9\"},\"items\":[{\"n\":11}]}");
		return 200;
	}
}

START_TEST(test_kubeapi_list_expired_continue_lists_again)
{
	struct fake f;
	struct error err;
	json_t *l = NULL;
	long status = 0;

	ck_assert_int_eq(list(expiring, &f, "/l", &status, &l, &err), ERR_OK);
	ck_assert_int_eq(status, 200);
	ck_assert_uint_eq(f.n, 4);
	ck_assert_str_eq(f.targets[0], "/l?limit=250");
	ck_assert_str_eq(f.targets[1], "/l?limit=250&continue=c7");
	ck_assert_str_eq(f.targets[2], "/l?limit=250");
	ck_assert_str_eq(f.targets[3], "/l?limit=250&continue=c9");
	expect_items(l, "10,11", "9");
}
END_TEST

static int always_expiring(unsigned n, const char *target, char **body)
{
	(void)target;
	return expiring(n % 2, target, body);
}

/* A token that keeps expiring: the 410 answer, after 3 lists again. */
START_TEST(test_kubeapi_list_gives_up_after_three_restarts)
{
	struct fake f;
	struct error err;
	json_t *l = NULL;
	long status = 0;

	ck_assert_int_eq(list(always_expiring, &f, "/l", &status, &l, &err), ERR_OK);
	ck_assert_int_eq(status, 410);
	ck_assert_uint_eq(f.n, 8);
	ck_assert_str_eq(kubeapi_message(l), "the provided continue parameter is too old");
	json_decref(l);
}
END_TEST

/* A page of limit items, each of item_bytes. */
static char *page_of(unsigned limit, size_t item_bytes)
{
	json_t *items = json_array(), *page;
	char *pad = malloc(item_bytes + 1), *out;

	ck_assert_ptr_nonnull(pad);
	memset(pad, 'x', item_bytes);
	pad[item_bytes] = '\0';
	for (unsigned i = 0; i < limit; i++)
		json_array_append_new(items, json_pack("{s:i, s:s}", "n", (int)i + 1, "pad", pad));
	page = json_pack("{s:{s:s}, s:o}", "metadata", "resourceVersion", "5", "items", items);
	out = json_dumps(page, JSON_COMPACT);
	json_decref(page);
	free(pad);
	ck_assert_ptr_nonnull(out);
	return out;
}

/* Items of 20 KiB: a page of 250 is over 4 MiB, one of 125 is not. */
static int large_items(unsigned n, const char *target, char **body)
{
	unsigned limit = 0;

	(void)n;
	if (sscanf(target, "/l?limit=%u", &limit) != 1)
		return unexpected(body);
	*body = page_of(limit, 20 << 10);
	return 200;
}

START_TEST(test_kubeapi_list_halves_a_page_too_large)
{
	struct fake f;
	struct error err;
	json_t *l = NULL;
	long status = 0;

	ck_assert_int_eq(list(large_items, &f, "/l", &status, &l, &err), ERR_OK);
	ck_assert_int_eq(status, 200);
	ck_assert_uint_eq(f.n, 2);
	ck_assert_str_eq(f.targets[1], "/l?limit=125");
	ck_assert_uint_eq(json_array_size(json_object_get(l, "items")), 125);
	json_decref(l);
}
END_TEST

static int huge_item(unsigned n, const char *target, char **body)
{
	(void)n, (void)target;
	*body = page_of(1, 5 << 20);
	return 200;
}

/* One object over 4 MiB: asked down to a page of one, then refused. */
START_TEST(test_kubeapi_list_object_over_the_cap)
{
	struct fake f;
	struct error err;
	json_t *l = NULL;
	long status = 0;

	ck_assert_int_eq(list(huge_item, &f, "/l", &status, &l, &err), ERR_NO_SPACE);
	ck_assert_uint_eq(f.n, 8);
	ck_assert_str_eq(f.targets[7], "/l?limit=1");
	ck_assert_msg(strstr(err.msg, "/l?limit=1: answer larger than 4 MiB"), "%s", err.msg);
	ck_assert_ptr_null(l);
}
END_TEST

/* ---- the token --------------------------------------------------------------- */

/* A token file that cannot be read: the error names it, once. */
START_TEST(test_kubeapi_missing_token_names_its_file)
{
	struct kubeapi *k = NULL;
	struct error err;
	long status = 0;
	const char *at;

	ck_assert_int_eq(kubeapi_new("http://127.0.0.1:1", "/nonexistent/granary/token", "", &k,
				     &err),
			 ERR_OK);
	ck_assert_int_eq(kubeapi_call(k, "GET", "/api", NULL, &status, NULL, &err), ERR_NOT_FOUND);
	ck_assert_int_eq(status, 0);
	ck_assert_msg(strstr(err.msg, "'/nonexistent/granary/token'"), "%s", err.msg);
	at = strstr(err.msg, "the service account token: ");
	ck_assert_msg(at == err.msg && !strstr(at + 1, "the service account token"), "%s", err.msg);
	kubeapi_free(k);
}
END_TEST

/* ---- the timeout ------------------------------------------------------- */

/* An apiserver that takes every request and never answers. */
static int hang(unsigned n, const char *target, char **body)
{
	(void)n, (void)target, (void)body;
	return FAKE_HANG;
}

/* A client of a fake that hangs, with a timeout of timeout_ms. */
struct hung {
	struct fake f;
	char token[64];
	struct kubeapi *k;
};

static void hung_start(struct hung *h, uint64_t timeout_ms)
{
	fake_start(&h->f, hang);
	h->k = fake_client_new(&h->f, h->token, sizeof(h->token));
	kubeapi_set_timeout(h->k, timeout_ms);
}

static void hung_stop(struct hung *h)
{
	kubeapi_free(h->k);
	fake_stop(&h->f);
	unlink(h->token);
}

/* A call's time since t0_ms: its timeout (300 ms), not much more. */
static void expect_took_300_ms(uint64_t t0_ms)
{
	uint64_t took = retry_now_ms() - t0_ms;

	ck_assert_msg(took >= 300 && took < 2000, "the call took %llu ms with a timeout of 300 ms",
		      (unsigned long long)took);
}

/*
 * The apiserver takes the request and never answers (a fake: a real one
 * cannot be made to hang on demand): the call fails once its timeout is
 * up, the error naming the call and the timeout, and the thread is free.
 */
START_TEST(test_kubeapi_call_to_a_hung_apiserver_times_out)
{
	struct hung h;
	struct error err;
	char want[256];
	long status = -1;
	uint64_t t0;

	hung_start(&h, 300);
	t0 = retry_now_ms();
	ck_assert_int_eq(kubeapi_call(h.k, "GET", "/api/v1/namespaces/ns/pods/p", NULL, &status,
				      NULL, &err),
			 ERR_UNAVAILABLE);
	expect_took_300_ms(t0);
	ck_assert_int_eq(status, 0);
	snprintf(want, sizeof(want), "GET %s/api/v1/namespaces/ns/pods/p: no answer within 300 ms",
		 h.f.url);
	ck_assert_msg(strstr(err.msg, want), "%s", err.msg);
	ck_assert_uint_eq(h.f.n, 1);
	hung_stop(&h);
}
END_TEST

/* A TokenReview the apiserver does not answer: the same, and the error
 * holds no part of the token. */
START_TEST(test_kubeapi_token_review_to_a_hung_apiserver_times_out)
{
	static const char token[] = "eyJhbGciOiJSUzI1NiJ9.cGF5bG9hZC1zZWNyZXQ.c2lnbmF0dXJl";
	struct kubeapi_token_review r;
	struct hung h;
	struct error err;
	uint64_t t0;

	hung_start(&h, 300);
	t0 = retry_now_ms();
	ck_assert_int_eq(kubeapi_token_review(h.k, token, "granary-meta", &r, &err),
			 ERR_UNAVAILABLE);
	expect_took_300_ms(t0);
	ck_assert_msg(strstr(err.msg, "POST ") &&
			      strstr(err.msg, "/apis/authentication.k8s.io/v1/tokenreviews: "
					      "no answer within 300 ms"),
		      "%s", err.msg);
	ck_assert_msg(!strstr(err.msg, "cGF5bG9hZC1zZWNyZXQ") && !strstr(err.msg, "eyJhbGci"),
		      "%s", err.msg);
	ck_assert(!r.authenticated);
	hung_stop(&h);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kubeapi");
	TCase *tc = tcase_create("token_review");
	TCase *token = tcase_create("token");
	TCase *lists = tcase_create("list");
	TCase *timeout = tcase_create("timeout");

	tcase_add_test(tc, test_kubeapi_token_review_reads_a_pods_token);
	tcase_add_test(tc, test_kubeapi_token_review_refused_token);
	tcase_add_test(tc, test_kubeapi_token_review_audience_must_be_named);
	tcase_add_test(tc, test_kubeapi_token_review_odd_types);
	suite_add_tcase(s, tc);
	tcase_add_test(token, test_kubeapi_missing_token_names_its_file);
	suite_add_tcase(s, token);
	tcase_add_test(lists, test_kubeapi_list_merges_the_pages);
	tcase_add_test(lists, test_kubeapi_list_expired_continue_lists_again);
	tcase_add_test(lists, test_kubeapi_list_gives_up_after_three_restarts);
	tcase_add_test(lists, test_kubeapi_list_halves_a_page_too_large);
	tcase_add_test(lists, test_kubeapi_list_object_over_the_cap);
	suite_add_tcase(s, lists);
	tcase_add_test(timeout, test_kubeapi_call_to_a_hung_apiserver_times_out);
	tcase_add_test(timeout, test_kubeapi_token_review_to_a_hung_apiserver_times_out);
	suite_add_tcase(s, timeout);
	return check_main_run(s);
}

/*
 * test_worker_identity.c - a Heartbeat's worker id against its pod's
 * token: each verdict and its status, the JWT expiry, the cache (one
 * review per token and minute, never past the token's expiry, bounded,
 * re-judged for every claim), and an apiserver away (the kept review
 * answers, for a while) or hung (it holds at most reviews_max threads).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/retry.h"
#include "meta/worker_identity.h"
#include "unit/check_main.h"

#define USER "system:serviceaccount:granary-system:granary-worker"
#define AUD "granary-meta"
#define NOW_MS 1700000000000ull

/* The fake apiserver: tokens "node-a", "node-b" ... are worker pods' on
 * that node; "other-sa" another account's; "bad" not authenticated;
 * "down" unreachable. A stand-in for kubeapi_token_review, whose own
 * timeout unit/kube/test_kubeapi tests: an apiserver that hangs is
 * one that answers nothing until the test lets it. */
struct fake {
	pthread_mutex_t mu;
	pthread_cond_t cond;    /* hanging or hang changed */
	unsigned calls;         /* protected by mu, and the rest */
	bool down;              /* every review: unreachable */
	bool refuse;            /* every review: not authenticated */
	bool hang;              /* a review waits while this holds, then is down */
	unsigned hanging;       /* reviews waiting so */
};

static enum error_code fake_review(const char *token, const char *audience,
				   struct kubeapi_token_review *out, void *arg, struct error *err)
{
	struct fake *f = arg;
	bool down, refuse;

	pthread_mutex_lock(&f->mu);
	f->calls++;
	if (f->hang) {
		f->hanging++;
		pthread_cond_broadcast(&f->cond);
		while (f->hang)
			pthread_cond_wait(&f->cond, &f->mu);
		f->hanging--;
		pthread_mutex_unlock(&f->mu);
		return error_set(err, ERR_UNAVAILABLE,
				 "POST https://10.0.0.1/apis: no answer within 10000 ms");
	}
	down = f->down;
	refuse = f->refuse;
	pthread_mutex_unlock(&f->mu);
	memset(out, 0, sizeof(*out));
	ck_assert_str_eq(audience, AUD);
	if (down || strcmp(token, "down") == 0)
		return error_set(err, ERR_UNAVAILABLE, "POST https://10.0.0.1/apis: timed out");
	if (refuse || strcmp(token, "bad") == 0) {
		snprintf(out->error, sizeof(out->error), "token lookup failed");
		return ERR_OK;
	}
	out->authenticated = true;
	out->audience_ok = true;
	if (strcmp(token, "other-sa") == 0) {
		snprintf(out->username, sizeof(out->username),
			 "system:serviceaccount:default:default");
		snprintf(out->node_name, sizeof(out->node_name), "node-a");
		return ERR_OK;
	}
	snprintf(out->username, sizeof(out->username), "%s", USER);
	/* "node-a.<anything>": a JWT-shaped token of a pod on node-a. */
	snprintf(out->node_name, sizeof(out->node_name), "%.*s", (int)strcspn(token, "."), token);
	return ERR_OK;
}

static struct fake fake;
static struct worker_identity *wi;

static void start(size_t cache_max, unsigned reviews_max)
{
	struct worker_identity_config cfg = {
		.ns = "granary-system",
		.service_account = "granary-worker",
		.audience = AUD,
		.review = fake_review,
		.review_arg = &fake,
		.cache_max = cache_max,
		.reviews_max = reviews_max,
	};
	struct error err;

	memset(&fake, 0, sizeof(fake));
	pthread_mutex_init(&fake.mu, NULL);
	pthread_cond_init(&fake.cond, NULL);
	ck_assert_int_eq(worker_identity_new(&cfg, &wi, &err), ERR_OK);
}

static void setup(void)
{
	start(0, 0);
}

static void teardown(void)
{
	worker_identity_free(wi);
	wi = NULL;
	pthread_cond_destroy(&fake.cond);
	pthread_mutex_destroy(&fake.mu);
}

static void fake_set(bool *what, bool on)
{
	pthread_mutex_lock(&fake.mu);
	*what = on;
	pthread_cond_broadcast(&fake.cond);
	pthread_mutex_unlock(&fake.mu);
}

static struct kubeapi_token_review review_of(const char *user, const char *node)
{
	struct kubeapi_token_review r = { .authenticated = true, .audience_ok = true };

	snprintf(r.username, sizeof(r.username), "%s", user);
	snprintf(r.node_name, sizeof(r.node_name), "%s", node);
	return r;
}

/* base64url without padding of text. */
static void b64url(const char *text, char *out)
{
	static const char abc[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t n = strlen(text), o = 0;

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned char)text[i] << 16;

		v |= i + 1 < n ? (unsigned char)text[i + 1] << 8 : 0;
		v |= i + 2 < n ? (unsigned char)text[i + 2] : 0;
		out[o++] = abc[(v >> 18) & 63];
		out[o++] = abc[(v >> 12) & 63];
		if (i + 1 < n)
			out[o++] = abc[(v >> 6) & 63];
		if (i + 2 < n)
			out[o++] = abc[v & 63];
	}
	out[o] = '\0';
}

/* A token "NODE.<payload>.sig" whose payload is payload_json. */
static void jwt(char *out, size_t size, const char *node, const char *payload_json)
{
	char body[512];

	b64url(payload_json, body);
	snprintf(out, size, "%s.%s.c2ln", node, body);
}

START_TEST(test_worker_identity_judge_accepts_its_nodes_pod)
{
	struct kubeapi_token_review r = review_of(USER, "node-a");
	struct error err;

	ck_assert_int_eq(worker_identity_judge(&r, USER, AUD, "node-a", &err), ERR_OK);
}
END_TEST

START_TEST(test_worker_identity_judge_refusals)
{
	struct kubeapi_token_review r = review_of(USER, "node-a");
	struct error err;

	/* Another node's worker pod claiming node-b. */
	ck_assert_int_eq(worker_identity_judge(&r, USER, AUD, "node-b", &err), ERR_PERMISSION);
	ck_assert_ptr_nonnull(strstr(err.msg, "worker 'node-b'"));
	ck_assert_ptr_nonnull(strstr(err.msg, "on node 'node-a'"));
	/* Another service account. */
	r = review_of("system:serviceaccount:default:default", "node-a");
	ck_assert_int_eq(worker_identity_judge(&r, USER, AUD, "node-a", &err), ERR_PERMISSION);
	ck_assert_ptr_nonnull(strstr(err.msg, "'system:serviceaccount:default:default'"));
	ck_assert_ptr_nonnull(strstr(err.msg, USER));
	/* A token bound to no pod (kubectl create token) names no node. */
	r = review_of(USER, "");
	ck_assert_int_eq(worker_identity_judge(&r, USER, AUD, "node-a", &err), ERR_PERMISSION);
	ck_assert_ptr_nonnull(strstr(err.msg, "names no node"));
	/* Not authenticated, or not for our audience. */
	r = review_of(USER, "node-a");
	r.audience_ok = false;
	ck_assert_int_eq(worker_identity_judge(&r, USER, AUD, "node-a", &err),
			 ERR_UNAUTHENTICATED);
	ck_assert_ptr_nonnull(strstr(err.msg, "audience '" AUD "'"));
	r.authenticated = false;
	snprintf(r.error, sizeof(r.error), "token has expired");
	ck_assert_int_eq(worker_identity_judge(&r, USER, AUD, "node-a", &err),
			 ERR_UNAUTHENTICATED);
	ck_assert_ptr_nonnull(strstr(err.msg, "token has expired"));
}
END_TEST

START_TEST(test_worker_identity_token_expiry_reads_exp)
{
	/* Payload lengths of every remainder mod 3, so every padding. */
	static const char *payloads[] = {
		"{\"exp\":1700000600}",
		"{\"exp\":1700000600 }",
		"{\"exp\":1700000600  }",
		"{\"aud\":[\"granary-meta\"],\"exp\":1700000600,\"iat\":1700000000,"
		"\"kubernetes.io\":{\"node\":{\"name\":\"node-a\"}}}",
	};
	static const char *unreadable[] = { "no-dots", "a..b", "a.!!!!.b", "a.x.b" };
	char token[1024];

	for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
		jwt(token, sizeof(token), "node-a", payloads[i]);
		ck_assert_int_eq(worker_identity_token_expiry(token), 1700000600);
	}
	/* No exp, or no payload to read one from. */
	jwt(token, sizeof(token), "node-a", "{\"iat\":1}");
	ck_assert_int_eq(worker_identity_token_expiry(token), 0);
	jwt(token, sizeof(token), "node-a", "not json");
	ck_assert_int_eq(worker_identity_token_expiry(token), 0);
	for (size_t i = 0; i < sizeof(unreadable) / sizeof(unreadable[0]); i++)
		ck_assert_msg(worker_identity_token_expiry(unreadable[i]) == 0, "%s", unreadable[i]);
}
END_TEST

START_TEST(test_worker_identity_without_a_token_is_unauthenticated)
{
	struct error err;

	ck_assert_int_eq(worker_identity_check_at(wi, NULL, "node-a", NOW_MS, &err),
			 ERR_UNAUTHENTICATED);
	ck_assert_ptr_nonnull(strstr(err.msg, META_IDENTITY_METADATA));
	ck_assert_int_eq(worker_identity_check_at(wi, "", "node-a", NOW_MS, &err),
			 ERR_UNAUTHENTICATED);
	ck_assert_uint_eq(fake.calls, 0);
}
END_TEST

START_TEST(test_worker_identity_reviews_once_a_minute)
{
	uint64_t reviews, hits, stale;
	struct error err;

	for (uint64_t t = 0; t < WORKER_IDENTITY_CACHE_MS; t += 5000)
		ck_assert_int_eq(worker_identity_check_at(wi, "node-a.x.y", "node-a", NOW_MS + t,
							  &err),
				 ERR_OK);
	ck_assert_uint_eq(fake.calls, 1);
	worker_identity_counts(wi, &reviews, &hits, &stale);
	ck_assert_uint_eq(reviews, 1);
	ck_assert_uint_eq(hits, WORKER_IDENTITY_CACHE_MS / 5000 - 1);
	ck_assert_uint_eq(stale, 0);
	/* Past the minute: reviewed again. */
	ck_assert_int_eq(worker_identity_check_at(wi, "node-a.x.y", "node-a",
						  NOW_MS + WORKER_IDENTITY_CACHE_MS, &err),
			 ERR_OK);
	ck_assert_uint_eq(fake.calls, 2);
}
END_TEST

/* A token that expires in 20 s is not trusted from the cache after that. */
START_TEST(test_worker_identity_cache_ends_at_the_tokens_expiry)
{
	char token[512], payload[64];
	struct error err;

	snprintf(payload, sizeof(payload), "{\"exp\":%llu}",
		 (unsigned long long)(NOW_MS / 1000 + 20));
	jwt(token, sizeof(token), "node-a", payload);
	ck_assert_int_eq(worker_identity_check_at(wi, token, "node-a", NOW_MS, &err), ERR_OK);
	ck_assert_int_eq(worker_identity_check_at(wi, token, "node-a", NOW_MS + 19000, &err),
			 ERR_OK);
	ck_assert_uint_eq(fake.calls, 1);
	ck_assert_int_eq(worker_identity_check_at(wi, token, "node-a", NOW_MS + 20000, &err),
			 ERR_OK);
	ck_assert_uint_eq(fake.calls, 2);
}
END_TEST

/* The cache keeps the review, not the verdict: the same token claiming
 * another worker id is refused, from the cache. */
START_TEST(test_worker_identity_cached_token_claiming_another_node)
{
	struct error err;

	ck_assert_int_eq(worker_identity_check_at(wi, "node-a.x.y", "node-a", NOW_MS, &err),
			 ERR_OK);
	ck_assert_int_eq(worker_identity_check_at(wi, "node-a.x.y", "node-b", NOW_MS + 1, &err),
			 ERR_PERMISSION);
	ck_assert_ptr_nonnull(strstr(err.msg, "node 'node-a'"));
	ck_assert_ptr_null(strstr(err.msg, "node-a.x.y"));
	ck_assert_uint_eq(fake.calls, 1);
	ck_assert_int_eq(worker_identity_check_at(wi, "other-sa", "node-a", NOW_MS, &err),
			 ERR_PERMISSION);
	ck_assert_ptr_nonnull(strstr(err.msg, "system:serviceaccount:default:default"));
}
END_TEST

/* Refused tokens are not kept; an unreachable apiserver is UNAVAILABLE. */
START_TEST(test_worker_identity_failures_are_not_cached)
{
	struct error err;

	ck_assert_int_eq(worker_identity_check_at(wi, "bad", "node-a", NOW_MS, &err),
			 ERR_UNAUTHENTICATED);
	ck_assert_int_eq(worker_identity_check_at(wi, "bad", "node-a", NOW_MS + 1, &err),
			 ERR_UNAUTHENTICATED);
	ck_assert_uint_eq(fake.calls, 2);
	ck_assert_int_eq(worker_identity_check_at(wi, "down", "node-a", NOW_MS, &err),
			 ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(err.msg, "worker 'node-a'"));
	ck_assert_ptr_nonnull(strstr(err.msg, "timed out"));
}
END_TEST

/* ---- an apiserver away or hung ------------------------------------------ */

/*
 * The apiserver is away (each review fails) past the minute a review is
 * trusted: a heartbeat of a token it reviewed is answered from that
 * review, judged as ever, up to WORKER_IDENTITY_STALE_MS after it; a token
 * it never reviewed is UNAVAILABLE. Back, it reviews again.
 */
START_TEST(test_worker_identity_outage_answers_from_the_kept_review)
{
	const uint64_t past = NOW_MS + WORKER_IDENTITY_CACHE_MS;
	uint64_t reviews, hits, stale;
	struct error err;

	ck_assert_int_eq(worker_identity_check_at(wi, "node-a.x.y", "node-a", NOW_MS, &err),
			 ERR_OK);
	fake_set(&fake.down, true);
	ck_assert_msg(worker_identity_check_at(wi, "node-a.x.y", "node-a", past + 1000, &err) ==
			      ERR_OK,
		      "%s", err.msg);
	ck_assert_uint_eq(fake.calls, 2);
	ck_assert_int_eq(worker_identity_check_at(wi, "node-a.x.y", "node-b", past + 2000, &err),
			 ERR_PERMISSION);
	ck_assert_msg(worker_identity_check_at(wi, "node-a.x.y", "node-a",
					       NOW_MS + WORKER_IDENTITY_STALE_MS - 1,
					       &err) == ERR_OK,
		      "%s", err.msg);
	worker_identity_counts(wi, &reviews, &hits, &stale);
	ck_assert_uint_eq(reviews, 1);
	ck_assert_uint_eq(stale, 3);
	/* Kept no longer. */
	ck_assert_int_eq(worker_identity_check_at(wi, "node-a.x.y", "node-a",
						  NOW_MS + WORKER_IDENTITY_STALE_MS, &err),
			 ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(err.msg, "worker 'node-a': cannot review its identity token"));
	ck_assert_ptr_nonnull(strstr(err.msg, "timed out"));
	ck_assert_int_eq(worker_identity_check_at(wi, "node-b.x.y", "node-b", past + 1000, &err),
			 ERR_UNAVAILABLE);
	fake_set(&fake.down, false);
	ck_assert_int_eq(worker_identity_check_at(wi, "node-a.x.y", "node-a",
						  NOW_MS + WORKER_IDENTITY_STALE_MS + 1000, &err),
			 ERR_OK);
	worker_identity_counts(wi, &reviews, &hits, &stale);
	ck_assert_uint_eq(reviews, 2);
}
END_TEST

/* Nor past the token's own expiry. */
START_TEST(test_worker_identity_outage_ends_at_the_tokens_expiry)
{
	char token[512], payload[64];
	struct error err;

	snprintf(payload, sizeof(payload), "{\"exp\":%llu}",
		 (unsigned long long)(NOW_MS / 1000 + 90));
	jwt(token, sizeof(token), "node-a", payload);
	ck_assert_int_eq(worker_identity_check_at(wi, token, "node-a", NOW_MS, &err), ERR_OK);
	fake_set(&fake.down, true);
	ck_assert_int_eq(worker_identity_check_at(wi, token, "node-a", NOW_MS + 89000, &err),
			 ERR_OK);
	ck_assert_int_eq(worker_identity_check_at(wi, token, "node-a", NOW_MS + 90000, &err),
			 ERR_UNAVAILABLE);
}
END_TEST

/* A token the apiserver refuses once reviewed (its pod deleted) is not
 * answered from its old review when the apiserver is away next. */
START_TEST(test_worker_identity_refused_token_is_forgotten)
{
	struct error err;

	ck_assert_int_eq(worker_identity_check_at(wi, "node-a.x.y", "node-a", NOW_MS, &err),
			 ERR_OK);
	fake_set(&fake.refuse, true);
	ck_assert_int_eq(worker_identity_check_at(wi, "node-a.x.y", "node-a",
						  NOW_MS + WORKER_IDENTITY_CACHE_MS, &err),
			 ERR_UNAUTHENTICATED);
	fake_set(&fake.refuse, false);
	fake_set(&fake.down, true);
	ck_assert_int_eq(worker_identity_check_at(wi, "node-a.x.y", "node-a",
						  NOW_MS + WORKER_IDENTITY_CACHE_MS + 1000, &err),
			 ERR_UNAVAILABLE);
}
END_TEST

/* A heartbeat checked on a thread of its own, as meta's gRPC threads do. */
struct heartbeat {
	const char *token, *worker;
	uint64_t now_ms;
	pthread_t thread;
	enum error_code rc;
	struct error err;
	atomic_bool done;
};

static void *heartbeat_main(void *arg)
{
	struct heartbeat *h = arg;

	h->rc = worker_identity_check_at(wi, h->token, h->worker, h->now_ms, &h->err);
	h->done = true;
	return NULL;
}

static void heartbeat_start(struct heartbeat *h, const char *token, const char *worker,
			    uint64_t now_ms)
{
	memset(h, 0, sizeof(*h));
	h->token = token;
	h->worker = worker;
	h->now_ms = now_ms;
	ck_assert_int_eq(pthread_create(&h->thread, NULL, heartbeat_main, h), 0);
}

/* Polls until h is answered (true) or timeout_ms passed. */
static bool heartbeat_answered(struct heartbeat *h, uint64_t timeout_ms)
{
	uint64_t until = retry_now_ms() + timeout_ms;

	while (!h->done && retry_now_ms() < until)
		retry_sleep_ms(10);
	return h->done;
}

/* *what of the fake, read under its lock (heartbeats run meanwhile). */
static unsigned fake_get(const unsigned *what)
{
	unsigned n;

	pthread_mutex_lock(&fake.mu);
	n = *what;
	pthread_mutex_unlock(&fake.mu);
	return n;
}

/*
 * The apiserver hangs (the fake: a real one cannot be made to hang on
 * demand). With reviews_max 2, two heartbeats wait for their reviews; a
 * third worker's is refused at once, and one whose token was reviewed
 * before is answered from that review at once, neither asking the
 * apiserver: however many workers there are, the apiserver holds two of
 * meta's threads. The hung reviews end as the API client's timeout ends
 * them; then the next review is asked again.
 */
START_TEST(test_worker_identity_hung_apiserver_holds_reviews_max_threads)
{
	const uint64_t past = NOW_MS + WORKER_IDENTITY_CACHE_MS + 1000;
	struct heartbeat hb[4];
	struct error err;
	uint64_t until;

	teardown();
	start(0, 2);
	ck_assert_int_eq(worker_identity_check_at(wi, "node-d.1", "node-d", NOW_MS, &err), ERR_OK);
	fake_set(&fake.hang, true);
	heartbeat_start(&hb[0], "node-a.1", "node-a", past);
	heartbeat_start(&hb[1], "node-b.1", "node-b", past);
	for (until = retry_now_ms() + 5000; fake_get(&fake.hanging) < 2 && retry_now_ms() < until;)
		retry_sleep_ms(10);
	ck_assert_uint_eq(fake_get(&fake.hanging), 2);

	heartbeat_start(&hb[2], "node-c.1", "node-c", past);
	heartbeat_start(&hb[3], "node-d.1", "node-d", past);
	ck_assert_msg(heartbeat_answered(&hb[2], 2000) && heartbeat_answered(&hb[3], 2000),
		      "with 2 reviews hung, heartbeats of node-c and node-d still wait after 2 s "
		      "(%u reviews waiting)",
		      fake_get(&fake.hanging));
	ck_assert_int_eq(hb[2].rc, ERR_UNAVAILABLE);
	ck_assert_msg(strstr(hb[2].err.msg, "worker 'node-c': cannot review its identity token") &&
			      strstr(hb[2].err.msg, "at once (2)"),
		      "%s", hb[2].err.msg);
	ck_assert_int_eq(hb[3].rc, ERR_OK);
	ck_assert_uint_eq(fake_get(&fake.calls), 3);
	ck_assert(!hb[0].done && !hb[1].done);

	fake_set(&fake.hang, false);
	for (int i = 0; i < 4; i++)
		pthread_join(hb[i].thread, NULL);
	ck_assert_int_eq(hb[0].rc, ERR_UNAVAILABLE);
	ck_assert_int_eq(hb[1].rc, ERR_UNAVAILABLE);
	ck_assert_int_eq(worker_identity_check_at(wi, "node-c.1", "node-c", past + 1000, &err),
			 ERR_OK);
	ck_assert_uint_eq(fake.calls, 4);
}
END_TEST

/* At most cache_max reviews: a full cache drops the expired ones, then the
 * one that expires first. */
START_TEST(test_worker_identity_cache_is_bounded)
{
	struct error err;

	teardown();
	start(2, 0);
	ck_assert_int_eq(worker_identity_check_at(wi, "node-a.1", "node-a", NOW_MS, &err), ERR_OK);
	ck_assert_int_eq(worker_identity_check_at(wi, "node-b.1", "node-b", NOW_MS + 10, &err),
			 ERR_OK);
	ck_assert_int_eq(worker_identity_check_at(wi, "node-c.1", "node-c", NOW_MS + 20, &err),
			 ERR_OK);
	ck_assert_uint_eq(fake.calls, 3);
	/* node-a's, the first to expire, made room; b's and c's are kept. */
	ck_assert_int_eq(worker_identity_check_at(wi, "node-b.1", "node-b", NOW_MS + 30, &err),
			 ERR_OK);
	ck_assert_int_eq(worker_identity_check_at(wi, "node-c.1", "node-c", NOW_MS + 30, &err),
			 ERR_OK);
	ck_assert_uint_eq(fake.calls, 3);
	ck_assert_int_eq(worker_identity_check_at(wi, "node-a.1", "node-a", NOW_MS + 40, &err),
			 ERR_OK);
	ck_assert_uint_eq(fake.calls, 4);
	/* Once all have expired, new ones take their places. */
	ck_assert_int_eq(worker_identity_check_at(wi, "node-d.1", "node-d",
						  NOW_MS + 10 * WORKER_IDENTITY_CACHE_MS, &err),
			 ERR_OK);
	ck_assert_int_eq(worker_identity_check_at(wi, "node-d.1", "node-d",
						  NOW_MS + 10 * WORKER_IDENTITY_CACHE_MS + 1, &err),
			 ERR_OK);
	ck_assert_uint_eq(fake.calls, 5);
}
END_TEST

START_TEST(test_worker_identity_new_needs_its_settings)
{
	struct worker_identity_config cfg = { .ns = "ns", .service_account = "", .audience = AUD,
					      .review = fake_review };
	struct worker_identity *w = NULL;
	struct error err;

	ck_assert_int_eq(worker_identity_new(&cfg, &w, &err), ERR_INVALID);
	ck_assert_ptr_null(w);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("worker_identity");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_worker_identity_judge_accepts_its_nodes_pod);
	tcase_add_test(tc, test_worker_identity_judge_refusals);
	tcase_add_test(tc, test_worker_identity_token_expiry_reads_exp);
	tcase_add_test(tc, test_worker_identity_without_a_token_is_unauthenticated);
	tcase_add_test(tc, test_worker_identity_reviews_once_a_minute);
	tcase_add_test(tc, test_worker_identity_cache_ends_at_the_tokens_expiry);
	tcase_add_test(tc, test_worker_identity_cached_token_claiming_another_node);
	tcase_add_test(tc, test_worker_identity_failures_are_not_cached);
	tcase_add_test(tc, test_worker_identity_outage_answers_from_the_kept_review);
	tcase_add_test(tc, test_worker_identity_outage_ends_at_the_tokens_expiry);
	tcase_add_test(tc, test_worker_identity_refused_token_is_forgotten);
	tcase_add_test(tc, test_worker_identity_hung_apiserver_holds_reviews_max_threads);
	tcase_add_test(tc, test_worker_identity_cache_is_bounded);
	tcase_add_test(tc, test_worker_identity_new_needs_its_settings);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}

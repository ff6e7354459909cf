/*
 * test_lease.c - leader election (kube/lease.c) between two candidates,
 * "a" and "b", against a fake apiserver in this process. A fake, because
 * what these tests need is an apiserver that hangs or slows one client's
 * calls on demand while it answers the other's, which a real one cannot
 * be made to do. It keeps one Lease and applies writes as the apiserver
 * does: a write must carry the resourceVersion last written, else 409.
 * Clients are told apart by their bearer token ("a" or "b").
 *
 * Durations are a few seconds, so the tests take some seconds each.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "common/retry.h"
#include "kube/lease.h"
#include "unit/check_main.h"

#define LEASE_PATH "/apis/coordination.k8s.io/v1/namespaces/ns/leases/meta"

struct fake_client {            /* protected by fake->mu */
	uint64_t get_delay_ms;  /* a GET reads the Lease this long after it came */
	bool hang_puts;         /* a PUT gets no answer until the fake stops */
	/* The next GET reads the Lease once "a" has written it this many more
	 * times, and from then on a's PUTs hang (one shot). */
	unsigned read_after_a_writes;
	unsigned writes;        /* writes applied */
	uint64_t wrote_ms;      /* when the last was applied */
};

struct fake {
	int fd;
	char url[64];
	pthread_t acceptor;
	pthread_mutex_t mu;
	pthread_cond_t cond;    /* a write, a connection's end, closing */
	bool closing;           /* protected by mu, and the rest below */
	unsigned conns;         /* connection threads running */
	json_t *lease;          /* NULL: none */
	unsigned rv;
	struct fake_client clients[2];
	uint64_t taken_ms;      /* when a write last handed the Lease to another holder */
};

struct conn {
	struct fake *f;
	int fd;
};

static void reply(int fd, int status, json_t *body)
{
	char *text = json_dumps(body, JSON_COMPACT), head[256];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
			 status, strlen(text));

	send(fd, head, (size_t)n, MSG_NOSIGNAL);
	send(fd, text, strlen(text), MSG_NOSIGNAL);
	free(text);
}

static json_t *status_body(const char *message)
{
	return json_pack("{s:s, s:s}", "kind", "Status", "message", message);
}

/* Waits on f->cond for ms, or until the fake closes. With f->mu held. */
static void fake_wait(struct fake *f, uint64_t ms)
{
	uint64_t until = retry_now_ms() + ms;

	while (!f->closing && retry_now_ms() < until) {
		struct timespec ts = retry_deadline_ts(CLOCK_MONOTONIC, until - retry_now_ms());

		pthread_cond_timedwait(&f->cond, &f->mu, &ts);
	}
}

/* A write (POST or PUT) of obj by client c: status to answer. */
static int fake_write(struct fake *f, struct fake_client *c, json_t *obj, bool create)
{
	json_t *meta = json_object_get(obj, "metadata");
	const char *rv = json_string_value(json_object_get(meta, "resourceVersion"));
	const char *was = json_string_value(
		json_object_get(json_object_get(f->lease, "spec"), "holderIdentity"));
	const char *now = json_string_value(
		json_object_get(json_object_get(obj, "spec"), "holderIdentity"));
	char next[16];

	if (create ? f->lease != NULL : !f->lease || !rv || (unsigned)atoi(rv) != f->rv)
		return 409;
	if (was && *was && now && *now && strcmp(was, now) != 0)
		f->taken_ms = retry_now_ms();
	snprintf(next, sizeof(next), "%u", ++f->rv);
	json_object_set_new(meta, "resourceVersion", json_string(next));
	json_decref(f->lease);
	f->lease = json_incref(obj);
	c->writes++;
	c->wrote_ms = retry_now_ms();
	pthread_cond_broadcast(&f->cond);
	return create ? 201 : 200;
}

static void fake_serve(struct fake *f, int fd, const char *method, const char *path,
		       const char *token, json_t *body)
{
	struct fake_client *c = &f->clients[token[0] == 'b'];
	json_t *answer = NULL;
	int status;

	pthread_mutex_lock(&f->mu);
	if (strcmp(method, "GET") == 0 && strcmp(path, LEASE_PATH) == 0) {
		if (c->read_after_a_writes) {
			unsigned until = f->clients[0].writes + c->read_after_a_writes;

			c->read_after_a_writes = 0;
			while (!f->closing && f->clients[0].writes < until)
				pthread_cond_wait(&f->cond, &f->mu);
			f->clients[0].hang_puts = true;
		}
		fake_wait(f, c->get_delay_ms);
		status = f->lease ? 200 : 404;
		answer = f->lease ? json_deep_copy(f->lease) : status_body("lease not found");
	} else if (strcmp(method, "PUT") == 0 && strcmp(path, LEASE_PATH) == 0 && body) {
		if (c->hang_puts) {
			while (!f->closing)
				pthread_cond_wait(&f->cond, &f->mu);
			pthread_mutex_unlock(&f->mu);
			return;
		}
		status = fake_write(f, c, body, false);
		answer = status == 200 ? json_deep_copy(f->lease) : status_body("conflict");
	} else if (strcmp(method, "POST") == 0 && body &&
		   strcmp(path, "/apis/coordination.k8s.io/v1/namespaces/ns/leases") == 0) {
		status = fake_write(f, c, body, true);
		answer = status == 201 ? json_deep_copy(f->lease) : status_body("already exists");
	} else {
		status = 400;
		answer = status_body("not a Lease call");
	}
	pthread_mutex_unlock(&f->mu);
	reply(fd, status, answer);
	json_decref(answer);
}

/* One request: its head, then Content-Length bytes of body. */
static void *conn_main(void *arg)
{
	struct conn *cn = arg;
	struct fake *f = cn->f;
	char buf[16384], method[16] = "", path[512] = "", token[16] = "a", *end = NULL, *h;
	size_t len = 0, want = 0;
	json_t *body = NULL;

	while (len < sizeof(buf) - 1 && (!end || len < (size_t)(end - buf) + want)) {
		ssize_t n = recv(cn->fd, buf + len, sizeof(buf) - 1 - len, 0);

		if (n <= 0)
			goto out;
		len += (size_t)n;
		buf[len] = '\0';
		if (!end && (end = strstr(buf, "\r\n\r\n"))) {
			end += 4;
			if ((h = strcasestr(buf, "\r\nContent-Length:")))
				want = strtoul(h + 17, NULL, 10);
			if (strcasestr(buf, "\r\nExpect: 100-continue"))
				send(cn->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25, MSG_NOSIGNAL);
		}
	}
	if (!end || sscanf(buf, "%15s %511s", method, path) != 2)
		goto out;
	if ((h = strcasestr(buf, "\r\nAuthorization: Bearer ")))
		sscanf(h + 24, "%15s", token);
	if (want)
		body = json_loadb(end, want, 0, NULL);
	fake_serve(f, cn->fd, method, path, token, body);
out:
	json_decref(body);
	close(cn->fd);
	free(cn);
	pthread_mutex_lock(&f->mu);
	f->conns--;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct fake *f = arg;

	for (;;) {
		struct pollfd p = { .fd = f->fd, .events = POLLIN };
		struct conn *cn;
		pthread_t t;
		bool closing;

		pthread_mutex_lock(&f->mu);
		closing = f->closing;
		pthread_mutex_unlock(&f->mu);
		if (closing)
			return NULL;
		if (poll(&p, 1, 50) != 1)
			continue;
		cn = malloc(sizeof(*cn));
		ck_assert_ptr_nonnull(cn);
		cn->f = f;
		cn->fd = accept(f->fd, NULL, NULL);
		if (cn->fd < 0) {
			free(cn);
			continue;
		}
		pthread_mutex_lock(&f->mu);
		f->conns++;
		pthread_mutex_unlock(&f->mu);
		ck_assert_int_eq(pthread_create(&t, NULL, conn_main, cn), 0);
		pthread_detach(t);
	}
}

static void fake_start(struct fake *f)
{
	pthread_condattr_t ca;

	memset(f, 0, sizeof(*f));
	pthread_mutex_init(&f->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&f->cond, &ca);
	pthread_condattr_destroy(&ca);
	f->fd = check_loopback_listener(64, f->url, sizeof(f->url));
	ck_assert_int_eq(pthread_create(&f->acceptor, NULL, accept_main, f), 0);
}

/* Ends every call, answered or not, and the fake. */
static void fake_stop(struct fake *f)
{
	pthread_mutex_lock(&f->mu);
	f->closing = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
	pthread_join(f->acceptor, NULL);
	pthread_mutex_lock(&f->mu);
	while (f->conns)
		pthread_cond_wait(&f->cond, &f->mu);
	pthread_mutex_unlock(&f->mu);
	close(f->fd);
	json_decref(f->lease);
}

/* A candidate: its API client (token "a" or "b") and its Lease. */
struct candidate {
	char token_file[64];
	struct kubeapi *k;
	struct lease *l;
	atomic_uint_fast64_t lost_ms;   /* when its keeper called lost */
};

static void candidate_new(struct candidate *c, const struct fake *f, const char *token,
			  const char *identity, unsigned duration_s)
{
	struct lease_config lc = {
		.namespace_ = "ns", .name = "meta", .identity = identity, .duration_s = duration_s
	};
	struct error err;

	memset(c, 0, sizeof(*c));
	check_write_temp(c->token_file, sizeof(c->token_file), token);
	ck_assert_int_eq(kubeapi_new(f->url, c->token_file, "", &c->k, &err), ERR_OK);
	ck_assert_int_eq(lease_new(c->k, &lc, &c->l, &err), ERR_OK);
}

static void candidate_free(struct candidate *c)
{
	lease_free(c->l);
	kubeapi_free(c->k);
	unlink(c->token_file);
}

static void on_lost(void *arg)
{
	struct candidate *c = arg;

	atomic_store(&c->lost_ms, retry_now_ms());
}

/* c takes the Lease and keeps it. */
static void lead(struct candidate *c)
{
	struct error err;
	bool held = false;

	ck_assert_int_eq(lease_try(c->l, &held, &err), ERR_OK);
	ck_assert(held);
	ck_assert_int_eq(lease_keep(c->l, on_lost, c, &err), ERR_OK);
}

/* The fake with two candidates: a leads with a_s, b is configured b_s. */
struct election {
	struct fake f;
	struct candidate a, b;
};

static void election_start(struct election *e, unsigned a_s, unsigned b_s)
{
	fake_start(&e->f);
	candidate_new(&e->a, &e->f, "a", "meta-a", a_s);
	candidate_new(&e->b, &e->f, "b", "meta-b", b_s);
	lead(&e->a);
}

static void election_end(struct election *e)
{
	fake_stop(&e->f);
	candidate_free(&e->a);
	candidate_free(&e->b);
}

/* c tries every 100 ms until it holds the Lease (true) or until_ms. */
static bool take(struct candidate *c, uint64_t until_ms)
{
	struct error err;
	bool held = false;

	while (retry_now_ms() < until_ms) {
		ck_assert_msg(lease_try(c->l, &held, &err) == ERR_OK, "%s", err.msg);
		if (held)
			return true;
		retry_sleep_ms(100);
	}
	return false;
}

/* The holder must stop acting no later than the apiserver handed the
 * Lease to another: a's lost comes before b's takeover was applied. */
static void expect_stopped_first(struct candidate *a, struct fake *f)
{
	uint64_t taken, lost;

	pthread_mutex_lock(&f->mu);
	taken = f->taken_ms;
	pthread_mutex_unlock(&f->mu);
	ck_assert_uint_ne(taken, 0);
	/* Waiting longer would not help: lost is already late. */
	lost = atomic_load(&a->lost_ms);
	if (lost)
		ck_assert_msg(lost <= taken,
			      "a stopped acting as leader %llu ms after b took the Lease",
			      (unsigned long long)(lost - taken));
	else
		ck_abort_msg("a still acts as leader %llu ms after b took the Lease",
			     (unsigned long long)(retry_now_ms() - taken));
}

/* The reviewer's case: a's GETs are slow and its PUTs hang, each up to
 * the API client's 10 s timeout; b takes the Lease after its duration. a
 * must have stopped by then, whatever its calls are doing. */
START_TEST(test_lease_holder_stops_by_its_deadline_while_its_calls_hang)
{
	struct election e;

	election_start(&e, 3, 3);
	pthread_mutex_lock(&e.f.mu);
	e.f.clients[0].get_delay_ms = 1500;
	e.f.clients[0].hang_puts = true;
	pthread_mutex_unlock(&e.f.mu);
	ck_assert(take(&e.b, retry_now_ms() + 8000));
	expect_stopped_first(&e.a, &e.f);
	election_end(&e);
}
END_TEST

/* b's read of the Lease is slow (the apiserver reads late), and a renews
 * while it waits: b's clock for the record must start when its read
 * returned, not when it was sent, or b takes the Lease while a may still
 * act. */
START_TEST(test_lease_candidate_counts_from_when_its_read_returned)
{
	struct election e;
	uint64_t taken, wrote;

	election_start(&e, 3, 3);
	pthread_mutex_lock(&e.f.mu);
	e.f.clients[1].read_after_a_writes = 3;
	pthread_mutex_unlock(&e.f.mu);
	ck_assert(take(&e.b, retry_now_ms() + 12000));
	pthread_mutex_lock(&e.f.mu);
	taken = e.f.taken_ms;
	wrote = e.f.clients[0].wrote_ms;
	pthread_mutex_unlock(&e.f.mu);
	ck_assert_msg(taken - wrote >= 3000, "b took the Lease %llu ms after a's last renewal",
		      (unsigned long long)(taken - wrote));
	expect_stopped_first(&e.a, &e.f);
	election_end(&e);
}
END_TEST

/* The holder writes a 6 s duration and renews every 2 s; b, configured
 * with 1 s (an upgrade that lowered it), must go by the record's. */
START_TEST(test_lease_candidate_goes_by_the_records_duration)
{
	struct election e;

	election_start(&e, 6, 1);
	ck_assert_msg(!take(&e.b, retry_now_ms() + 3500), "b took the Lease while a renewed it");
	ck_assert_str_eq(lease_holder(e.b.l), "meta-a");
	ck_assert_uint_eq(atomic_load(&e.a.lost_ms), 0);
	election_end(&e);
}
END_TEST

/* A record without leaseDurationSeconds: the candidate's own applies. */
START_TEST(test_lease_candidate_own_duration_when_the_record_has_none)
{
	struct fake f;
	struct candidate b;
	uint64_t start;

	fake_start(&f);
	pthread_mutex_lock(&f.mu);
	f.lease = json_pack("{s:s, s:s, s:{s:s, s:s, s:s}, s:{s:s, s:s}}", "apiVersion",
			    "coordination.k8s.io/v1", "kind", "Lease", "metadata", "name", "meta",
			    "namespace", "ns", "resourceVersion", "1", "spec", "holderIdentity",
			    "gone", "renewTime", "2026-01-01T00:00:00.000000Z");
	f.rv = 1;
	pthread_mutex_unlock(&f.mu);
	candidate_new(&b, &f, "b", "meta-b", 1);
	start = retry_now_ms();
	ck_assert(take(&b, start + 4000));
	ck_assert_uint_ge(retry_now_ms() - start, 1000);
	fake_stop(&f);
	candidate_free(&b);
}
END_TEST

/* Another wrote itself into the Lease (as a candidate that took it
 * would): the keeper stops at its next renewal and does not take it back. */
START_TEST(test_lease_holder_stops_when_another_holds_it)
{
	struct election e;
	uint64_t start;

	election_start(&e, 3, 3);
	pthread_mutex_lock(&e.f.mu);
	json_object_set_new(json_object_get(e.f.lease, "spec"), "holderIdentity",
			    json_string("meta-b"));
	pthread_mutex_unlock(&e.f.mu);
	/* Its renewal is due 1 s after it took the Lease, its deadline 2 s. */
	start = retry_now_ms();
	while (!atomic_load(&e.a.lost_ms) && retry_now_ms() - start < 1500)
		retry_sleep_ms(20);
	ck_assert_msg(atomic_load(&e.a.lost_ms),
		      "a did not see at its renewal that another holds the Lease");
	retry_sleep_ms(1200);
	pthread_mutex_lock(&e.f.mu);
	ck_assert_uint_eq(e.f.clients[0].writes, 1);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(e.f.lease, "spec"),
							   "holderIdentity")),
			 "meta-b");
	pthread_mutex_unlock(&e.f.mu);
	election_end(&e);
}
END_TEST

/* The keeper renews, and lease_release hands the Lease over at once. */
START_TEST(test_lease_release_hands_over_at_once)
{
	struct election e;

	election_start(&e, 3, 3);
	retry_sleep_ms(1500);
	pthread_mutex_lock(&e.f.mu);
	ck_assert_uint_ge(e.f.clients[0].writes, 2);
	pthread_mutex_unlock(&e.f.mu);
	ck_assert(!take(&e.b, retry_now_ms() + 1));
	lease_release(e.a.l);
	ck_assert(take(&e.b, retry_now_ms() + 500));
	ck_assert_uint_eq(atomic_load(&e.a.lost_ms), 0);
	election_end(&e);
}
END_TEST

static Suite *lease_suite(void)
{
	Suite *s = suite_create("lease");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_lease_holder_stops_by_its_deadline_while_its_calls_hang);
	tcase_add_test(tc, test_lease_candidate_counts_from_when_its_read_returned);
	tcase_add_test(tc, test_lease_candidate_goes_by_the_records_duration);
	tcase_add_test(tc, test_lease_candidate_own_duration_when_the_record_has_none);
	tcase_add_test(tc, test_lease_holder_stops_when_another_holds_it);
	tcase_add_test(tc, test_lease_release_hands_over_at_once);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_main_run(lease_suite());
}

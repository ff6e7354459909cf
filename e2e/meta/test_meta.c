/*
 * test_meta.c - a real granary-meta process (fork/exec of the built binary,
 * $GRANARY_BIN_DIR) driven through meta_client over a unix socket and over
 * TCP, against the real S3 server of the ctest fixture ($GRANARY_S3_DIR/env,
 * bucket granary-e2e).
 *
 * Two stand-ins live in this process, each where the real server cannot do
 * what the test needs, and each test says why it uses one:
 *   - a TCP forwarder in front of the S3 server that counts connections
 *     and can be closed, to prove that a restarted meta serves its
 *     snapshots without contacting the store at all;
 *   - a fake S3 endpoint that holds a ListObjectsV2 request until the test
 *     releases it, for a registration that is slow on demand;
 *   - a hostile S3 endpoint (the harness's recorder) whose listings no real
 *     server gives: a continuation token answered with itself, pages
 *     without end, sizes of 2^64 - 1, a file and a directory of one name
 *     (versitygw keeps objects as files, which cannot be both); and ports
 *     that answer garbage or HTML instead of S3.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/retry.h"
#include "e2e/harness.h"
#include "meta/meta_auth.h"
#include "meta/meta_client.h"
#include "meta/service.h"
#include "meta/snapshot.h"
#include "rpc/rpc_client.h"
#include "store/store.h"
#include "unit/check_main.h"

#define BUCKET "granary-e2e"
/* The large dataset: uploaded once per fixture and kept for later runs,
 * like test_s3_store's; its snapshot (~2 MB) needs several 1 MiB chunks. */
#define BIG_PREFIX "meta-e2e-big-v1/"
#define BIG_SHARDS 20
#define BIG_PER_SHARD 1000

static char endpoint[256], credentials[512], bin_dir[512];
static char work[128], prefix[128];
static int s3_port;
static struct harness_meta_keys keys; /* every meta here starts with them */

/* ---- environment ------------------------------------------------------- */

static void read_env(void)
{
	harness_s3_env(endpoint, sizeof(endpoint), credentials, sizeof(credentials));
	harness_bin_dir(bin_dir, sizeof(bin_dir));
	ck_assert_int_eq(sscanf(endpoint, "http://127.0.0.1:%d", &s3_port), 1);
}

static struct store *open_store(void)
{
	struct store_config cfg = { .endpoint = endpoint, .credentials_file = credentials,
				    .request_timeout_ms = 10000, .deadline_ms = 30000 };
	struct store *st = NULL;
	struct error err;

	ck_assert_msg(store_open("s3://" BUCKET, &cfg, &st, &err) == ERR_OK, "%s", err.msg);
	return st;
}

static void put_ok(struct store *st, const char *key, const char *data)
{
	struct error err;

	ck_assert_msg(store_put(st, key, data, strlen(data), &err) == ERR_OK, "put '%s': %s", key,
		      err.msg);
}

/* A unique prefix with a small tree: 5 files, 3 directories below it. */
static void setup(void)
{
	struct store *st;
	char key[256];
	static const char *const files[] = { "train/a.rec", "train/b.rec", "train/deep/c.rec",
					     "val/d.rec", "README" };

	signal(SIGPIPE, SIG_IGN);
	read_env();
	harness_tmpdir(work, sizeof(work), "/tmp/granary-meta-e2e-XXXXXX");
	harness_meta_keys(work, &keys);
	snprintf(prefix, sizeof(prefix), "meta-e2e-%d-%llu/", (int)getpid(),
		 (unsigned long long)retry_now_ms());
	st = open_store();
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(key, sizeof(key), "%s%s", prefix, files[i]);
		put_ok(st, key, files[i]); /* content: its own name */
	}
	store_free(st);
}

static void teardown(void)
{
	harness_rm_rf(work);
}

/* ---- the meta process -------------------------------------------------- */

struct meta_proc {
	pid_t pid;
	char listen[200];
	char log[256];
};

/* A client that signs as role with key_file (NULL: unsigned). */
static struct meta_client *client_as(const char *address, bool wait, enum meta_role role,
				     const char *key_file)
{
	struct meta_client_options opt = { .timeout_ms = 10000, .build_timeout_ms = 120000,
					   .wait_for_ready = wait, .key_file = key_file,
					   .role = role };
	struct meta_client *c = NULL;
	struct error err;

	ck_assert_msg(meta_client_new(address, &opt, &c, &err) == ERR_OK, "%s", err.msg);
	return c;
}

/* The csi role's client: registers, deletes, refreshes, reads. */
static struct meta_client *client_for(const char *address, bool wait)
{
	return client_as(address, wait, META_ROLE_CSI, keys.csi);
}

/* The worker role's client: heartbeats. */
static struct meta_client *worker_for(const char *address)
{
	return client_as(address, true, META_ROLE_WORKER, keys.worker);
}

static void dump_log(const struct meta_proc *mp)
{
	harness_dump_log(mp->log);
}

/* Starts granary-meta with the flags given (NULL-terminated) and the role
 * keys (unless the flags say --auth.insecure), and waits until it answers
 * ListDatasets. */
static void meta_start(struct meta_proc *mp, const char *listen, const char *data_dir,
		       const char *const *extra)
{
	char exe[600];
	const char *argv[40];
	int n = 0;
	uint64_t t0 = retry_now_ms();
	struct meta_client *c;
	bool insecure = false, allowed = false;

	snprintf(mp->listen, sizeof(mp->listen), "%s", listen);
	snprintf(mp->log, sizeof(mp->log), "%s/meta.log", work);
	snprintf(exe, sizeof(exe), "%s/granary-meta", bin_dir);
	argv[n++] = exe;
	argv[n++] = "--listen";
	argv[n++] = listen;
	argv[n++] = "--data_dir";
	argv[n++] = data_dir;
	argv[n++] = "--log.level";
	argv[n++] = "info";
	/* Two tries against an unreachable store, not five: the UNAVAILABLE
	 * case answers in about a second. */
	argv[n++] = "--store.max_attempts";
	argv[n++] = "2";
	for (; extra && *extra && n < 24; extra++) {
		if (strcmp(*extra, "--auth.insecure") == 0)
			insecure = true;
		if (strcmp(*extra, "--store.allowed_endpoints") == 0)
			allowed = true;
		argv[n++] = *extra;
	}
	/* The fixture's S3 server, which most specs here name, unless the
	 * test gives its own list. */
	if (!allowed) {
		argv[n++] = "--store.allowed_endpoints";
		argv[n++] = endpoint;
	}
	for (int i = 0; !insecure && i < HARNESS_META_AUTH_ARGS; i++)
		argv[n++] = keys.args[i];
	argv[n] = NULL;
	mp->pid = harness_spawn(argv, mp->log);
	/* wait_for_ready: each call waits (polling the connection) up to its
	 * deadline for meta to come up, instead of failing at once. */
	c = insecure ? client_as(listen, true, META_ROLE_CSI, NULL) : client_for(listen, true);
	for (;;) {
		Granary__V1__ListDatasetsReply *l = NULL;
		struct error err;
		int status;

		if (meta_client_list(c, &l, &err) == ERR_OK) {
			granary__v1__list_datasets_reply__free_unpacked(l, NULL);
			break;
		}
		if (waitpid(mp->pid, &status, WNOHANG) == mp->pid) {
			dump_log(mp);
			ck_abort_msg("granary-meta exited at start (status %d)", status);
		}
		if (retry_now_ms() - t0 > 15000) {
			dump_log(mp);
			ck_abort_msg("granary-meta did not answer on %s within 15 s: %s", listen,
				     err.msg);
		}
		retry_sleep_ms(50);
	}
	meta_client_free(c);
}

/* "--store.allowed_endpoints" with the fixture's endpoint and ep (a test's
 * stand-in endpoint) into flags[0..1]; list holds the value. */
static void allow_also(const char **flags, char *list, size_t size, const char *ep)
{
	snprintf(list, size, "%s,%s", endpoint, ep);
	flags[0] = "--store.allowed_endpoints";
	flags[1] = list;
}

/* SIGTERM and wait: returns the exit status (0 = graceful). */
static int meta_stop(struct meta_proc *mp)
{
	int status = harness_stop(&mp->pid, 20000, NULL);

	if (status == -1) {
		dump_log(mp);
		ck_abort_msg("granary-meta ignored SIGTERM for 20 s");
	}
	return status;
}

/* ---- specs ------------------------------------------------------------- */

struct spec {
	Granary__V1__DatasetSpec s;
	Granary__V1__DatasetOptions o;
	char uri[300];
};

static void spec_init(struct spec *sp, const char *name, const char *pfx)
{
	granary__v1__dataset_spec__init(&sp->s);
	granary__v1__dataset_options__init(&sp->o);
	snprintf(sp->uri, sizeof(sp->uri), "s3://" BUCKET "/%s", pfx);
	sp->s.name = (char *)name;
	sp->s.source_uri = sp->uri;
	sp->s.endpoint = endpoint;
	sp->s.credentials_ref = credentials;
	sp->s.options = &sp->o;
}

static Granary__V1__Dataset *register_ok(struct meta_client *c, struct spec *sp)
{
	Granary__V1__Dataset *d = NULL;
	struct error err;

	ck_assert_msg(meta_client_register(c, &sp->s, &d, &err) == ERR_OK, "register '%s': %s",
		      sp->s.name, err.msg);
	return d;
}

static void free_ds(Granary__V1__Dataset *d)
{
	granary__v1__dataset__free_unpacked(d, NULL);
}

static void data_dir_path(char *buf, size_t size, const char *name)
{
	snprintf(buf, size, "%s/%s", work, name);
}

/* ---- tests ------------------------------------------------------------- */

START_TEST(test_meta_registers_is_idempotent_and_refuses_conflicts)
{
	struct meta_proc mp;
	struct meta_client *c;
	Granary__V1__Dataset *d, *again;
	Granary__V1__ListDatasetsReply *l = NULL;
	struct snapshot *snap = NULL;
	struct meta_client_fetch_stats stats;
	struct spec sp;
	struct error err;
	char listen[200], data[200];

	snprintf(listen, sizeof(listen), "unix://%s/meta.sock", work);
	data_dir_path(data, sizeof(data), "data");
	meta_start(&mp, listen, data, NULL);
	c = client_for(listen, true);

	spec_init(&sp, "small", prefix);
	sp.o.block_size = 1u << 20;
	sp.o.cache_policy = GRANARY__V1__CACHE_POLICY__CACHE_POLICY_SCAN_RESISTANT;
	d = register_ok(c, &sp);
	ck_assert_uint_eq(d->generation, 1);
	ck_assert_int_eq(d->state, GRANARY__V1__DATASET_STATE__DATASET_STATE_READY);
	ck_assert_uint_eq(d->files, 5);
	ck_assert_uint_eq(d->dirs, 4); /* root, train, train/deep, val */
	ck_assert_uint_eq(d->bytes, strlen("train/a.rec") * 2 + strlen("train/deep/c.rec") +
					    strlen("val/d.rec") + strlen("README"));
	ck_assert_int_gt(d->created_unix_ms, 1600000000000LL);
	ck_assert_str_eq(d->spec->source_uri, sp.uri);
	ck_assert_uint_eq(d->spec->options->block_size, 1u << 20);
	ck_assert_str_eq(d->spec->credentials_ref, credentials);

	/* The same spec again: the same dataset, same generation and time. */
	again = register_ok(c, &sp);
	ck_assert_uint_eq(again->generation, 1);
	ck_assert_int_eq(again->created_unix_ms, d->created_unix_ms);
	free_ds(again);

	/* Another spec under the name: ALREADY_EXISTS naming what differs. */
	sp.o.pin = 1;
	ck_assert_int_eq(meta_client_register(c, &sp.s, &again, &err), ERR_EXISTS);
	ck_assert_ptr_nonnull(strstr(err.msg, "'options.pin'"));
	ck_assert_ptr_null(again);
	sp.o.pin = 0;

	ck_assert_int_eq(meta_client_get(c, "small", &again, &err), ERR_OK);
	ck_assert_uint_eq(again->files, 5);
	free_ds(again);
	ck_assert_int_eq(meta_client_list(c, &l, &err), ERR_OK);
	ck_assert_uint_eq(l->n_datasets, 1);
	ck_assert_str_eq(l->datasets[0]->spec->name, "small");
	granary__v1__list_datasets_reply__free_unpacked(l, NULL);

	/* The snapshot has the tree. */
	ck_assert_msg(meta_client_fetch_snapshot(c, "small", 0, &snap, &stats, &err) == ERR_OK, "%s",
		      err.msg);
	ck_assert_uint_eq(stats.chunks, 1);
	ck_assert_uint_eq(stats.generation, 1);
	ck_assert_uint_ne(snapshot_resolve_path(snap, "train/deep/c.rec"), 0);
	ck_assert_uint_eq(snapshot_resolve_path(snap, "train/nothere"), 0);
	snapshot_free(snap);

	/* Refresh makes generation 2 with the same content. */
	ck_assert_int_eq(meta_client_refresh(c, "small", &again, &err), ERR_OK);
	ck_assert_uint_eq(again->generation, 2);
	ck_assert_uint_eq(again->files, 5);
	free_ds(again);

	/* Delete, then it is gone. */
	ck_assert_int_eq(meta_client_delete(c, "small", &err), ERR_OK);
	ck_assert_int_eq(meta_client_get(c, "small", &again, &err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "'small' not found"));
	free_ds(d);
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);
}
END_TEST

START_TEST(test_meta_maps_every_failure_to_its_status)
{
	struct meta_proc mp;
	struct meta_client *c;
	Granary__V1__Dataset *d = NULL;
	struct snapshot *snap = NULL;
	struct spec sp;
	struct error err;
	char listen[200], data[200], bad_creds[300], closed[64], allowed[400];
	const char *flags[3] = { NULL };
	FILE *f;
	uint64_t t0;

	snprintf(closed, sizeof(closed), "http://127.0.0.1:%d", harness_free_port());
	allow_also(flags, allowed, sizeof(allowed), closed);
	snprintf(listen, sizeof(listen), "unix://%s/meta.sock", work);
	data_dir_path(data, sizeof(data), "data");
	meta_start(&mp, listen, data, flags);
	c = client_for(listen, true);

	/* INVALID_ARGUMENT naming the field. */
	spec_init(&sp, "bad", prefix);
	sp.s.source_uri = "gs://" BUCKET "/x/";
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'source_uri'"));
	sp.s.source_uri = "s3://Not_A_Bucket/x/";
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'source_uri'"));
	ck_assert_ptr_nonnull(strstr(err.msg, "Not_A_Bucket"));
	spec_init(&sp, "bad", prefix);
	sp.o.block_size = 3u << 20;
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'options.block_size'"));
	spec_init(&sp, "Bad.Name", prefix);
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'name'"));
	/* A well-formed bucket that does not exist is named too. */
	spec_init(&sp, "nobucket", "x/");
	sp.s.source_uri = "s3://granary-e2e-no-such-bucket/x/";
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'source_uri'"));
	ck_assert_ptr_nonnull(strstr(err.msg, "does not exist"));

	/* NOT_FOUND for names nobody registered. */
	ck_assert_int_eq(meta_client_get(c, "never-registered", &d, &err), ERR_NOT_FOUND);
	ck_assert_int_eq(meta_client_delete(c, "never-registered", &err), ERR_NOT_FOUND);
	ck_assert_int_eq(meta_client_fetch_snapshot(c, "never-registered", 0, &snap, NULL, &err),
			 ERR_NOT_FOUND);

	/* PERMISSION_DENIED: the right key with a wrong secret; the store's cause
	 * is in the message, the secret is not. */
	snprintf(bad_creds, sizeof(bad_creds), "%s/bad-credentials", work);
	f = fopen(bad_creds, "w");
	fprintf(f, "[default]\naws_access_key_id = granary-test\n"
		   "aws_secret_access_key = wrong-secret-value-42\n");
	fclose(f);
	chmod(bad_creds, 0600);
	spec_init(&sp, "denied", prefix);
	sp.s.credentials_ref = bad_creds;
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_PERMISSION);
	ck_assert_ptr_nonnull(strstr(err.msg, "credentials"));
	ck_assert_ptr_nonnull(strstr(err.msg, "403"));
	ck_assert_ptr_null(strstr(err.msg, "wrong-secret-value-42"));

	/* UNAVAILABLE: nothing listens on the endpoint. */
	spec_init(&sp, "unreachable", prefix);
	sp.s.endpoint = closed;
	t0 = retry_now_ms();
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(err.msg, "did not answer as an S3 server"));
	ck_assert_ptr_nonnull(strstr(err.msg, closed));
	ck_assert_uint_lt(retry_now_ms() - t0, 30000);

	/* None of the failures left a dataset behind. */
	{
		Granary__V1__ListDatasetsReply *l = NULL;

		ck_assert_int_eq(meta_client_list(c, &l, &err), ERR_OK);
		ck_assert_uint_eq(l->n_datasets, 0);
		granary__v1__list_datasets_reply__free_unpacked(l, NULL);
	}
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);

	/* And meta itself unreachable is UNAVAILABLE at the client. */
	c = client_for(listen, false);
	ck_assert_int_eq(meta_client_get(c, "x", &d, &err), ERR_UNAVAILABLE);
	meta_client_free(c);
}
END_TEST

/* ---- the large dataset ------------------------------------------------- */

struct upload {
	pthread_mutex_t mu;
	int next, failed;
	struct store *st;
};

static void big_key(char *buf, size_t size, int i)
{
	snprintf(buf, size, BIG_PREFIX "shard-%02d/train-%05d-of-%05d.jpeg", i / BIG_PER_SHARD, i,
		 BIG_SHARDS * BIG_PER_SHARD);
}

static void *upload_big(void *arg)
{
	struct upload *u = arg;
	char key[128];
	struct error err;

	for (;;) {
		int i;

		pthread_mutex_lock(&u->mu);
		i = u->next++;
		pthread_mutex_unlock(&u->mu);
		if (i >= BIG_SHARDS * BIG_PER_SHARD || u->failed)
			return NULL;
		big_key(key, sizeof(key), i);
		if (store_put(u->st, key, key, strlen(key), &err) != ERR_OK) {
			fprintf(stderr, "put %s: %s\n", key, err.msg);
			pthread_mutex_lock(&u->mu);
			u->failed = 1;
			pthread_mutex_unlock(&u->mu);
		}
	}
}

static void ensure_big(struct store *st)
{
	struct upload u = { .mu = PTHREAD_MUTEX_INITIALIZER, .st = st };
	struct store_list_page page;
	struct error err;
	char last[64];
	pthread_t t[16];
	size_t have;

	snprintf(last, sizeof(last), BIG_PREFIX "shard-%02d/", BIG_SHARDS - 1);
	ck_assert_int_eq(store_list(st, last, NULL, NULL, 0, &page, &err), ERR_OK);
	have = page.nobjects;
	store_list_page_release(&page);
	if (have == BIG_PER_SHARD)
		return;
	for (int i = 0; i < 16; i++)
		pthread_create(&t[i], NULL, upload_big, &u);
	for (int i = 0; i < 16; i++)
		pthread_join(t[i], NULL);
	ck_assert_int_eq(u.failed, 0);
}

static void encode(const struct snapshot *s, void **buf, size_t *len)
{
	struct error err;

	ck_assert_int_eq(snapshot_encode_to_buffer(s, buf, len, &err), ERR_OK);
}

START_TEST(test_meta_streams_a_large_snapshot_in_chunks)
{
	struct meta_proc mp;
	struct meta_client *c;
	struct store *st = open_store();
	struct snapshot *got = NULL, *local = NULL;
	struct meta_client_fetch_stats stats;
	struct snapshot_totals totals;
	Granary__V1__Dataset *d;
	struct spec sp;
	struct error err;
	char listen[200], data[200], key[128];
	void *a, *b;
	size_t alen, blen;
	uint64_t t0;

	ensure_big(st);
	snprintf(listen, sizeof(listen), "unix://%s/meta.sock", work);
	data_dir_path(data, sizeof(data), "data");
	meta_start(&mp, listen, data, NULL);
	c = client_for(listen, true);
	spec_init(&sp, "big", BIG_PREFIX);
	t0 = retry_now_ms();
	d = register_ok(c, &sp);
	fprintf(stderr, "register of %d objects: %llu ms\n", BIG_SHARDS * BIG_PER_SHARD,
		(unsigned long long)(retry_now_ms() - t0));
	ck_assert_uint_eq(d->files, BIG_SHARDS * BIG_PER_SHARD);
	ck_assert_uint_eq(d->dirs, BIG_SHARDS + 1);
	free_ds(d);

	t0 = retry_now_ms();
	ck_assert_msg(meta_client_fetch_snapshot(c, "big", 0, &got, &stats, &err) == ERR_OK, "%s",
		      err.msg);
	fprintf(stderr, "snapshot: %llu bytes in %llu chunks, %llu ms\n",
		(unsigned long long)stats.bytes, (unsigned long long)stats.chunks,
		(unsigned long long)(retry_now_ms() - t0));
	/* Over one message's worth: it came in several chunks of <= 1 MiB. */
	ck_assert_uint_gt(stats.bytes, 1u << 20);
	ck_assert_uint_ge(stats.chunks, 2);
	ck_assert_uint_eq(stats.chunks, (stats.bytes + (1u << 20) - 1) >> 20);
	snapshot_totals(got, &totals);
	ck_assert_uint_eq(totals.files, BIG_SHARDS * BIG_PER_SHARD);
	for (int i = 0; i < BIG_SHARDS * BIG_PER_SHARD; i++) {
		big_key(key, sizeof(key), i);
		ck_assert_msg(snapshot_resolve_path(got, key + strlen(BIG_PREFIX)) != 0,
			      "'%s' missing", key);
	}
	/* Byte for byte what a local build from the same listing gives. */
	ck_assert_int_eq(snapshot_build_from_store(st, BIG_PREFIX, "big", sp.uri, 1, &local, &err),
			 ERR_OK);
	encode(got, &a, &alen);
	encode(local, &b, &blen);
	ck_assert_uint_eq(alen, blen);
	ck_assert_uint_eq(alen, stats.bytes);
	ck_assert_int_eq(memcmp(a, b, alen), 0);
	free(a);
	free(b);
	snapshot_free(got);
	snapshot_free(local);
	meta_client_free(c);
	store_free(st);
	ck_assert_int_eq(meta_stop(&mp), 0);
}
END_TEST

/* ---- a counting forwarder in front of the S3 server --------------------- */

struct forwarder {
	int fd, port;
	pthread_t t;
	pthread_mutex_t mu;
	int connections; /* protected by mu */
	bool stop;       /* protected by mu */
};

static void *pump(void *arg)
{
	int *fds = arg, a = fds[0], b = fds[1];
	char buf[65536];

	free(fds);
	for (;;) {
		struct pollfd p[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };

		if (poll(p, 2, 1000) < 0)
			break;
		for (int i = 0; i < 2; i++) {
			if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t n = read(i ? b : a, buf, sizeof(buf));

				if (n <= 0 || write(i ? a : b, buf, (size_t)n) != n)
					goto done;
			}
		}
	}
done:
	close(a);
	close(b);
	return NULL;
}

static void *forward_loop(void *arg)
{
	struct forwarder *fw = arg;

	for (;;) {
		struct pollfd p = { .fd = fw->fd, .events = POLLIN };
		struct sockaddr_in up = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s3_port) };
		int c, u, *fds;
		pthread_t t;
		bool stop;

		pthread_mutex_lock(&fw->mu);
		stop = fw->stop;
		pthread_mutex_unlock(&fw->mu);
		if (stop)
			return NULL;
		if (poll(&p, 1, 50) <= 0)
			continue;
		c = accept(fw->fd, NULL, NULL);
		if (c < 0)
			continue;
		pthread_mutex_lock(&fw->mu);
		fw->connections++;
		pthread_mutex_unlock(&fw->mu);
		up.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		u = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(u, (struct sockaddr *)&up, sizeof(up)) < 0) {
			close(c);
			close(u);
			continue;
		}
		fds = malloc(2 * sizeof(int));
		fds[0] = c;
		fds[1] = u;
		pthread_create(&t, NULL, pump, fds);
		pthread_detach(t);
	}
}

static void forwarder_start(struct forwarder *fw)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);

	memset(fw, 0, sizeof(*fw));
	pthread_mutex_init(&fw->mu, NULL);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fw->fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_eq(bind(fw->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fw->fd, 64), 0);
	getsockname(fw->fd, (struct sockaddr *)&sa, &len);
	fw->port = ntohs(sa.sin_port);
	pthread_create(&fw->t, NULL, forward_loop, fw);
}

/* Closes the listening socket: the port refuses connections from now on. */
static int forwarder_stop(struct forwarder *fw)
{
	int n;

	pthread_mutex_lock(&fw->mu);
	fw->stop = true;
	pthread_mutex_unlock(&fw->mu);
	pthread_join(fw->t, NULL);
	close(fw->fd);
	pthread_mutex_lock(&fw->mu);
	n = fw->connections;
	pthread_mutex_unlock(&fw->mu);
	return n;
}

/*
 * The restart check. The dataset's endpoint is the forwarder, its only
 * route to the store. Registration goes through it (connections > 0).
 * Then meta stops, the forwarder closes (its port refuses connections:
 * the store is unreachable for this dataset), and meta restarts on TCP
 * with the same data_dir. Get and GetSnapshot must answer with the same
 * generation, time and bytes; a Refresh, which must list, fails
 * UNAVAILABLE - proof that the endpoint really is unreachable and that the
 * answers came from disk, not from a listing.
 */
START_TEST(test_meta_restart_serves_snapshots_without_listing)
{
	struct meta_proc mp;
	struct meta_client *c;
	struct forwarder fw;
	struct snapshot *before = NULL, *after = NULL;
	Granary__V1__Dataset *d, *d2;
	struct spec sp;
	struct error err;
	char listen[200], tcp[64], data[200], via[64], allowed[400];
	const char *flags[3] = { NULL };
	void *a, *b;
	size_t alen, blen;
	int conns;

	forwarder_start(&fw);
	snprintf(via, sizeof(via), "http://127.0.0.1:%d", fw.port);
	allow_also(flags, allowed, sizeof(allowed), via);
	snprintf(listen, sizeof(listen), "unix://%s/meta.sock", work);
	data_dir_path(data, sizeof(data), "data");
	meta_start(&mp, listen, data, flags);
	c = client_for(listen, true);
	spec_init(&sp, "restart", prefix);
	sp.s.endpoint = via;
	d = register_ok(c, &sp);
	ck_assert_int_eq(meta_client_fetch_snapshot(c, "restart", 0, &before, NULL, &err), ERR_OK);
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);
	conns = forwarder_stop(&fw);
	ck_assert_int_gt(conns, 0);

	snprintf(tcp, sizeof(tcp), "127.0.0.1:%d", harness_free_port());
	meta_start(&mp, tcp, data, flags);
	c = client_for(tcp, true);
	ck_assert_int_eq(meta_client_get(c, "restart", &d2, &err), ERR_OK);
	ck_assert_uint_eq(d2->generation, d->generation);
	ck_assert_int_eq(d2->created_unix_ms, d->created_unix_ms);
	ck_assert_uint_eq(d2->files, 5);
	ck_assert_int_eq(d2->state, GRANARY__V1__DATASET_STATE__DATASET_STATE_READY);
	ck_assert_str_eq(d2->spec->endpoint, via);
	free_ds(d2);
	ck_assert_int_eq(meta_client_fetch_snapshot(c, "restart", 0, &after, NULL, &err), ERR_OK);
	encode(before, &a, &alen);
	encode(after, &b, &blen);
	ck_assert_uint_eq(alen, blen);
	ck_assert_int_eq(memcmp(a, b, alen), 0);
	free(a);
	free(b);
	/* Listing would need the endpoint, which is gone. */
	ck_assert_int_eq(meta_client_refresh(c, "restart", &d2, &err), ERR_UNAVAILABLE);
	/* And the failed refresh left generation 1 served. */
	ck_assert_int_eq(meta_client_get(c, "restart", &d2, &err), ERR_OK);
	ck_assert_uint_eq(d2->generation, 1);
	free_ds(d2);
	free_ds(d);
	snapshot_free(before);
	snapshot_free(after);
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);
}
END_TEST

/* ---- membership -------------------------------------------------------- */

static Granary__V1__HeartbeatReply *beat(struct meta_client *c, const char *id, const char *addr)
{
	Granary__V1__HeartbeatReply *r = NULL;
	struct error err;

	ck_assert_msg(meta_client_heartbeat(c, id, addr, 1000000, 1000, &r, &err) == ERR_OK, "%s",
		      err.msg);
	return r;
}

static Granary__V1__ListWorkersReply *workers(struct meta_client *c)
{
	Granary__V1__ListWorkersReply *r = NULL;
	struct error err;

	ck_assert_int_eq(meta_client_list_workers(c, &r, &err), ERR_OK);
	return r;
}

START_TEST(test_meta_heartbeats_and_expiry_change_the_version)
{
	static const char *const flags[] = { "--heartbeat.interval", "100ms", "--heartbeat.expiry",
					     "600ms", NULL };
	struct meta_proc mp;
	struct meta_client *c;
	Granary__V1__HeartbeatReply *h;
	Granary__V1__ListWorkersReply *w;
	struct error err;
	char listen[200], data[200];
	uint64_t v1, v2, v3, t0;

	snprintf(listen, sizeof(listen), "unix://%s/meta.sock", work);
	data_dir_path(data, sizeof(data), "data");
	meta_start(&mp, listen, data, flags);
	c = worker_for(listen);

	h = beat(c, "node-b", "10.0.0.2:7480");
	v1 = h->membership_version;
	ck_assert_uint_eq(h->expiry_ms, 600);
	ck_assert_uint_eq(h->interval_ms, 100);
	granary__v1__heartbeat_reply__free_unpacked(h, NULL);
	h = beat(c, "node-a", "10.0.0.1:7480");
	v2 = h->membership_version;
	ck_assert_uint_gt(v2, v1);
	granary__v1__heartbeat_reply__free_unpacked(h, NULL);
	w = workers(c);
	ck_assert_uint_eq(w->version, v2);
	ck_assert_uint_eq(w->n_workers, 2);
	ck_assert_str_eq(w->workers[0]->id, "node-a");
	ck_assert_str_eq(w->workers[1]->id, "node-b");
	ck_assert_str_eq(w->workers[1]->address, "10.0.0.2:7480");
	ck_assert_uint_eq(w->workers[0]->capacity_bytes, 1000000);
	granary__v1__list_workers_reply__free_unpacked(w, NULL);

	/* node-b keeps beating, node-a falls silent past the expiry. */
	t0 = retry_now_ms();
	while (retry_now_ms() - t0 < 1000) {
		h = beat(c, "node-b", "10.0.0.2:7480");
		granary__v1__heartbeat_reply__free_unpacked(h, NULL);
		retry_sleep_ms(100);
	}
	w = workers(c);
	v3 = w->version;
	ck_assert_uint_gt(v3, v2);
	ck_assert_uint_eq(w->n_workers, 1);
	ck_assert_str_eq(w->workers[0]->id, "node-b");
	granary__v1__list_workers_reply__free_unpacked(w, NULL);
	/* A bad heartbeat names the field. */
	ck_assert_int_eq(meta_client_heartbeat(c, "node c", "h:1", 1, 0, &h, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'worker_id'"));
	/* Everyone silent: the membership empties and the version moves on. */
	retry_sleep_ms(800);
	w = workers(c);
	ck_assert_uint_eq(w->n_workers, 0);
	ck_assert_uint_gt(w->version, v3);
	granary__v1__list_workers_reply__free_unpacked(w, NULL);
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);
}
END_TEST

/* ---- a slow registration ------------------------------------------------ */

/*
 * A fake S3 endpoint for one thing the real server cannot do on demand:
 * take as long as the test wants to answer a listing. It holds each request
 * until released, then answers a valid ListObjectsV2 page of three keys.
 */
struct fake_s3 {
	int fd, port;
	pthread_t t;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool hold, stop; /* protected by mu */
	int held;        /* protected by mu: requests waiting */
	int requests;    /* protected by mu */
};

static const char fake_listing[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
	"<Name>fake</Name><Prefix>slow/</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>"
	"<IsTruncated>false</IsTruncated>"
	"<Contents><Key>slow/a.rec</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
	"<ETag>&quot;0a&quot;</ETag><Size>10</Size></Contents>"
	"<Contents><Key>slow/b/c.rec</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
	"<ETag>&quot;0b&quot;</ETag><Size>20</Size></Contents>"
	"<Contents><Key>slow/d.rec</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
	"<ETag>&quot;0c&quot;</ETag><Size>30</Size></Contents>"
	"</ListBucketResult>";

static void fake_serve(struct fake_s3 *f, int c)
{
	char buf[8192], head[256];
	size_t have = 0;
	int hl;

	while (have < sizeof(buf) - 1) {
		ssize_t n = read(c, buf + have, sizeof(buf) - 1 - have);

		if (n <= 0)
			return;
		have += (size_t)n;
		buf[have] = '\0';
		if (strstr(buf, "\r\n\r\n"))
			break;
	}
	pthread_mutex_lock(&f->mu);
	f->requests++;
	f->held++;
	pthread_cond_broadcast(&f->cond);
	while (f->hold && !f->stop)
		pthread_cond_wait(&f->cond, &f->mu);
	f->held--;
	pthread_mutex_unlock(&f->mu);
	hl = snprintf(head, sizeof(head),
		      "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
		      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		      sizeof(fake_listing) - 1);
	if (write(c, head, (size_t)hl) != hl ||
	    write(c, fake_listing, sizeof(fake_listing) - 1) != (ssize_t)sizeof(fake_listing) - 1)
		return;
}

static void *fake_loop(void *arg)
{
	struct fake_s3 *f = arg;

	for (;;) {
		struct pollfd p = { .fd = f->fd, .events = POLLIN };
		bool stop;
		int c;

		pthread_mutex_lock(&f->mu);
		stop = f->stop;
		pthread_mutex_unlock(&f->mu);
		if (stop)
			return NULL;
		if (poll(&p, 1, 50) <= 0)
			continue;
		c = accept(f->fd, NULL, NULL);
		if (c < 0)
			continue;
		fake_serve(f, c);
		close(c);
	}
}

struct bg_register {
	struct meta_client *c;
	Granary__V1__DatasetSpec *spec;
	Granary__V1__Dataset *d;
	enum error_code rc;
	char msg[ERROR_MSG_MAX];
	pthread_t t;
};

static void *bg_register(void *arg)
{
	struct bg_register *b = arg;
	struct error err;

	error_clear(&err);
	b->rc = meta_client_register(b->c, b->spec, &b->d, &err);
	snprintf(b->msg, sizeof(b->msg), "%s", err.msg);
	return NULL;
}

START_TEST(test_meta_answers_while_a_registration_is_slow)
{
	struct fake_s3 f = { .mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
			     .hold = true };
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	struct meta_proc mp;
	struct meta_client *c, *wc;
	struct bg_register first, second;
	Granary__V1__Dataset *d;
	Granary__V1__ListDatasetsReply *l;
	Granary__V1__HeartbeatReply *h;
	struct snapshot *snap = NULL;
	struct spec sp, small;
	struct error err;
	char addr[200], data[200], fake_ep[64], allowed[400];
	const char *flags[3] = { NULL };
	uint64_t t0, slowest = 0;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f.fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_eq(bind(f.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(f.fd, 16), 0);
	getsockname(f.fd, (struct sockaddr *)&sa, &len);
	f.port = ntohs(sa.sin_port);
	pthread_create(&f.t, NULL, fake_loop, &f);
	snprintf(fake_ep, sizeof(fake_ep), "http://127.0.0.1:%d", f.port);
	allow_also(flags, allowed, sizeof(allowed), fake_ep);

	snprintf(addr, sizeof(addr), "unix://%s/meta.sock", work);
	data_dir_path(data, sizeof(data), "data");
	meta_start(&mp, addr, data, flags);
	c = client_for(addr, true);
	wc = worker_for(addr);
	spec_init(&small, "ready", prefix);
	free_ds(register_ok(c, &small));

	spec_init(&sp, "slow", "slow/");
	sp.s.source_uri = "s3://fakebucket/slow/";
	sp.s.endpoint = fake_ep;
	sp.s.credentials_ref = "";
	memset(&first, 0, sizeof(first));
	first.c = c;
	first.spec = &sp.s;
	pthread_create(&first.t, NULL, bg_register, &first);
	pthread_mutex_lock(&f.mu);
	while (f.held < 1)
		pthread_cond_wait(&f.cond, &f.mu);
	pthread_mutex_unlock(&f.mu);

	/* The listing is stuck in the store. Everything else answers at once. */
	for (int i = 0; i < 20; i++) {
		t0 = retry_now_ms();
		ck_assert_int_eq(meta_client_get(c, "slow", &d, &err), ERR_OK);
		ck_assert_int_eq(d->state, GRANARY__V1__DATASET_STATE__DATASET_STATE_REGISTERING);
		ck_assert_uint_eq(d->generation, 0);
		free_ds(d);
		ck_assert_int_eq(meta_client_list(c, &l, &err), ERR_OK);
		ck_assert_uint_eq(l->n_datasets, 2);
		granary__v1__list_datasets_reply__free_unpacked(l, NULL);
		ck_assert_int_eq(meta_client_get(c, "ready", &d, &err), ERR_OK);
		free_ds(d);
		h = beat(wc, "node-a", "10.0.0.1:7480");
		granary__v1__heartbeat_reply__free_unpacked(h, NULL);
		if (retry_now_ms() - t0 > slowest)
			slowest = retry_now_ms() - t0;
	}
	fprintf(stderr, "slowest Get+List+Get+Heartbeat round during registration: %llu ms\n",
		(unsigned long long)slowest);
	ck_assert_uint_lt(slowest, 1000);
	ck_assert_int_eq(meta_client_fetch_snapshot(c, "slow", 0, &snap, NULL, &err),
			 ERR_UNAVAILABLE);
	ck_assert_int_eq(meta_client_delete(c, "slow", &err), ERR_UNAVAILABLE);

	/* A second Register of the same spec waits for the first one's result. */
	memset(&second, 0, sizeof(second));
	second.c = c;
	second.spec = &sp.s;
	pthread_create(&second.t, NULL, bg_register, &second);
	retry_sleep_ms(200);
	pthread_mutex_lock(&f.mu);
	ck_assert_int_eq(f.requests, 1); /* it did not list again */
	f.hold = false;
	pthread_cond_broadcast(&f.cond);
	pthread_mutex_unlock(&f.mu);
	pthread_join(first.t, NULL);
	pthread_join(second.t, NULL);
	ck_assert_msg(first.rc == ERR_OK, "%s", first.msg);
	ck_assert_msg(second.rc == ERR_OK, "%s", second.msg);
	ck_assert_uint_eq(first.d->generation, 1);
	ck_assert_uint_eq(first.d->files, 3);
	ck_assert_uint_eq(first.d->bytes, 60);
	ck_assert_uint_eq(second.d->generation, 1);
	ck_assert_int_eq(second.d->created_unix_ms, first.d->created_unix_ms);
	pthread_mutex_lock(&f.mu);
	ck_assert_int_eq(f.requests, 1);
	f.stop = true;
	pthread_cond_broadcast(&f.cond);
	pthread_mutex_unlock(&f.mu);
	pthread_join(f.t, NULL);
	close(f.fd);
	ck_assert_int_eq(meta_client_fetch_snapshot(c, "slow", 0, &snap, NULL, &err), ERR_OK);
	ck_assert_uint_ne(snapshot_resolve_path(snap, "b/c.rec"), 0);
	snapshot_free(snap);
	free_ds(first.d);
	free_ds(second.d);
	meta_client_free(c);
	meta_client_free(wc);
	ck_assert_int_eq(meta_stop(&mp), 0);
}
END_TEST

/* ---- hostile endpoints -------------------------------------------------- */

/* A port that answers every connection with text that is not HTTP, or an
 * HTTP server that is not S3 (an HTML 404). */
struct junk {
	int fd;
	const char *reply;
	pthread_t t;
};

static int listen_any(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fd, 64), 0);
	getsockname(fd, (struct sockaddr *)&sa, &len);
	*port = ntohs(sa.sin_port);
	return fd;
}

static void *junk_loop(void *arg)
{
	struct junk *j = arg;
	char buf[4096];

	for (;;) {
		int c = accept(j->fd, NULL, NULL);

		if (c < 0)
			return NULL;
		(void)!read(c, buf, sizeof(buf));
		(void)!write(c, j->reply, strlen(j->reply));
		close(c);
	}
}

static void junk_start(struct junk *j, const char *reply, int *port)
{
	j->reply = reply;
	j->fd = listen_any(port);
	pthread_create(&j->t, NULL, junk_loop, j);
}

static void junk_stop(struct junk *j)
{
	shutdown(j->fd, SHUT_RDWR);
	close(j->fd);
	pthread_join(j->t, NULL);
}

static void hostile_spec(struct spec *sp, const char *name, const char *pfx, const char *ep)
{
	spec_init(sp, name, pfx);
	snprintf(sp->uri, sizeof(sp->uri), "s3://hostile/%s", pfx);
	sp->s.endpoint = (char *)ep;
	sp->s.credentials_ref = "";
}

/*
 * An endpoint answering every ListObjectsV2 with the token it was asked
 * with kept meta listing forever (3,000 requests a second); pages without
 * end, sizes that wrap the total, a file beside a directory of its name.
 */
START_TEST(test_meta_refuses_hostile_listings_at_once)
{
	const char *flags[5] = { NULL, NULL, "--listing.max_pages", "50", NULL };
	struct meta_proc mp;
	struct meta_client *c;
	struct harness_recorder *h = harness_recorder_start();
	const char *ep = harness_recorder_url(h);
	Granary__V1__Dataset *d = NULL;
	struct spec sp;
	struct error err;
	char listen[200], data[200], allowed[400];
	uint64_t t0;

	allow_also(flags, allowed, sizeof(allowed), ep);
	snprintf(listen, sizeof(listen), "unix://%s/meta.sock", work);
	data_dir_path(data, sizeof(data), "data");
	meta_start(&mp, listen, data, flags);
	c = client_for(listen, true);

	hostile_spec(&sp, "loop", "loop/", ep);
	t0 = retry_now_ms();
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_uint_lt(retry_now_ms() - t0, 5000);
	ck_assert_msg(strstr(err.msg, "continuation token") && strstr(err.msg, ep) &&
			      strstr(err.msg, "s3://hostile"),
		      "%s", err.msg);
	ck_assert_uint_le(harness_recorder_requests(h), 2);

	hostile_spec(&sp, "pages", "pages/", ep);
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_NO_SPACE);
	ck_assert_msg(strstr(err.msg, "more than 50 pages") && strstr(err.msg, "listing.max_pages"),
		      "%s", err.msg);

	hostile_spec(&sp, "huge", "huge/", ep);
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "'huge/a'") && strstr(err.msg, "5 TiB"), "%s", err.msg);

	/* The directory is kept, the file left out and counted. */
	hostile_spec(&sp, "clash", "clash/", ep);
	d = register_ok(c, &sp);
	ck_assert_uint_eq(d->files, 1);
	ck_assert_uint_eq(d->skipped, 1);
	free_ds(d);
	ck_assert_int_eq(meta_client_get(c, "clash", &d, &err), ERR_OK);
	ck_assert_uint_eq(d->skipped, 1);
	free_ds(d);
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);
	ck_assert(harness_file_contains(mp.log, "key is both a file and a directory"));
	ck_assert(harness_file_contains(mp.log, "skipped=1"));
	harness_recorder_stop(h);
}
END_TEST

/* A closed port, a port that is not HTTP and an HTTP server that is not S3
 * give one message, so that registrations cannot map the pod network. */
START_TEST(test_meta_says_the_same_of_every_endpoint_that_is_not_s3)
{
	struct meta_proc mp;
	struct meta_client *c;
	struct junk garbage, html;
	Granary__V1__Dataset *d = NULL;
	struct spec sp;
	struct error err;
	char listen[200], data[200], ep[3][64], want[300], allowed[400];
	const char *flags[3] = { "--store.allowed_endpoints", allowed, NULL };
	int ports[3];

	ports[0] = harness_free_port();
	junk_start(&garbage, "SSH-2.0-OpenSSH_9.6\r\n", &ports[1]);
	junk_start(&html,
		   "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 22\r\n"
		   "Connection: close\r\n\r\n<html>not here</html>\n",
		   &ports[2]);
	for (int i = 0; i < 3; i++)
		snprintf(ep[i], sizeof(ep[i]), "http://127.0.0.1:%d", ports[i]);
	snprintf(allowed, sizeof(allowed), "%s,%s,%s", ep[0], ep[1], ep[2]);
	snprintf(listen, sizeof(listen), "unix://%s/meta.sock", work);
	data_dir_path(data, sizeof(data), "data");
	meta_start(&mp, listen, data, flags);
	c = client_for(listen, true);
	for (int i = 0; i < 3; i++) {
		char rest[sizeof(err.msg)], *at;

		hostile_spec(&sp, "probe", "x/", ep[i]);
		ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_UNAVAILABLE);
		snprintf(want, sizeof(want),
			 "cannot list 's3://hostile/x/' at %s: the endpoint did not answer as an S3 "
			 "server",
			 ep[i]);
		/* What it must not say, looked for with the endpoint left
		 * out (its port may hold "404"). */
		snprintf(rest, sizeof(rest), "%s", err.msg);
		while ((at = strstr(rest, ep[i])))
			memset(at, '*', strlen(ep[i]));
		ck_assert_msg(strstr(err.msg, want) && !strstr(rest, "attempts") &&
				      !strstr(rest, "404") && !strstr(rest, "refused"),
			      "endpoint %d: '%s'", i, err.msg);
	}
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);
	junk_stop(&garbage);
	junk_stop(&html);
}
END_TEST

/*
 * A registration names its endpoint, and a csi caller may name any file
 * meta can read as credentials_ref, meta's own credentials file included:
 * meta listed whatever endpoint the spec named, signing with that file
 * (the key id and a signature reached the listener) or unsigned. An
 * endpoint that is neither store.endpoint nor in store.allowed_endpoints
 * is refused before anything is sent to it, naming the setting; one the
 * administrator allows gets meta's own credentials.
 */
START_TEST(test_meta_sends_nothing_to_endpoints_not_allowed)
{
	struct harness_recorder *rec = harness_recorder_start();
	const char *ep = harness_recorder_url(rec);
	struct meta_proc mp;
	struct meta_client *c;
	Granary__V1__Dataset *d = NULL;
	struct spec sp;
	struct error err;
	char listen[200], data[200], want[300];
	const char *flags[6];

	snprintf(listen, sizeof(listen), "unix://%s/meta.sock", work);
	data_dir_path(data, sizeof(data), "data");
	flags[0] = "--store.credentials_file";
	flags[1] = credentials;
	flags[2] = NULL;
	meta_start(&mp, listen, data, flags);
	c = client_for(listen, true);
	snprintf(want, sizeof(want),
		 "field 'endpoint': endpoint '%s' is not allowed: the endpoints a dataset may "
		 "name are store.endpoint and store.allowed_endpoints",
		 ep);
	for (int with_ref = 1; with_ref >= 0; with_ref--) {
		hostile_spec(&sp, "foreign", "empty/", ep);
		sp.s.credentials_ref = with_ref ? credentials : "";
		ck_assert_msg(meta_client_register(c, &sp.s, &d, &err) == ERR_INVALID,
			      "registered (credentials_ref '%s'): %u requests reached %s, %u signed",
			      sp.s.credentials_ref, harness_recorder_requests(rec), ep,
			      harness_recorder_signed(rec));
		ck_assert_msg(strstr(err.msg, want), "%s", err.msg);
	}
	ck_assert_uint_eq(harness_recorder_requests(rec), 0);
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);

	/* Allowed: listed with meta's own credentials. */
	flags[2] = "--store.allowed_endpoints";
	flags[3] = ep;
	flags[4] = NULL;
	harness_rm_rf(data);
	meta_start(&mp, listen, data, flags);
	c = client_for(listen, true);
	hostile_spec(&sp, "allowed", "empty/", ep);
	free_ds(register_ok(c, &sp));
	ck_assert_uint_eq(harness_recorder_requests(rec), 1);
	ck_assert_uint_eq(harness_recorder_signed(rec), 1);
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);

	/* Taken off the list: the record is skipped at start, so that no
	 * refresh, worker or mount reads the endpoint again. */
	flags[2] = NULL;
	meta_start(&mp, listen, data, flags);
	c = client_for(listen, true);
	ck_assert_int_eq(meta_client_get(c, "allowed", &d, &err), ERR_NOT_FOUND);
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);
	ck_assert(harness_file_contains(mp.log, "dataset record skipped"));
	ck_assert_uint_eq(harness_recorder_requests(rec), 1);
	harness_recorder_stop(rec);
}
END_TEST

/*
 * Listings of endpoints a spec names take at most half of the build slots:
 * two held on slow endpoints, a third such registration is refused at once,
 * and the cluster's own store still registers.
 */
START_TEST(test_meta_keeps_build_slots_for_the_cluster_store)
{
	struct fake_s3 f[2];
	struct bg_register bg[2];
	struct spec held[2], third, own;
	struct meta_proc mp;
	struct meta_client *c;
	Granary__V1__Dataset *d = NULL;
	struct error err;
	char listen[200], data[200], ep[2][64], names[2][16], allowed[400];
	const char *flags[] = { "--store.endpoint", endpoint, "--store.allowed_endpoints", allowed,
				NULL };
	uint64_t t0;

	for (int i = 0; i < 2; i++) {
		memset(&f[i], 0, sizeof(f[i]));
		pthread_mutex_init(&f[i].mu, NULL);
		pthread_cond_init(&f[i].cond, NULL);
		f[i].hold = true;
		f[i].fd = listen_any(&f[i].port);
		snprintf(ep[i], sizeof(ep[i]), "http://127.0.0.1:%d", f[i].port);
	}
	snprintf(allowed, sizeof(allowed), "%s,%s,http://127.0.0.1:1", ep[0], ep[1]);
	snprintf(listen, sizeof(listen), "unix://%s/meta.sock", work);
	data_dir_path(data, sizeof(data), "data");
	meta_start(&mp, listen, data, flags);
	c = client_for(listen, true);
	for (int i = 0; i < 2; i++) {
		pthread_create(&f[i].t, NULL, fake_loop, &f[i]);
		snprintf(names[i], sizeof(names[i]), "held-%d", i);
		hostile_spec(&held[i], names[i], "slow/", ep[i]);
		memset(&bg[i], 0, sizeof(bg[i]));
		bg[i].c = c;
		bg[i].spec = &held[i].s;
		pthread_create(&bg[i].t, NULL, bg_register, &bg[i]);
		pthread_mutex_lock(&f[i].mu);
		while (f[i].held < 1)
			pthread_cond_wait(&f[i].cond, &f[i].mu);
		pthread_mutex_unlock(&f[i].mu);
	}
	hostile_spec(&third, "third", "slow/", "http://127.0.0.1:1");
	t0 = retry_now_ms();
	ck_assert_int_eq(meta_client_register(c, &third.s, &d, &err), ERR_UNAVAILABLE);
	ck_assert_uint_lt(retry_now_ms() - t0, 2000);
	ck_assert_msg(strstr(err.msg, "other than store.endpoint") && strstr(err.msg, "retry later"),
		      "%s", err.msg);
	spec_init(&own, "own", prefix);
	own.s.endpoint = "";
	d = register_ok(c, &own);
	ck_assert_uint_eq(d->files, 5);
	free_ds(d);
	for (int i = 0; i < 2; i++) {
		pthread_mutex_lock(&f[i].mu);
		f[i].hold = false;
		f[i].stop = true;
		pthread_cond_broadcast(&f[i].cond);
		pthread_mutex_unlock(&f[i].mu);
		pthread_join(bg[i].t, NULL);
		ck_assert_msg(bg[i].rc == ERR_OK, "%s", bg[i].msg);
		free_ds(bg[i].d);
		pthread_join(f[i].t, NULL);
		close(f[i].fd);
	}
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);
}
END_TEST

/* A spec of a file:// source: no endpoint, no credentials. */
static void file_spec(struct spec *sp, const char *name, const char *uri)
{
	spec_init(sp, name, "");
	snprintf(sp->uri, sizeof(sp->uri), "%s", uri);
	sp->s.endpoint = "";
	sp->s.credentials_ref = "";
}

/*
 * A file:// source is a directory of meta's host that every pod mounting
 * the dataset could read, and meta answers anyone who reaches it: off
 * unless allowed_file_roots lists roots, then only strictly inside one,
 * resolved, at registration, at refresh and at start-up.
 */
START_TEST(test_meta_file_sources_only_under_allowed_file_roots)
{
	struct meta_proc mp;
	struct meta_client *c;
	Granary__V1__Dataset *d = NULL;
	struct spec sp;
	struct error err;
	char listen[200], data[200], roots[200], dir[300], uri[400];
	const char *flags[] = { "--allowed_file_roots", roots, NULL };

	snprintf(listen, sizeof(listen), "unix://%s/meta.sock", work);
	data_dir_path(data, sizeof(data), "data");
	meta_start(&mp, listen, data, NULL);
	c = client_for(listen, true);
	file_spec(&sp, "host", "file:///etc/");
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "field 'source_uri': file:// sources are off "
				      "(allowed_file_roots is empty), got 'file:///etc/'"),
		      "%s", err.msg);
	ck_assert_ptr_null(d);
	file_spec(&sp, "host", "file:///");
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_int_eq(meta_client_get(c, "host", &d, &err), ERR_NOT_FOUND);
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);

	snprintf(roots, sizeof(roots), "%s/roots", work);
	snprintf(dir, sizeof(dir), "%s/ds", roots);
	harness_file_roots(roots, "a.rec");
	meta_start(&mp, listen, data, flags);
	c = client_for(listen, true);
	snprintf(uri, sizeof(uri), "file://%s/ds/", roots);
	file_spec(&sp, "files", uri);
	d = register_ok(c, &sp);
	ck_assert_uint_eq(d->files, 1);
	free_ds(d);
	file_spec(&sp, "host", "file:///etc/");
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "field 'source_uri': 'file:///etc/' is outside allowed_file_roots"),
		      "%s", err.msg);
	snprintf(uri, sizeof(uri), "file://%s/etc/", roots);
	file_spec(&sp, "link", uri);
	ck_assert_int_eq(meta_client_register(c, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "resolves to '/etc', outside allowed_file_roots"), "%s",
		      err.msg);
	/* The directory swapped for a link out: its refresh lists nothing. */
	snprintf(uri, sizeof(uri), "rm -rf '%s' && ln -s /etc '%s'", dir, dir);
	ck_assert_int_eq(system(uri), 0);
	ck_assert_int_eq(meta_client_refresh(c, "files", &d, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "resolves to '/etc'"), "%s", err.msg);
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);

	/* Restarted without roots, meta serves none of its file:// datasets. */
	meta_start(&mp, listen, data, NULL);
	c = client_for(listen, true);
	ck_assert_int_eq(meta_client_get(c, "files", &d, &err), ERR_NOT_FOUND);
	meta_client_free(c);
	ck_assert_int_eq(meta_stop(&mp), 0);
	ck_assert(harness_file_contains(mp.log, "allowed_file_roots is empty"));
}
END_TEST

/* ---- authentication ---------------------------------------------------- */

/* An rpc_client that signs as a worker with the worker's key, but with a
 * timestamp skew_s seconds off: a signature replayed that much later. */
struct skewed {
	struct token *key;
	int64_t skew_s;
};

static enum error_code sign_skewed(const char *method, const void *body, size_t len,
				   char *value, size_t size, void *arg, struct error *err)
{
	struct skewed *k = arg;

	if (meta_auth_sign(k->key, META_ROLE_WORKER, method, body, len,
			   (int64_t)time(NULL) + k->skew_s, value, size) != ERR_OK)
		return error_set(err, ERR_INTERNAL, "cannot sign");
	return ERR_OK;
}

static enum error_code skewed_heartbeat(const char *address, struct skewed *k,
					struct error *err)
{
	struct rpc_client_options opt = { .wait_for_ready = true, .auth_key = META_AUTH_METADATA,
					  .auth = sign_skewed, .auth_arg = k };
	Granary__V1__HeartbeatRequest req = GRANARY__V1__HEARTBEAT_REQUEST__INIT;
	ProtobufCMessage *reply = NULL;
	struct rpc_client *rc = NULL;
	enum error_code code;

	ck_assert_int_eq(rpc_client_new(address, &opt, &rc, err), ERR_OK);
	req.worker_id = "node-replayed";
	req.address = "10.6.6.6:7480";
	code = rpc_client_call(rc, META_METHOD_HEARTBEAT, &req.base,
			       &granary__v1__heartbeat_reply__descriptor, 10000, &reply, err);
	if (reply)
		protobuf_c_message_free_unpacked(reply, NULL);
	rpc_client_free(rc);
	return code;
}

/* Calls that change meta, from a client without a key, with the mount
 * role's key or with another role's key: each refused with its status,
 * nothing changed; the roles that own them succeed. */
START_TEST(test_meta_refuses_unsigned_and_foreign_calls)
{
	struct meta_proc mp;
	struct meta_client *csi, *anon, *mount, *worker, *forged;
	Granary__V1__Dataset *d = NULL;
	Granary__V1__HeartbeatReply *h = NULL;
	Granary__V1__ListWorkersReply *w;
	Granary__V1__ListDatasetsReply *l = NULL;
	struct snapshot *snap = NULL;
	struct skewed sk = { 0 };
	struct spec sp;
	struct error err;
	char listen[200], data[200];

	snprintf(listen, sizeof(listen), "unix://%s/meta.sock", work);
	data_dir_path(data, sizeof(data), "data");
	meta_start(&mp, listen, data, NULL);
	csi = client_for(listen, true);
	anon = client_as(listen, true, META_ROLE_CSI, NULL);
	mount = client_as(listen, true, META_ROLE_MOUNT, keys.mount);
	worker = worker_for(listen);
	/* The mount key presented as the worker's. */
	forged = client_as(listen, true, META_ROLE_WORKER, keys.mount);
	spec_init(&sp, "owned", prefix);
	free_ds(register_ok(csi, &sp));

	/* No signature: UNAUTHENTICATED, whatever the method. */
	spec_init(&sp, "intruder", prefix);
	ck_assert_int_eq(meta_client_register(anon, &sp.s, &d, &err), ERR_UNAUTHENTICATED);
	ck_assert_msg(strstr(err.msg, "unsigned call") && strstr(err.msg, "RegisterDataset"), "%s",
		      err.msg);
	ck_assert_int_eq(meta_client_delete(anon, "owned", &err), ERR_UNAUTHENTICATED);
	ck_assert_int_eq(meta_client_refresh(anon, "owned", &d, &err), ERR_UNAUTHENTICATED);
	ck_assert_int_eq(meta_client_heartbeat(anon, "node-x", "10.6.6.6:7480", 1, 0, &h, &err),
			 ERR_UNAUTHENTICATED);
	ck_assert_int_eq(meta_client_list(anon, &l, &err), ERR_UNAUTHENTICATED);
	ck_assert_int_eq(meta_client_get(anon, "owned", &d, &err), ERR_UNAUTHENTICATED);

	/* The mount role reads, and nothing else. */
	ck_assert_int_eq(meta_client_heartbeat(mount, "node-x", "10.6.6.6:7480", 1, 0, &h, &err),
			 ERR_PERMISSION);
	ck_assert_msg(strstr(err.msg, "role 'mount' may not call it (worker only)"), "%s",
		      err.msg);
	ck_assert_int_eq(meta_client_register(mount, &sp.s, &d, &err), ERR_PERMISSION);
	ck_assert_int_eq(meta_client_delete(mount, "owned", &err), ERR_PERMISSION);
	ck_assert_int_eq(meta_client_refresh(mount, "owned", &d, &err), ERR_PERMISSION);
	ck_assert_int_eq(meta_client_get(mount, "owned", &d, &err), ERR_OK);
	free_ds(d);
	ck_assert_msg(meta_client_fetch_snapshot(mount, "owned", 0, &snap, NULL, &err) == ERR_OK,
		      "%s", err.msg);
	snapshot_free(snap);

	/* The csi role cannot join the membership; the worker cannot change
	 * datasets. */
	ck_assert_int_eq(meta_client_heartbeat(csi, "node-x", "10.6.6.6:7480", 1, 0, &h, &err),
			 ERR_PERMISSION);
	ck_assert_int_eq(meta_client_register(worker, &sp.s, &d, &err), ERR_PERMISSION);
	ck_assert_int_eq(meta_client_delete(worker, "owned", &err), ERR_PERMISSION);
	ck_assert_int_eq(meta_client_refresh(worker, "owned", &d, &err), ERR_PERMISSION);

	/* Another role's key in the worker's name. */
	ck_assert_int_eq(meta_client_heartbeat(forged, "node-x", "10.6.6.6:7480", 1, 0, &h, &err),
			 ERR_PERMISSION);
	ck_assert_msg(strstr(err.msg, "signature of role 'worker' does not match"), "%s", err.msg);

	/* The worker's own key, replayed past the window: refused; within it:
	 * accepted. */
	ck_assert_int_eq(token_load_file(keys.worker, &sk.key, &err), ERR_OK);
	sk.skew_s = -(META_AUTH_WINDOW_S + 30);
	ck_assert_int_eq(skewed_heartbeat(listen, &sk, &err), ERR_PERMISSION);
	ck_assert_msg(strstr(err.msg, "away from granary-meta's clock"), "%s", err.msg);
	sk.skew_s = -(META_AUTH_WINDOW_S - 30);
	ck_assert_msg(skewed_heartbeat(listen, &sk, &err) == ERR_OK, "%s", err.msg);
	token_free(sk.key);

	/* The owners: a worker joins, the controller refreshes and deletes. */
	ck_assert_msg(meta_client_heartbeat(worker, "node-a", "10.0.0.1:7480", 1, 0, &h, &err) ==
			      ERR_OK,
		      "%s", err.msg);
	granary__v1__heartbeat_reply__free_unpacked(h, NULL);
	ck_assert_int_eq(meta_client_list_workers(mount, &w, &err), ERR_OK);
	ck_assert_uint_eq(w->n_workers, 2); /* node-replayed (in the window) and node-a */
	ck_assert_str_eq(w->workers[0]->id, "node-a");
	ck_assert_str_eq(w->workers[1]->id, "node-replayed");
	granary__v1__list_workers_reply__free_unpacked(w, NULL);
	ck_assert_msg(meta_client_refresh(csi, "owned", &d, &err) == ERR_OK, "%s", err.msg);
	free_ds(d);
	ck_assert_int_eq(meta_client_delete(csi, "owned", &err), ERR_OK);

	meta_client_free(csi);
	meta_client_free(anon);
	meta_client_free(mount);
	meta_client_free(worker);
	meta_client_free(forged);
	ck_assert_int_eq(meta_stop(&mp), 0);
	/* No key reached the log. */
	ck_assert(!harness_file_contains(mp.log, "role-key"));
	ck_assert(harness_file_contains(mp.log, "auth.roles=csi,worker,mount"));
}
END_TEST

/* Without a key file meta refuses to start unless told it may serve
 * unsigned calls; with auth.insecure it serves them. */
START_TEST(test_meta_starts_without_keys_only_when_insecure)
{
	static const char *const insecure[] = { "--auth.insecure", "true", NULL };
	struct meta_proc mp;
	struct meta_client *anon;
	Granary__V1__HeartbeatReply *h = NULL;
	char exe[600], listen[200], data[200], log[256];
	const char *argv[8];
	pid_t pid;
	int status;

	snprintf(listen, sizeof(listen), "unix://%s/meta.sock", work);
	data_dir_path(data, sizeof(data), "data");
	snprintf(exe, sizeof(exe), "%s/granary-meta", bin_dir);
	snprintf(log, sizeof(log), "%s/meta-nokey.log", work);
	argv[0] = exe;
	argv[1] = "--listen";
	argv[2] = listen;
	argv[3] = "--data_dir";
	argv[4] = data;
	argv[5] = NULL;
	pid = harness_spawn(argv, log);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2);
	ck_assert(harness_file_contains(log, "no key file"));
	ck_assert(harness_file_contains(log, "auth.insecure=true"));

	meta_start(&mp, listen, data, insecure);
	anon = client_as(listen, true, META_ROLE_CSI, NULL);
	ck_assert_int_eq(meta_client_heartbeat(anon, "node-x", "10.0.0.9:7480", 1, 0, &h, NULL),
			 ERR_OK);
	granary__v1__heartbeat_reply__free_unpacked(h, NULL);
	meta_client_free(anon);
	ck_assert_int_eq(meta_stop(&mp), 0);
	ck_assert(harness_file_contains(mp.log, "serves unsigned calls"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("meta");
	TCase *tc = tcase_create("e2e");
	TCase *endpoints = tcase_create("endpoints");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_meta_registers_is_idempotent_and_refuses_conflicts);
	tcase_add_test(tc, test_meta_maps_every_failure_to_its_status);
	tcase_add_test(tc, test_meta_streams_a_large_snapshot_in_chunks);
	tcase_add_test(tc, test_meta_restart_serves_snapshots_without_listing);
	tcase_add_test(tc, test_meta_heartbeats_and_expiry_change_the_version);
	tcase_add_test(tc, test_meta_answers_while_a_registration_is_slow);
	tcase_add_test(tc, test_meta_refuses_hostile_listings_at_once);
	tcase_add_test(tc, test_meta_says_the_same_of_every_endpoint_that_is_not_s3);
	tcase_add_test(tc, test_meta_keeps_build_slots_for_the_cluster_store);
	tcase_add_test(tc, test_meta_file_sources_only_under_allowed_file_roots);
	tcase_add_test(tc, test_meta_refuses_unsigned_and_foreign_calls);
	tcase_add_test(tc, test_meta_starts_without_keys_only_when_insecure);
	suite_add_tcase(s, tc);

	/* Where meta may send requests (CK_RUN_CASE=endpoints runs these alone). */
	tcase_add_checked_fixture(endpoints, setup, teardown);
	tcase_set_timeout(endpoints, 300);
	tcase_add_test(endpoints, test_meta_sends_nothing_to_endpoints_not_allowed);
	suite_add_tcase(s, endpoints);
	return check_main_run(s);
}

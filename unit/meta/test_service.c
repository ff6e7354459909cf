/*
 * test_service.c - the granary.v1.Meta adapters and meta_client end to end
 * in one process: rpc_server + meta_service over a registry of file://
 * sources and a membership, reached through meta_client on a unix socket.
 * Checks that every method maps its fields and its errors (one status per
 * core error code) and that snapshots travel in chunks and decode.
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "meta/meta_client.h"
#include "meta/service.h"
#include "unit/check_main.h"

/* 160 bytes: with 6000 of them the snapshot is over 1 MiB. */
#define LONG_NAME                                                                          \
	"a-rather-long-object-name-to-fill-the-snapshot-a-rather-long-object-name-to-fill-" \
	"the-snapshot-a-rather-long-object-name-to-fill-the-snapshot-a-rather-long-object"

static char root[64], address[128], src_uri[160];
static struct registry *reg;
static struct membership *mem;
static struct rpc_server *srv;
static struct meta_service svc;
static struct meta_client *cl;

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void write_file(const char *rel, size_t size)
{
	char path[512], *slash;
	FILE *f;

	snprintf(path, sizeof(path), "%s/src/%s", root, rel);
	for (slash = strchr(path + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		mkdir(path, 0755);
		*slash = '/';
	}
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	for (size_t i = 0; i < size; i++)
		fputc('x', f);
	fclose(f);
}

static void setup(void)
{
	struct registry_options ropt = { 0 };
	struct membership_options mopt = { .interval_ms = 1000, .expiry_ms = 3000,
					   .initial_version = 7 };
	struct rpc_server_options sopt = { .threads = 3 };
	struct meta_client_options copt = { .timeout_ms = 5000, .wait_for_ready = true };
	char data[128];
	struct error err;

	log_set_level(LOG_LEVEL_ERROR);
	snprintf(root, sizeof(root), "/tmp/granary-service-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(root));
	snprintf(address, sizeof(address), "unix://%s/meta.sock", root);
	snprintf(src_uri, sizeof(src_uri), "file://%s/src/", root);
	snprintf(data, sizeof(data), "%s/data", root);
	ropt.file_roots = root;
	/* Enough long names that the snapshot needs more than one 1 MiB chunk. */
	for (int i = 0; i < 6000; i++) {
		char rel[300];

		snprintf(rel, sizeof(rel), "dir-%02d/%s-%06d.bin", i % 50, LONG_NAME, i);
		write_file(rel, (size_t)(i % 3));
	}
	ropt.data_dir = data;
	ck_assert_int_eq(registry_open(&ropt, &reg, &err), ERR_OK);
	ck_assert_int_eq(membership_new(&mopt, &mem, &err), ERR_OK);
	svc.registry = reg;
	svc.membership = mem;
	ck_assert_int_eq(rpc_server_new(&sopt, &srv, &err), ERR_OK);
	ck_assert_int_eq(meta_service_add(srv, &svc, &err), ERR_OK);
	ck_assert_int_eq(rpc_server_listen(srv, address, NULL, &err), ERR_OK);
	ck_assert_int_eq(rpc_server_start(srv, &err), ERR_OK);
	ck_assert_int_eq(meta_client_new(address, &copt, &cl, &err), ERR_OK);
}

static void teardown(void)
{
	meta_client_free(cl);
	rpc_server_free(srv);
	worker_identity_free(svc.identity);
	svc.identity = NULL;
	membership_free(mem);
	registry_free(reg);
	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

START_TEST(test_service_dataset_methods_round_trip)
{
	Granary__V1__DatasetSpec spec = GRANARY__V1__DATASET_SPEC__INIT;
	Granary__V1__DatasetOptions opts = GRANARY__V1__DATASET_OPTIONS__INIT;
	Granary__V1__Dataset *d = NULL;
	Granary__V1__ListDatasetsReply *l = NULL;
	struct error err;

	opts.block_size = 8u << 20;
	opts.preload = 1;
	spec.name = "train";
	spec.source_uri = src_uri;
	spec.options = &opts;
	ck_assert_msg(meta_client_register(cl, &spec, &d, &err) == ERR_OK, "%s", err.msg);
	ck_assert_uint_eq(d->generation, 1);
	ck_assert_int_eq(d->state, GRANARY__V1__DATASET_STATE__DATASET_STATE_READY);
	ck_assert_uint_eq(d->files, 6000);
	ck_assert_uint_eq(d->dirs, 51);
	ck_assert_uint_eq(d->bytes, 6000);
	ck_assert_uint_eq(d->spec->options->block_size, 8u << 20);
	ck_assert(d->spec->options->preload);
	granary__v1__dataset__free_unpacked(d, NULL);

	ck_assert_int_eq(meta_client_get(cl, "train", &d, &err), ERR_OK);
	ck_assert_str_eq(d->spec->source_uri, src_uri);
	granary__v1__dataset__free_unpacked(d, NULL);
	ck_assert_int_eq(meta_client_refresh(cl, "train", &d, &err), ERR_OK);
	ck_assert_uint_eq(d->generation, 2);
	granary__v1__dataset__free_unpacked(d, NULL);
	ck_assert_int_eq(meta_client_list(cl, &l, &err), ERR_OK);
	ck_assert_uint_eq(l->n_datasets, 1);
	ck_assert_uint_eq(l->datasets[0]->generation, 2);
	granary__v1__list_datasets_reply__free_unpacked(l, NULL);

	/* Each core error reaches the client as its own code, message intact. */
	opts.pin = 1;
	ck_assert_int_eq(meta_client_register(cl, &spec, &d, &err), ERR_EXISTS);
	ck_assert_ptr_nonnull(strstr(err.msg, "'options.pin'"));
	ck_assert_ptr_nonnull(strstr(err.msg, "RegisterDataset"));
	spec.name = "Bad";
	ck_assert_int_eq(meta_client_register(cl, &spec, &d, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'name'"));
	ck_assert_int_eq(meta_client_get(cl, "nope", &d, &err), ERR_NOT_FOUND);
	ck_assert_int_eq(meta_client_refresh(cl, "nope", &d, &err), ERR_NOT_FOUND);
	ck_assert_int_eq(meta_client_delete(cl, "train", &err), ERR_OK);
	ck_assert_int_eq(meta_client_delete(cl, "train", &err), ERR_NOT_FOUND);
	ck_assert_int_eq(meta_client_list(cl, &l, &err), ERR_OK);
	ck_assert_uint_eq(l->n_datasets, 0);
	granary__v1__list_datasets_reply__free_unpacked(l, NULL);
}
END_TEST

START_TEST(test_service_snapshot_travels_in_chunks)
{
	Granary__V1__DatasetSpec spec = GRANARY__V1__DATASET_SPEC__INIT;
	Granary__V1__Dataset *d = NULL;
	struct meta_client_fetch_stats stats;
	struct snapshot *snap = NULL;
	struct snapshot_totals t;
	struct error err;

	spec.name = "train";
	spec.source_uri = src_uri;
	ck_assert_int_eq(meta_client_register(cl, &spec, &d, &err), ERR_OK);
	granary__v1__dataset__free_unpacked(d, NULL);
	ck_assert_msg(meta_client_fetch_snapshot(cl, "train", 0, &snap, &stats, &err) == ERR_OK,
		      "%s", err.msg);
	ck_assert_uint_gt(stats.bytes, META_SNAPSHOT_CHUNK);
	ck_assert_uint_eq(stats.chunks, (stats.bytes + META_SNAPSHOT_CHUNK - 1) / META_SNAPSHOT_CHUNK);
	ck_assert_uint_eq(stats.generation, 1);
	snapshot_totals(snap, &t);
	ck_assert_uint_eq(t.files, 6000);
	ck_assert_uint_ne(snapshot_resolve_path(snap, "dir-07/" LONG_NAME "-000007.bin"), 0);
	snapshot_free(snap);
	/* Generation 1 of a dataset at 1 is there; 2 is not yet. */
	ck_assert_int_eq(meta_client_fetch_snapshot(cl, "train", 2, &snap, NULL, &err),
			 ERR_NOT_FOUND);
	ck_assert_ptr_null(snap);
	ck_assert_int_eq(meta_client_fetch_snapshot(cl, "nope", 0, &snap, NULL, &err),
			 ERR_NOT_FOUND);
}
END_TEST

START_TEST(test_service_membership_methods)
{
	Granary__V1__HeartbeatReply *h = NULL;
	Granary__V1__ListWorkersReply *w = NULL;
	struct error err;

	ck_assert_int_eq(meta_client_heartbeat(cl, "node-2", "10.1.0.2:7480", 100, 10, &h, &err),
			 ERR_OK);
	ck_assert_uint_eq(h->membership_version, 8);
	ck_assert_uint_eq(h->interval_ms, 1000);
	ck_assert_uint_eq(h->expiry_ms, 3000);
	granary__v1__heartbeat_reply__free_unpacked(h, NULL);
	ck_assert_int_eq(meta_client_heartbeat(cl, "node-1", "10.1.0.1:7480", 100, 20, &h, &err),
			 ERR_OK);
	granary__v1__heartbeat_reply__free_unpacked(h, NULL);
	ck_assert_int_eq(meta_client_list_workers(cl, &w, &err), ERR_OK);
	ck_assert_uint_eq(w->version, 9);
	ck_assert_uint_eq(w->n_workers, 2);
	ck_assert_str_eq(w->workers[0]->id, "node-1");
	ck_assert_str_eq(w->workers[0]->address, "10.1.0.1:7480");
	ck_assert_uint_eq(w->workers[0]->used_bytes, 20);
	ck_assert_int_gt(w->workers[1]->last_seen_unix_ms, 1600000000000LL);
	granary__v1__list_workers_reply__free_unpacked(w, NULL);
	ck_assert_int_eq(meta_client_heartbeat(cl, "node-3", "unix:///x", 1, 0, &h, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'address'"));
}
END_TEST

/* A heartbeat of process instance of node-1 at addr, leaving or not. */
static enum error_code beat_as(const char *addr, uint64_t instance, bool leaving,
			       uint64_t *version, struct error *err)
{
	Granary__V1__HeartbeatRequest req = GRANARY__V1__HEARTBEAT_REQUEST__INIT;
	Granary__V1__HeartbeatReply *h = NULL;
	enum error_code rc;

	req.worker_id = "node-1";
	req.address = (char *)addr;
	req.instance = instance;
	req.leaving = leaving;
	req.capacity_bytes = 100;
	rc = meta_client_heartbeat_send(cl, &req, &h, err);
	if (h)
		*version = h->membership_version;
	granary__v1__heartbeat_reply__free_unpacked(h, NULL);
	return rc;
}

static size_t workers_listed(void)
{
	Granary__V1__ListWorkersReply *w = NULL;
	struct error err;
	size_t n;

	ck_assert_msg(meta_client_list_workers(cl, &w, &err) == ERR_OK, "%s", err.msg);
	n = w->n_workers;
	granary__v1__list_workers_reply__free_unpacked(w, NULL);
	return n;
}

/* The instance and leaving fields reach the membership: a second process
 * of a live id is ALREADY_EXISTS with meta's message, a leaving one is
 * dropped at once (and only when it is the member). */
START_TEST(test_service_heartbeat_carries_the_instance_and_leaving)
{
	struct error err;
	uint64_t v = 0;

	ck_assert_msg(beat_as("10.1.0.1:7480", 0xaaa, false, &v, &err) == ERR_OK, "%s", err.msg);
	ck_assert_uint_eq(v, 8);
	ck_assert_int_eq(beat_as("10.1.0.9:7480", 0xbbb, false, &v, &err), ERR_EXISTS);
	ck_assert_msg(strstr(err.msg, "worker id 'node-1' is held by another live process at 10.1.0.1:7480 (instance 0000000000000aaa)"),
		      "%s", err.msg);
	/* The refused one leaving takes nothing with it. */
	ck_assert_int_eq(beat_as("10.1.0.9:7480", 0xbbb, true, &v, &err), ERR_OK);
	ck_assert_uint_eq(v, 8);
	ck_assert_uint_eq(workers_listed(), 1);
	ck_assert_int_eq(beat_as("10.1.0.1:7480", 0, true, &v, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'instance'"));
	ck_assert_int_eq(beat_as("10.1.0.1:7480", 0xaaa, true, &v, &err), ERR_OK);
	ck_assert_uint_eq(v, 9);
	ck_assert_uint_eq(workers_listed(), 0);
	ck_assert_msg(beat_as("10.1.0.9:7480", 0xbbb, false, &v, &err) == ERR_OK, "%s", err.msg);
	ck_assert_uint_eq(v, 10);
}
END_TEST

/* The apiserver of the identity test: a token "node-N" is a worker pod's
 * on node-N; "down" cannot be reviewed. */
static enum error_code review_stub(const char *token, const char *audience,
				   struct kubeapi_token_review *out, void *arg, struct error *err)
{
	(void)audience;
	(void)arg;
	memset(out, 0, sizeof(*out));
	if (strcmp(token, "down") == 0)
		return error_set(err, ERR_UNAVAILABLE, "the apiserver did not answer");
	out->authenticated = out->audience_ok = true;
	snprintf(out->username, sizeof(out->username), "system:serviceaccount:ns:worker");
	snprintf(out->node_name, sizeof(out->node_name), "%s", token);
	return ERR_OK;
}

static void put_token(const char *path, const char *token)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fprintf(f, "%s\n", token);
	fclose(f);
}

/* In Kubernetes: a Heartbeat carries its pod's token, read from the file
 * for each call; one for another worker id or none at all is refused, and
 * the membership stays as it was. */
START_TEST(test_service_heartbeat_needs_its_pods_token)
{
	struct worker_identity_config wc = { .ns = "ns", .service_account = "worker",
					     .audience = "granary-meta", .review = review_stub };
	struct meta_client_options copt = { .timeout_ms = 5000, .wait_for_ready = true };
	Granary__V1__HeartbeatReply *h = NULL;
	Granary__V1__ListWorkersReply *w = NULL;
	struct meta_client *pod = NULL;
	char path[256];
	struct error err;

	snprintf(path, sizeof(path), "%s/identity-token", root);
	put_token(path, "node-1");
	copt.identity_token_file = path;
	ck_assert_int_eq(worker_identity_new(&wc, &svc.identity, &err), ERR_OK);
	ck_assert_int_eq(meta_client_new(address, &copt, &pod, &err), ERR_OK);

	ck_assert_int_eq(meta_client_heartbeat(pod, "node-1", "10.1.0.1:7480", 100, 10, &h, &err),
			 ERR_OK);
	granary__v1__heartbeat_reply__free_unpacked(h, NULL);
	h = NULL;
	ck_assert_int_eq(meta_client_heartbeat(pod, "node-2", "10.6.6.6:7480", 100, 10, &h, &err),
			 ERR_PERMISSION);
	ck_assert_ptr_null(h);
	ck_assert_ptr_nonnull(strstr(err.msg, "on node 'node-1', not on 'node-2'"));
	ck_assert_int_eq(meta_client_heartbeat(cl, "node-1", "10.6.6.6:7480", 100, 10, &h, &err),
			 ERR_UNAUTHENTICATED);
	ck_assert_ptr_nonnull(strstr(err.msg, META_IDENTITY_METADATA));
	put_token(path, "down");
	ck_assert_int_eq(meta_client_heartbeat(pod, "node-1", "10.6.6.6:7480", 100, 10, &h, &err),
			 ERR_UNAVAILABLE);
	ck_assert_int_eq(meta_client_list_workers(cl, &w, &err), ERR_OK);
	ck_assert_uint_eq(w->n_workers, 1);
	ck_assert_str_eq(w->workers[0]->id, "node-1");
	ck_assert_str_eq(w->workers[0]->address, "10.1.0.1:7480");
	granary__v1__list_workers_reply__free_unpacked(w, NULL);

	/* The file is read for each heartbeat: a rotated token is used. */
	put_token(path, "node-2");
	ck_assert_int_eq(meta_client_heartbeat(pod, "node-2", "10.1.0.2:7480", 100, 10, &h, &err),
			 ERR_OK);
	granary__v1__heartbeat_reply__free_unpacked(h, NULL);
	unlink(path);
	ck_assert_int_eq(meta_client_heartbeat(pod, "node-2", "10.1.0.2:7480", 100, 10, &h, &err),
			 ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "meta.identity_token_file"));
	meta_client_free(pod);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("service");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_service_dataset_methods_round_trip);
	tcase_add_test(tc, test_service_snapshot_travels_in_chunks);
	tcase_add_test(tc, test_service_membership_methods);
	tcase_add_test(tc, test_service_heartbeat_carries_the_instance_and_leaving);
	tcase_add_test(tc, test_service_heartbeat_needs_its_pods_token);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}

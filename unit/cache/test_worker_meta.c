/*
 * test_worker_meta.c - the pure half of cache/worker_meta.c: how a meta
 * dataset spec becomes a fetch configuration on a worker, and how a
 * ListDatasets reply is diffed against the registry (what to register,
 * what to drop, what to leave alone). The descriptors compared against
 * come from a real fetcher over a file:// store, so the comparison is
 * checked against fetch.c's own normalisation. The member itself runs
 * against a meta that is not there, and against a fake one (an rpc_server
 * in this process) that records the heartbeats, lists the datasets and
 * workers a test gives it, and answers slowly when asked: when its
 * preloads run again (a membership, a failure) and how long it takes to
 * leave.
 */
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/worker_meta.h"
#include "common/log.h"
#include "common/retry.h"
#include "meta/methods.h"
#include "rpc/rpc_server.h"
#include "unit/check_main.h"

static const struct worker_meta_defaults defaults = {
	.store = { .endpoint = "http://10.0.0.9:9000", .region = "eu-west-1",
		   .credentials_file = "/etc/granary/s3/credentials", .request_timeout_ms = 1234 },
	.block_size = 4u << 20,
	.policy = BLOCKSTORE_SCAN_RESISTANT,
};

/* A dataset as ListDatasets returns it, on the stack. */
struct ds {
	Granary__V1__Dataset d;
	Granary__V1__DatasetSpec spec;
	Granary__V1__DatasetOptions opt;
};

static void ds_init(struct ds *x, const char *name, const char *source,
		    Granary__V1__DatasetState state)
{
	granary__v1__dataset__init(&x->d);
	granary__v1__dataset_spec__init(&x->spec);
	granary__v1__dataset_options__init(&x->opt);
	x->spec.name = (char *)name;
	x->spec.source_uri = (char *)source;
	x->spec.options = &x->opt;
	x->d.spec = &x->spec;
	x->d.state = state;
	x->d.generation = state == GRANARY__V1__DATASET_STATE__DATASET_STATE_REGISTERING ? 0 : 1;
}

#define READY GRANARY__V1__DATASET_STATE__DATASET_STATE_READY
#define REFRESHING GRANARY__V1__DATASET_STATE__DATASET_STATE_REFRESHING
#define REGISTERING GRANARY__V1__DATASET_STATE__DATASET_STATE_REGISTERING

START_TEST(test_worker_meta_config_takes_source_from_spec_and_access_from_worker)
{
	struct fetch_dataset_config c;
	struct error err;
	struct ds x;

	ds_init(&x, "imagenet", "s3://train/imagenet/", READY);
	x.spec.credentials_ref = "/var/run/meta-only/credentials";
	ck_assert_int_eq(worker_meta_dataset_config(&x.spec, &defaults, &c, &err), ERR_OK);
	ck_assert_str_eq(c.name, "imagenet");
	ck_assert_str_eq(c.source, "s3://train/imagenet/");
	ck_assert_str_eq(c.store.endpoint, "http://10.0.0.9:9000");
	ck_assert_str_eq(c.store.region, "eu-west-1");
	/* credentials_ref is a path in meta's pod: the worker uses its own */
	ck_assert_str_eq(c.store.credentials_file, "/etc/granary/s3/credentials");
	ck_assert_uint_eq(c.store.request_timeout_ms, 1234);
	ck_assert_uint_eq(c.block_size, 4u << 20);
	ck_assert_int_eq(c.policy, BLOCKSTORE_SCAN_RESISTANT);
	ck_assert(!c.pin);

	x.spec.endpoint = "https://s3.example.net";
	x.spec.region = "ap-south-1";
	x.opt.block_size = 64u << 10;
	x.opt.cache_policy = GRANARY__V1__CACHE_POLICY__CACHE_POLICY_LRU;
	x.opt.pin = true;
	ck_assert_int_eq(worker_meta_dataset_config(&x.spec, &defaults, &c, &err), ERR_OK);
	ck_assert_str_eq(c.store.endpoint, "https://s3.example.net");
	ck_assert_str_eq(c.store.region, "ap-south-1");
	ck_assert_str_eq(c.store.credentials_file, "/etc/granary/s3/credentials");
	ck_assert_uint_eq(c.block_size, 64u << 10);
	ck_assert_int_eq(c.policy, BLOCKSTORE_LRU);
	ck_assert(c.pin);

	x.opt.cache_policy = GRANARY__V1__CACHE_POLICY__CACHE_POLICY_SCAN_RESISTANT;
	ck_assert_int_eq(worker_meta_dataset_config(&x.spec, &defaults, &c, &err), ERR_OK);
	ck_assert_int_eq(c.policy, BLOCKSTORE_SCAN_RESISTANT);

	x.spec.options = NULL; /* absent options: all defaults */
	ck_assert_int_eq(worker_meta_dataset_config(&x.spec, &defaults, &c, &err), ERR_OK);
	ck_assert_uint_eq(c.block_size, 4u << 20);
	ck_assert(!c.pin);
}
END_TEST

START_TEST(test_worker_meta_config_refuses_what_a_worker_cannot_use)
{
	char long_name[300];
	struct fetch_dataset_config c;
	struct error err;
	struct ds x;

	/* Names meta takes, the worker takes: 200 bytes is fine, 254 is not. */
	memset(long_name, 'a', 200);
	long_name[200] = '\0';
	ds_init(&x, long_name, "s3://b/p/", READY);
	ck_assert_int_eq(worker_meta_dataset_config(&x.spec, &defaults, &c, &err), ERR_OK);
	memset(long_name, 'a', 254);
	long_name[254] = '\0';
	ds_init(&x, long_name, "s3://b/p/", READY);
	ck_assert_int_eq(worker_meta_dataset_config(&x.spec, &defaults, &c, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "field 'name'"));

	ds_init(&x, "ds", "s3://b/p/", READY);
	x.opt.block_size = 3u << 20;
	ck_assert_int_eq(worker_meta_dataset_config(&x.spec, &defaults, &c, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "dataset 'ds': field 'options.block_size'"));

	x.opt.block_size = 0;
	x.opt.cache_policy = 42;
	ck_assert_int_eq(worker_meta_dataset_config(&x.spec, &defaults, &c, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "field 'options.cache_policy'"));
}
END_TEST

START_TEST(test_worker_meta_served_means_ready_or_refreshing_with_a_generation)
{
	struct ds x;

	ds_init(&x, "ds", "s3://b/p/", READY);
	ck_assert(worker_meta_dataset_served(&x.d));
	x.d.state = REFRESHING;
	ck_assert(worker_meta_dataset_served(&x.d));
	ds_init(&x, "ds", "s3://b/p/", REGISTERING);
	ck_assert(!worker_meta_dataset_served(&x.d));
	x.d.spec = NULL;
	ck_assert(!worker_meta_dataset_served(&x.d));
}
END_TEST

START_TEST(test_worker_meta_preload_wanted_changes_with_what_is_asked)
{
	char *prefixes[] = { "train/", "val/" };
	char a[256], b[256], small[24];
	struct ds x;

	ds_init(&x, "ds", "s3://b/p/", READY);
	ck_assert(!worker_meta_preload_wanted(&x.d, a, sizeof(a))); /* preload off */
	x.opt.preload = true;
	ck_assert(worker_meta_preload_wanted(&x.d, a, sizeof(a)));
	/* a pin or policy change asks for nothing new */
	x.opt.pin = true;
	x.opt.cache_policy = GRANARY__V1__CACHE_POLICY__CACHE_POLICY_LRU;
	ck_assert(worker_meta_preload_wanted(&x.d, b, sizeof(b)));
	ck_assert_str_eq(a, b);
	/* prefixes, then another generation, each ask again */
	x.opt.preload_prefixes = prefixes;
	x.opt.n_preload_prefixes = 1;
	ck_assert(worker_meta_preload_wanted(&x.d, b, sizeof(b)));
	ck_assert_str_ne(a, b);
	snprintf(a, sizeof(a), "%s", b);
	x.opt.n_preload_prefixes = 2;
	ck_assert(worker_meta_preload_wanted(&x.d, b, sizeof(b)));
	ck_assert_str_ne(a, b);
	snprintf(a, sizeof(a), "%s", b);
	x.d.generation = 2;
	ck_assert(worker_meta_preload_wanted(&x.d, b, sizeof(b)));
	ck_assert_str_ne(a, b);
	/* what does not fit is not cut short into another request */
	ck_assert(!worker_meta_preload_wanted(&x.d, small, sizeof(small)));
}
END_TEST

/* A dataset removed and registered again starts at generation 1 again:
 * only when it was built tells the new registration from the old one,
 * whose preload must not stand for the new one's. */
START_TEST(test_worker_meta_preload_wanted_tells_registrations_apart)
{
	char a[256], b[256];
	struct ds x;

	ds_init(&x, "ds", "s3://b/p/", READY);
	x.opt.preload = true;
	x.d.created_unix_ms = 1700000000000;
	ck_assert(worker_meta_preload_wanted(&x.d, a, sizeof(a)));
	ck_assert(worker_meta_preload_wanted(&x.d, b, sizeof(b)));
	ck_assert_str_eq(a, b); /* the same registration asks the same */
	x.d.created_unix_ms = 1700000042000; /* deleted, registered again */
	ck_assert(worker_meta_preload_wanted(&x.d, b, sizeof(b)));
	ck_assert_uint_eq(x.d.generation, 1);
	ck_assert_str_ne(a, b);
}
END_TEST

/* With rendezvous placement a worker gains blocks only when a member it
 * held leaves, or when it is newly listed itself: a worker joining
 * elsewhere only takes blocks away, the same workers at other addresses
 * move none, and a membership without it places nothing on it. */
START_TEST(test_worker_meta_gains_blocks_when_a_member_leaves_or_it_is_new)
{
	static const struct placement_worker held[] = {
		{ "w1", "a:1" }, { "w2", "b:1" }, { "w3", "c:1" },
	};
	static const struct placement_worker joined[] = {
		{ "w4", "d:1" }, { "w3", "c:1" }, { "w2", "b:1" }, { "w1", "a:1" },
	};
	static const struct placement_worker moved[] = {
		{ "w1", "a:2" }, { "w2", "b:2" }, { "w3", "c:2" },
	};
	static const struct placement_worker left[] = { { "w1", "a:1" }, { "w3", "c:1" } };
	static const struct placement_worker replaced[] = {
		{ "w1", "a:1" }, { "w2", "b:1" }, { "w4", "d:1" },
	};
	static const struct placement_worker without[] = { { "w2", "b:1" }, { "w3", "c:1" } };
	struct placement *p = NULL;
	struct error err;

	ck_assert_int_eq(placement_new(&p, &err), ERR_OK);
	ck_assert(worker_meta_gains_blocks(p, held, 3, "w1")); /* the first one */
	ck_assert_int_eq(placement_update(p, held, 3, 1, &err), ERR_OK);
	ck_assert(!worker_meta_gains_blocks(p, held, 3, "w1"));
	ck_assert(!worker_meta_gains_blocks(p, joined, 4, "w1"));
	ck_assert(!worker_meta_gains_blocks(p, moved, 3, "w1"));
	ck_assert(worker_meta_gains_blocks(p, left, 2, "w1"));
	ck_assert(worker_meta_gains_blocks(p, replaced, 3, "w1"));
	ck_assert(!worker_meta_gains_blocks(p, without, 2, "w1"));
	ck_assert(worker_meta_gains_blocks(p, joined, 4, "w4")); /* new itself */
	ck_assert_int_eq(placement_update(p, without, 2, 2, &err), ERR_OK);
	ck_assert(worker_meta_gains_blocks(p, held, 3, "w1")); /* listed again */
	placement_free(p);
}
END_TEST

/* --- against a real registry ----------------------------------------------- */

static char base[64], src_uri[128], cache_dir[96];
/* The file:// sources lie under base. */
static const char *const file_roots[] = { base };
static struct blockstore *bs;
static struct fetcher *f;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void setup(void)
{
	struct error err;
	char path[128];

	snprintf(base, sizeof(base), "/tmp/test_worker_meta_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(base));
	snprintf(path, sizeof(path), "%s/data", base);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	snprintf(src_uri, sizeof(src_uri), "file://%s/data/", base);
	snprintf(cache_dir, sizeof(cache_dir), "%s/cache", base);
	ck_assert_int_eq(blockstore_open(&(struct blockstore_config){ .dir = cache_dir,
								      .capacity = 64u << 20,
								      .block_size = 64u << 10 },
					 &bs, &err), ERR_OK);
	ck_assert_int_eq(fetch_new(&(struct fetch_config){ .bs = bs, .max_inflight = 2,
							   .threads = 1, .readahead_max = 0,
							    .file_roots = file_roots, .nfile_roots = 1 },
				   &f, &err), ERR_OK);
}

static void teardown(void)
{
	fetch_free(f);
	blockstore_free(bs);
	nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* file:// keeps the test off the network; the worker's endpoint would be
 * taken for the store otherwise, which file:// ignores. */
static const struct worker_meta_defaults file_defaults = {
	.store = { .region = "" },  /* fetch.c stores us-east-1 for this */
	.block_size = 64u << 10,
	.policy = BLOCKSTORE_LRU,
};

static void register_as(struct ds *x)
{
	struct fetch_dataset_config c;
	struct error err;

	ck_assert_int_eq(worker_meta_dataset_config(&x->spec, &file_defaults, &c, &err), ERR_OK);
	ck_assert_msg(fetch_dataset_register(f, &c, NULL, &err) == ERR_OK, "%s", err.msg);
}

/* The registry's descriptors, for the plan. */
struct have {
	struct fetch_dataset **regs;
	const struct fetch_dataset_desc *desc[16];
	size_t n;
};

static void have_get(struct have *h)
{
	struct error err;

	ck_assert_int_eq(fetch_dataset_list(f, &h->regs, &h->n, &err), ERR_OK);
	ck_assert_uint_le(h->n, 16);
	for (size_t i = 0; i < h->n; i++)
		h->desc[i] = fetch_dataset_describe(h->regs[i]);
}

static void have_put(struct have *h)
{
	fetch_dataset_list_free(f, h->regs, h->n);
}

START_TEST(test_worker_meta_registered_dataset_matches_its_config)
{
	struct fetch_dataset_config c;
	struct fetch_dataset *got = NULL;
	struct error err;
	struct ds x;

	ds_init(&x, "ds", src_uri, READY);
	register_as(&x);
	ck_assert_int_eq(worker_meta_dataset_config(&x.spec, &file_defaults, &c, &err), ERR_OK);
	ck_assert_int_eq(fetch_dataset_get(f, "ds", &got, &err), ERR_OK);
	ck_assert(worker_meta_dataset_matches(fetch_dataset_describe(got), &c));
	x.opt.pin = true;
	ck_assert_int_eq(worker_meta_dataset_config(&x.spec, &file_defaults, &c, &err), ERR_OK);
	ck_assert(!worker_meta_dataset_matches(fetch_dataset_describe(got), &c));
	x.opt.pin = false;
	x.spec.region = "eu-north-1";
	ck_assert_int_eq(worker_meta_dataset_config(&x.spec, &file_defaults, &c, &err), ERR_OK);
	ck_assert(!worker_meta_dataset_matches(fetch_dataset_describe(got), &c));
	fetch_dataset_put(f, got);
}
END_TEST

static bool plan_adds(const struct worker_meta_plan *p, const Granary__V1__ListDatasetsReply *l,
		      const char *name)
{
	for (size_t i = 0; i < p->nadd; i++)
		if (strcmp(l->datasets[p->add[i]]->spec->name, name) == 0)
			return true;
	return false;
}

static bool plan_drops(const struct worker_meta_plan *p, const char *name)
{
	for (size_t i = 0; i < p->ndrop; i++)
		if (strcmp(p->drop[i], name) == 0)
			return true;
	return false;
}

/*
 * The registry holds:
 *   same      from meta, unchanged            -> nothing
 *   changed   from meta, meta now pins it     -> register again
 *   gone      from meta, no longer listed     -> unregister
 *   building  from meta, listed REGISTERING   -> nothing (kept)
 *   http      via HTTP, meta does not list it -> never touched
 *   adopted   via HTTP, meta lists the same   -> taken (register, a no-op)
 * and meta also lists:
 *   new       READY, not here                 -> register
 *   pending   REGISTERING, not here           -> nothing yet
 *   bad       READY, 3 MiB blocks             -> reported as bad
 */
START_TEST(test_worker_meta_plan_registers_changes_and_drops_only_its_own)
{
	struct ds same, changed, gone, building, http, adopted, fresh, pending, bad, building_now;
	Granary__V1__Dataset *listing[8];
	Granary__V1__ListDatasetsReply list = GRANARY__V1__LIST_DATASETS_REPLY__INIT;
	const char *owned[] = { "same", "changed", "gone", "building" };
	struct worker_meta_plan plan;
	struct have h;
	struct error err;

	ds_init(&same, "same", src_uri, READY);
	ds_init(&changed, "changed", src_uri, READY);
	ds_init(&gone, "gone", src_uri, READY);
	ds_init(&building, "building", src_uri, READY);
	ds_init(&http, "http", src_uri, READY);
	ds_init(&adopted, "adopted", src_uri, READY);
	struct ds *here[] = { &same, &changed, &gone, &building, &http, &adopted };

	for (size_t i = 0; i < sizeof(here) / sizeof(here[0]); i++)
		register_as(here[i]);

	changed.opt.pin = true;
	ds_init(&building_now, "building", src_uri, REGISTERING);
	ds_init(&fresh, "new", src_uri, READY);
	ds_init(&pending, "pending", src_uri, REGISTERING);
	ds_init(&bad, "bad", src_uri, READY);
	bad.opt.block_size = 3u << 20;
	listing[0] = &adopted.d;
	listing[1] = &bad.d;
	listing[2] = &building_now.d;
	listing[3] = &changed.d;
	listing[4] = &fresh.d;
	listing[5] = &pending.d;
	listing[6] = &same.d;
	list.datasets = listing;
	list.n_datasets = 7;

	have_get(&h);
	ck_assert_uint_eq(h.n, 6);
	ck_assert_int_eq(worker_meta_plan_make(&list, &file_defaults, h.desc, h.n, owned, 4, &plan,
					       &err), ERR_OK);
	have_put(&h);
	ck_assert_uint_eq(plan.nadd, 3);
	ck_assert(plan_adds(&plan, &list, "changed"));
	ck_assert(plan_adds(&plan, &list, "new"));
	ck_assert(plan_adds(&plan, &list, "adopted"));
	ck_assert_uint_eq(plan.nbad, 1);
	ck_assert_str_eq(list.datasets[plan.bad[0]]->spec->name, "bad");
	ck_assert_uint_eq(plan.ndrop, 1);
	ck_assert(plan_drops(&plan, "gone"));
	ck_assert(!plan_drops(&plan, "building"));
	ck_assert(!plan_drops(&plan, "http"));
	worker_meta_plan_release(&plan);

	/* An empty listing drops everything taken from meta, and only that. */
	list.n_datasets = 0;
	have_get(&h);
	ck_assert_int_eq(worker_meta_plan_make(&list, &file_defaults, h.desc, h.n, owned, 4, &plan,
					       &err), ERR_OK);
	have_put(&h);
	ck_assert_uint_eq(plan.nadd, 0);
	ck_assert_uint_eq(plan.ndrop, 4);
	ck_assert(!plan_drops(&plan, "http"));
	ck_assert(!plan_drops(&plan, "adopted"));
	worker_meta_plan_release(&plan);
}
END_TEST

/* After the plan is applied, the same listing plans nothing: a round in
 * steady state registers nothing again. */
START_TEST(test_worker_meta_plan_is_empty_in_steady_state)
{
	struct ds a, b;
	Granary__V1__Dataset *listing[2];
	Granary__V1__ListDatasetsReply list = GRANARY__V1__LIST_DATASETS_REPLY__INIT;
	const char *owned[] = { "a", "b" };
	struct worker_meta_plan plan;
	struct have h;
	struct error err;

	ds_init(&a, "a", src_uri, READY);
	ds_init(&b, "b", src_uri, REFRESHING);
	b.opt.block_size = 1u << 20;
	b.opt.cache_policy = GRANARY__V1__CACHE_POLICY__CACHE_POLICY_SCAN_RESISTANT;
	register_as(&a);
	register_as(&b);
	listing[0] = &a.d;
	listing[1] = &b.d;
	list.datasets = listing;
	list.n_datasets = 2;
	have_get(&h);
	ck_assert_int_eq(worker_meta_plan_make(&list, &file_defaults, h.desc, h.n, owned, 2, &plan,
					       &err), ERR_OK);
	have_put(&h);
	ck_assert_uint_eq(plan.nadd, 0);
	ck_assert_uint_eq(plan.nbad, 0);
	ck_assert_uint_eq(plan.ndrop, 0);
	worker_meta_plan_release(&plan);
}
END_TEST

/* Start and stop against an address where nothing listens: the worker
 * keeps going (rounds fail, nothing is dropped) and stops promptly. */
START_TEST(test_worker_meta_survives_an_unreachable_meta_and_stops)
{
	struct worker_meta *wm = NULL;
	struct worker_meta_stats st;
	struct fetch_dataset *got = NULL;
	struct error err;
	char sock[160];
	struct ds x;

	ds_init(&x, "kept", src_uri, READY);
	register_as(&x);
	snprintf(sock, sizeof(sock), "unix://%s/no-meta.sock", base);
	ck_assert_int_eq(worker_meta_start(&(struct worker_meta_config){
						   .address = sock,
						   .worker_id = "w1",
						   .advertise = "127.0.0.1:7480",
						   .capacity = 64u << 20,
						   .fetcher = f,
						   .defaults = file_defaults,
						   .call_timeout_ms = 500,
						   .retry_ms = 50,
					   },
					   &wm, &err), ERR_OK);
	for (int i = 0; i < 200; i++) {
		worker_meta_get_stats(wm, &st);
		if (st.failures >= 3)
			break;
		usleep(20000);
	}
	ck_assert_uint_ge(st.failures, 3);
	ck_assert(!st.connected);
	ck_assert_uint_eq(st.heartbeats, 0);
	worker_meta_stop(wm);
	ck_assert_int_eq(fetch_dataset_get(f, "kept", &got, &err), ERR_OK);
	fetch_dataset_put(f, got);

	ck_assert_int_eq(worker_meta_start(&(struct worker_meta_config){ .address = sock,
									  .fetcher = f },
					   &wm, &err), ERR_INVALID);
	ck_assert_ptr_null(wm);
}
END_TEST

/* A granary-meta that lists the datasets and workers a test gives it
 * (none by default) and records the heartbeats. */
#define FAKE_WORKERS_MAX 4
static struct fake_meta {
	struct rpc_server *srv;
	char address[128];
	const char *refuse;       /* set: every heartbeat is refused with it (ALREADY_EXISTS) */
	uint64_t leave_ms;        /* a leaving heartbeat is answered after this */
	Granary__V1__Dataset **datasets; /* ListDatasets answers these; set before the member */
	size_t ndatasets;
	pthread_mutex_t mu;
	uint64_t beats, leaves;   /* protected by mu */
	uint64_t instance;        /* of the first heartbeat; protected by mu */
	bool other_instance;      /* a heartbeat named another; protected by mu */
	bool after_leave;         /* a heartbeat came after a leaving one; protected by mu */
	const char *workers[FAKE_WORKERS_MAX]; /* ListWorkers answers these; protected by mu */
	size_t nworkers;          /* protected by mu */
	uint64_t version;         /* of that membership, in every reply; protected by mu */
	uint64_t slow_ms;         /* calls but leaving heartbeats wait this; protected by mu */
	uint64_t calls, lists;    /* calls but leaving heartbeats, ListDatasets; protected by mu */
} fake;

/* Counts a call (but a leaving heartbeat) and waits slow_ms. */
static void fake_call(bool list)
{
	uint64_t slow;

	pthread_mutex_lock(&fake.mu);
	fake.calls++;
	fake.lists += list;
	slow = fake.slow_ms;
	pthread_mutex_unlock(&fake.mu);
	if (slow)
		retry_sleep_ms(slow);
}

static enum error_code fake_list(struct rpc_server_call *call, const ProtobufCMessage *request,
				 void *arg, struct error *err)
{
	Granary__V1__ListDatasetsReply reply = GRANARY__V1__LIST_DATASETS_REPLY__INIT;

	enum error_code rc;

	fake_call(true);
	reply.datasets = fake.datasets;
	reply.n_datasets = fake.ndatasets;
	pthread_mutex_lock(&fake.mu); /* a test may change a dataset meanwhile */
	rc = rpc_server_reply(call, &reply.base, err);
	pthread_mutex_unlock(&fake.mu);
	return rc;
}

static enum error_code fake_workers(struct rpc_server_call *call,
				    const ProtobufCMessage *request, void *arg, struct error *err)
{
	Granary__V1__ListWorkersReply reply = GRANARY__V1__LIST_WORKERS_REPLY__INIT;
	Granary__V1__Worker w[FAKE_WORKERS_MAX], *ptrs[FAKE_WORKERS_MAX];

	fake_call(false);
	pthread_mutex_lock(&fake.mu);
	for (size_t i = 0; i < fake.nworkers; i++) {
		granary__v1__worker__init(&w[i]);
		w[i].id = (char *)fake.workers[i];
		w[i].address = "127.0.0.1:7480";
		ptrs[i] = &w[i];
	}
	reply.workers = ptrs;
	reply.n_workers = fake.nworkers;
	reply.version = fake.version;
	pthread_mutex_unlock(&fake.mu);
	return rpc_server_reply(call, &reply.base, err);
}

/* A new membership of these workers, ids static. */
static void fake_set_workers(const char *const *ids, size_t n)
{
	pthread_mutex_lock(&fake.mu);
	for (size_t i = 0; i < n; i++)
		fake.workers[i] = ids[i];
	fake.nworkers = n;
	fake.version++;
	pthread_mutex_unlock(&fake.mu);
}

static enum error_code fake_heartbeat(struct rpc_server_call *call,
				      const ProtobufCMessage *request, void *arg,
				      struct error *err)
{
	const Granary__V1__HeartbeatRequest *req = (const void *)request;
	Granary__V1__HeartbeatReply reply = GRANARY__V1__HEARTBEAT_REPLY__INIT;

	if (!req->leaving)
		fake_call(false);
	pthread_mutex_lock(&fake.mu);
	if (!fake.beats && !fake.leaves)
		fake.instance = req->instance;
	fake.other_instance |= req->instance != fake.instance;
	fake.after_leave |= fake.leaves > 0;
	if (req->leaving)
		fake.leaves++;
	else
		fake.beats++;
	reply.membership_version = fake.version;
	pthread_mutex_unlock(&fake.mu);
	if (req->leaving && fake.leave_ms)
		retry_sleep_ms(fake.leave_ms);
	if (fake.refuse)
		return error_set(err, ERR_EXISTS, "%s", fake.refuse);
	reply.interval_ms = 50;
	reply.expiry_ms = 1000;
	return rpc_server_reply(call, &reply.base, err);
}

/* The fake, refusing every heartbeat with refuse (NULL: none), answering
 * a leaving one after leave_ms. */
static void fake_start(const char *refuse, uint64_t leave_ms)
{
	struct rpc_server_options opt = { .threads = 4, .shutdown_grace_ms = 100 };
	struct error err;

	memset(&fake, 0, sizeof(fake));
	fake.refuse = refuse;
	fake.leave_ms = leave_ms;
	fake.version = 1;
	pthread_mutex_init(&fake.mu, NULL);
	snprintf(fake.address, sizeof(fake.address), "unix://%s/meta.sock", base);
	ck_assert_int_eq(rpc_server_new(&opt, &fake.srv, &err), ERR_OK);
	ck_assert_int_eq(rpc_server_add_unary(fake.srv, META_METHOD_LIST,
					      &granary__v1__list_datasets_request__descriptor,
					      &granary__v1__list_datasets_reply__descriptor,
					      fake_list, NULL, &err), ERR_OK);
	ck_assert_int_eq(rpc_server_add_unary(fake.srv, META_METHOD_HEARTBEAT,
					      &granary__v1__heartbeat_request__descriptor,
					      &granary__v1__heartbeat_reply__descriptor,
					      fake_heartbeat, NULL, &err), ERR_OK);
	ck_assert_int_eq(rpc_server_add_unary(fake.srv, META_METHOD_WORKERS,
					      &granary__v1__list_workers_request__descriptor,
					      &granary__v1__list_workers_reply__descriptor,
					      fake_workers, NULL, &err), ERR_OK);
	ck_assert_int_eq(rpc_server_listen(fake.srv, fake.address, NULL, &err), ERR_OK);
	ck_assert_int_eq(rpc_server_start(fake.srv, &err), ERR_OK);
}

static struct fake_meta fake_counts(void)
{
	struct fake_meta now;

	pthread_mutex_lock(&fake.mu);
	now = fake;
	pthread_mutex_unlock(&fake.mu);
	return now;
}

static void fake_wait_beats(uint64_t n)
{
	for (int i = 0; i < 250 && fake_counts().beats < n; i++)
		retry_sleep_ms(20);
	ck_assert_uint_ge(fake_counts().beats, n);
}

/* Worker w1 as a member of the fake; pl NULL: no preloads. */
static struct worker_meta *member_start(struct readiness *r, uint64_t call_timeout_ms,
					struct preloader *pl, uint64_t preload_retry_ms)
{
	struct worker_meta *wm = NULL;
	struct error err;

	ck_assert_int_eq(worker_meta_start(&(struct worker_meta_config){
						   .address = fake.address,
						   .worker_id = "w1",
						   .advertise = "127.0.0.1:7480",
						   .capacity = 64u << 20,
						   .fetcher = f,
						   .preloader = pl,
						   .readiness = r,
						   .defaults = file_defaults,
						   .call_timeout_ms = call_timeout_ms,
						   .retry_ms = 50,
						   .preload_retry_ms = preload_retry_ms,
					   },
					   &wm, &err), ERR_OK);
	return wm;
}

/* Every heartbeat of one process names one instance, never 0 (what a
 * worker that sends none sends); leaving, the member stops heartbeating
 * first and then says so, so that no heartbeat joins it again after. */
START_TEST(test_worker_meta_heartbeats_name_one_instance_and_leave_last)
{
	struct worker_meta *wm;
	struct fake_meta c;

	fake_start(NULL, 0);
	wm = member_start(NULL, 500, NULL, 0);
	fake_wait_beats(3);
	worker_meta_leave(wm);
	c = fake_counts();
	ck_assert_uint_ne(c.instance, 0);
	ck_assert(!c.other_instance);
	ck_assert_uint_eq(c.leaves, 1);
	/* Four intervals later: nothing more. */
	retry_sleep_ms(200);
	ck_assert_uint_eq(fake_counts().beats, c.beats);
	ck_assert(!fake_counts().after_leave);
	ck_assert(!worker_meta_sync_soon(wm, 100));
	worker_meta_stop(wm);
	rpc_server_free(fake.srv);
}
END_TEST

/* A meta that does not answer the leaving heartbeat holds the exit for
 * one call timeout, not more. */
START_TEST(test_worker_meta_leave_waits_one_call_timeout_at_most)
{
	struct worker_meta *wm;
	uint64_t t0, ms;

	fake_start(NULL, 2000);
	wm = member_start(NULL, 300, NULL, 0);
	fake_wait_beats(1);
	t0 = retry_now_ms();
	worker_meta_leave(wm);
	ms = retry_now_ms() - t0;
	ck_assert_uint_eq(fake_counts().leaves, 1);
	ck_assert_msg(ms < 1000, "leaving took %llu ms with a call timeout of 300 ms",
		      (unsigned long long)ms);
	worker_meta_stop(wm);
	rpc_server_free(fake.srv);
}
END_TEST

/* A second process of a live worker id is refused by meta: it keeps
 * trying at its interval, is not ready, and /readyz gives meta's reason;
 * never accepted, it has nothing to leave. */
START_TEST(test_worker_meta_refused_heartbeats_keep_it_trying_and_not_ready)
{
	struct worker_meta_stats st;
	struct readiness *r = NULL;
	struct worker_meta *wm;
	struct error err;

	fake_start("worker id 'w1' is held by another live process at 10.0.0.5:7480", 0);
	ck_assert_int_eq(readiness_new(NULL, fake.address, retry_now_ms(), &r, &err), ERR_OK);
	wm = member_start(r, 500, NULL, 0);
	fake_wait_beats(3);
	ck_assert_int_eq(readiness_check(r, retry_now_ms(), &err), ERR_UNAVAILABLE);
	ck_assert_msg(strstr(err.msg, "refuses the heartbeat") &&
			      strstr(err.msg, "worker id 'w1' is held by another live process at 10.0.0.5:7480"),
		      "%s", err.msg);
	worker_meta_get_stats(wm, &st);
	ck_assert_uint_eq(st.heartbeats, 0);
	worker_meta_leave(wm);
	ck_assert_uint_eq(fake_counts().leaves, 0);
	worker_meta_stop(wm);
	readiness_free(r);
	rpc_server_free(fake.srv);
}
END_TEST

/* Leaving in the middle of a round waits for the call in flight only:
 * the round makes no further call (here its heartbeat), so that the leave
 * takes one call timeout and the leaving heartbeat, not a round of them. */
START_TEST(test_worker_meta_leave_cuts_the_round_short)
{
	struct worker_meta *wm;
	uint64_t lists, calls, t0, ms;

	fake_start(NULL, 0);
	wm = member_start(NULL, 300, NULL, 0);
	fake_wait_beats(1);
	pthread_mutex_lock(&fake.mu);
	fake.slow_ms = 350; /* past the call timeout */
	lists = fake.lists;
	pthread_mutex_unlock(&fake.mu);
	for (int i = 0; i < 2000 && fake_counts().lists == lists; i++)
		retry_sleep_ms(1);
	calls = fake_counts().calls; /* a ListDatasets in flight */
	t0 = retry_now_ms();
	worker_meta_leave(wm);
	ms = retry_now_ms() - t0;
	ck_assert_uint_eq(fake_counts().leaves, 1);
	ck_assert_msg(fake_counts().calls == calls, "%llu calls after the leave began",
		      (unsigned long long)(fake_counts().calls - calls));
	ck_assert_msg(ms < 550, "leaving took %llu ms with a call timeout of 300 ms",
		      (unsigned long long)ms);
	worker_meta_stop(wm);
	rpc_server_free(fake.srv);
}
END_TEST

/* --- preloads of meta's datasets -------------------------------------------- */

#define BLOCK (64u << 10) /* file_defaults.block_size */

/* A file of size bytes (sparse) at key under base/data: "name", or
 * "dir/name" in a new directory. */
static void data_file(const char *key, uint64_t size)
{
	const char *slash = strchr(key, '/');
	char path[256];
	int fd;

	if (slash) {
		snprintf(path, sizeof(path), "%s/data/%.*s", base, (int)(slash - key), key);
		ck_assert_int_eq(mkdir(path, 0755), 0);
	}
	snprintf(path, sizeof(path), "%s/data/%s", base, key);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

static uint64_t preloads_of(struct worker_meta *wm)
{
	struct worker_meta_stats st;

	worker_meta_get_stats(wm, &st);
	return st.preloads;
}

/* The member has started n preload jobs, within 5 s. */
static void wait_preloads(struct worker_meta *wm, uint64_t n)
{
	for (int i = 0; i < 250 && preloads_of(wm) < n; i++)
		retry_sleep_ms(20);
	ck_assert_uint_eq(preloads_of(wm), n);
}

static struct preload_status wait_ended(struct preloader *pl, uint64_t id)
{
	struct preload_status st;
	struct error err;

	for (int i = 0; i < 5000; i++) {
		ck_assert_int_eq(preload_get(pl, id, &st, &err), ERR_OK);
		if (st.state != PRELOAD_RUNNING)
			break;
		retry_sleep_ms(1);
	}
	ck_assert_int_ne(st.state, PRELOAD_RUNNING);
	return st;
}

/* Rounds enough for the member to apply what the fake says now, and to
 * act on it in the next one. */
static void member_rounds(void)
{
	fake_wait_beats(fake_counts().beats + 3);
}

/* A fake meta that lists one dataset, x (named name, of source), asking
 * for a preload, and nworkers workers; listing holds it. */
static void meta_serves_preloaded(struct ds *x, const char *name, const char *source,
				  Granary__V1__Dataset **listing, const char *const *workers,
				  size_t nworkers)
{
	ds_init(x, name, source, READY);
	x->opt.preload = true;
	listing[0] = &x->d;
	fake_start(NULL, 0);
	fake.datasets = listing;
	fake.ndatasets = 1;
	fake_set_workers(workers, nworkers);
}

/*
 * The member preloads a dataset again only when a membership may place
 * blocks on it that its last job's did not: a worker joining elsewhere
 * starts no job (it takes blocks away), one leaving does, and so does
 * this worker listed again after a membership without it.
 */
START_TEST(test_worker_meta_preload_runs_again_only_when_blocks_may_move_here)
{
	static const char *const two[] = { "w1", "w2" }, *const three[] = { "w1", "w2", "w3" },
			 *const left[] = { "w1", "w3" }, *const without[] = { "w2", "w3" };
	Granary__V1__Dataset *listing[1];
	struct preloader *pl = NULL;
	struct worker_meta *wm;
	struct error err;
	struct ds x;

	data_file("a", 8 * BLOCK);
	meta_serves_preloaded(&x, "warm", src_uri, listing, two, 2);
	ck_assert_int_eq(preload_new(f, 2, NULL, &pl, &err), ERR_OK);
	wm = member_start(NULL, 500, pl, 0);
	wait_preloads(wm, 1);
	ck_assert_int_eq(wait_ended(pl, 1).state, PRELOAD_DONE);
	fake_set_workers(three, 3); /* w3 joins */
	member_rounds();
	ck_assert_msg(preloads_of(wm) == 1, "a worker joining elsewhere started %llu preloads",
		      (unsigned long long)preloads_of(wm) - 1);
	fake_set_workers(left, 2); /* w2 leaves */
	wait_preloads(wm, 2);
	ck_assert_int_eq(wait_ended(pl, 2).state, PRELOAD_DONE);
	fake_set_workers(without, 2);
	member_rounds();
	ck_assert_uint_eq(preloads_of(wm), 2);
	fake_set_workers(three, 3); /* w1 listed again */
	wait_preloads(wm, 3);
	worker_meta_stop(wm);
	preload_free(pl);
	rpc_server_free(fake.srv);
}
END_TEST

/*
 * A preload that fails in a way another run would meet again (here a
 * listing past listing.max_objects) is not started again, however long it
 * waits; what the dataset asks changing (a refresh) starts a new job.
 */
START_TEST(test_worker_meta_preload_failing_for_good_is_not_retried)
{
	static const char *const self[] = { "w1" };
	Granary__V1__Dataset *listing[1];
	struct preloader *pl = NULL;
	struct preload_status st;
	struct worker_meta *wm;
	struct error err;
	struct ds x;

	data_file("a", BLOCK);
	data_file("b", BLOCK);
	data_file("c", BLOCK);
	meta_serves_preloaded(&x, "lasting", src_uri, listing, self, 1);
	ck_assert_int_eq(preload_new(f, 1, &(struct store_list_limits){ .max_objects = 2 }, &pl,
				     &err),
			 ERR_OK);
	/* a retry would start after 10-20 ms, then 20-40, 40-80, ... */
	wm = member_start(NULL, 500, pl, 20);
	wait_preloads(wm, 1);
	st = wait_ended(pl, 1);
	ck_assert_int_eq(st.code, ERR_NO_SPACE);
	retry_sleep_ms(200);
	ck_assert_msg(preloads_of(wm) == 1, "a preload that fails for good started %llu times",
		      (unsigned long long)preloads_of(wm));
	pthread_mutex_lock(&fake.mu);
	x.d.generation = 2; /* refreshed */
	pthread_mutex_unlock(&fake.mu);
	wait_preloads(wm, 2);
	worker_meta_stop(wm);
	preload_free(pl);
	rpc_server_free(fake.srv);
}
END_TEST

/*
 * A failed preload (here cancelled under the member) whose job the
 * preloader no longer keeps, PRELOAD_KEEP_FINISHED newer ones having
 * ended since, still starts again after its backoff: it is not taken for
 * done. Its dataset is 4 Mi blocks (a sparse 256 GiB object): the job is
 * still splitting them when the test cancels it.
 */
START_TEST(test_worker_meta_preload_pushed_out_after_failing_starts_again)
{
	static const char *const self[] = { "w1" };
	Granary__V1__Dataset *listing[1];
	struct preloader *pl = NULL;
	struct preload_status st;
	struct worker_meta *wm;
	char flaky_uri[160], other_uri[160];
	struct error err;
	struct ds x, other;
	uint64_t id;

	data_file("flaky/o", (uint64_t)1 << 38);
	data_file("other/o", BLOCK);
	snprintf(flaky_uri, sizeof(flaky_uri), "%sflaky/", src_uri);
	snprintf(other_uri, sizeof(other_uri), "%sother/", src_uri);
	ds_init(&other, "other", other_uri, READY);
	register_as(&other);
	meta_serves_preloaded(&x, "flaky", flaky_uri, listing, self, 1);
	ck_assert_int_eq(preload_new(f, 1, NULL, &pl, &err), ERR_OK);
	/* it starts again 200-400 ms after the failure */
	wm = member_start(NULL, 500, pl, 400);
	wait_preloads(wm, 1);
	ck_assert_uint_eq(preload_cancel(pl, "flaky", 1, "cancelled: by the test"), 1);
	for (int i = 0; i <= PRELOAD_KEEP_FINISHED; i++) {
		ck_assert_int_eq(preload_start(pl, "other", NULL, 0, &id, &err), ERR_OK);
		wait_ended(pl, id);
	}
	ck_assert_int_eq(preload_get(pl, 1, &st, &err), ERR_NOT_FOUND);
	wait_preloads(wm, 2);
	worker_meta_stop(wm); /* cancels the new job's split */
	preload_free(pl);
	rpc_server_free(fake.srv);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("worker_meta");
	TCase *pure = tcase_create("pure");
	TCase *reg = tcase_create("registry");

	log_set_level(LOG_LEVEL_ERROR);
	tcase_add_test(pure, test_worker_meta_config_takes_source_from_spec_and_access_from_worker);
	tcase_add_test(pure, test_worker_meta_config_refuses_what_a_worker_cannot_use);
	tcase_add_test(pure, test_worker_meta_served_means_ready_or_refreshing_with_a_generation);
	tcase_add_test(pure, test_worker_meta_preload_wanted_changes_with_what_is_asked);
	tcase_add_test(pure, test_worker_meta_preload_wanted_tells_registrations_apart);
	tcase_add_test(pure, test_worker_meta_gains_blocks_when_a_member_leaves_or_it_is_new);
	suite_add_tcase(s, pure);
	tcase_add_checked_fixture(reg, setup, teardown);
	tcase_add_test(reg, test_worker_meta_registered_dataset_matches_its_config);
	tcase_add_test(reg, test_worker_meta_plan_registers_changes_and_drops_only_its_own);
	tcase_add_test(reg, test_worker_meta_plan_is_empty_in_steady_state);
	tcase_add_test(reg, test_worker_meta_survives_an_unreachable_meta_and_stops);
	tcase_add_test(reg, test_worker_meta_heartbeats_name_one_instance_and_leave_last);
	tcase_add_test(reg, test_worker_meta_leave_waits_one_call_timeout_at_most);
	tcase_add_test(reg, test_worker_meta_refused_heartbeats_keep_it_trying_and_not_ready);
	tcase_add_test(reg, test_worker_meta_leave_cuts_the_round_short);
	tcase_add_test(reg, test_worker_meta_preload_runs_again_only_when_blocks_may_move_here);
	tcase_add_test(reg, test_worker_meta_preload_failing_for_good_is_not_retried);
	tcase_add_test(reg, test_worker_meta_preload_pushed_out_after_failing_starts_again);
	suite_add_tcase(s, reg);
	return check_main_run(s);
}

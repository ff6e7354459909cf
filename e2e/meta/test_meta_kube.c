/*
 * test_meta_kube.c - granary-meta's Kubernetes controllers, the Dataset
 * controller (meta/datasets.c) and the cache gate (meta/cachegate.c), and
 * its review of workers' tokens (meta/worker_identity.c), run
 * in this process against a real kube-apiserver and etcd with the chart's
 * Dataset CRD (the fixture e2e/meta/kube-apiserver.sh, $GRANARY_KUBE_API_DIR)
 * and a real registry listing the S3 server of the ctest fixture
 * ($GRANARY_S3_DIR, bucket granary-e2e).
 *
 * The fixture runs no kubelet, scheduler or controller-manager: the test
 * writes what those would (a Dataset's cached bytes, as granary-meta's
 * own report would from the workers' heartbeats; a pod's phase; a claim's
 * and a volume's protection finalizers lifted), and pods stay objects
 * that never run. No part is a stand-in, but for an apiserver that hangs
 * (unit/kube/fake_apiserver.h), which a real one cannot be made to do.
 */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/retry.h"
#include "e2e/harness.h"
#include "kube/kubeapi.h"
#include "meta/cachegate.h"
#include "meta/datasets.h"
#include "meta/membership.h"
#include "meta/registry.h"
#include "meta/worker_identity.h"
#include "store/store.h"
#include "unit/check_main.h"
#include "unit/kube/fake_apiserver.h"

#define BUCKET "granary-e2e"
#define DATASETS "/apis/granary.io/v1alpha1/namespaces/%s/datasets/%s"
/* datasets.cluster_credentials of the tests that are not about it: every
 * namespace, the fixture's bucket. */
#define ANY_NAMESPACE "* s3://" BUCKET "/"

static char endpoint[256], credentials[512], work[128];
static struct kubeapi *kube;
static atomic_bool stopping;

static bool stop_now(void)
{
	return stopping;
}

/* ---- the fixtures ------------------------------------------------------ */

static void setup(void)
{
	const char *keys[] = { "GRANARY_KUBE_API", "GRANARY_KUBE_API_TOKEN", "GRANARY_KUBE_API_CA" };
	char url[256] = "", token[600] = "", ca[600] = "";
	char *values[] = { url, token, ca };
	size_t sizes[] = { sizeof(url), sizeof(token), sizeof(ca) };
	struct error err;

	harness_s3_env(endpoint, sizeof(endpoint), credentials, sizeof(credentials));
	for (size_t i = 0; i < 3; i++) {
		harness_fixture_env("GRANARY_KUBE_API_DIR", "kube-apiserver", keys[i], values[i],
				    sizes[i]);
		ck_assert_msg(*values[i], "the kube-apiserver fixture's env lacks %s", keys[i]);
	}
	ck_assert_msg(kubeapi_new(url, token, ca, &kube, &err) == ERR_OK, "%s", err.msg);
	harness_tmpdir(work, sizeof(work), "/tmp/granary-meta-kube-XXXXXX");
	stopping = false;
}

static void teardown(void)
{
	kubeapi_free(kube);
	harness_rm_rf(work);
}

/* ---- the apiserver ----------------------------------------------------- */

/* METHOD path with body (taken; NULL: none): the answer, its status in
 * *code. Fails the test when the apiserver does not answer. */
static json_t *api(const char *method, const char *path, const char *content_type, json_t *body,
		   long *code)
{
	json_t *reply = NULL;
	struct error err;

	ck_assert_msg(kubeapi_call_ct(kube, method, path, content_type, body, code, &reply,
				      &err) == ERR_OK,
		      "%s %s: %s", method, path, err.msg);
	json_decref(body);
	return reply;
}

/* POST of obj to path, which must make it (201). */
static void create(const char *path, json_t *obj)
{
	long code = 0;
	json_t *reply = api("POST", path, "application/json", obj, &code);

	ck_assert_msg(code == 201, "POST %s: HTTP %ld: %s", path, code, kubeapi_message(reply));
	json_decref(reply);
}

/* A merge patch of the object at path (or its status, path ending in
 * /status), which must take it. */
static void merge(const char *path, json_t *patch)
{
	long code = 0;
	json_t *reply = api("PATCH", path, "application/merge-patch+json", patch, &code);

	ck_assert_msg(code == 200, "PATCH %s: HTTP %ld: %s", path, code, kubeapi_message(reply));
	json_decref(reply);
}

static json_t *get(const char *path)
{
	long code = 0;
	json_t *reply = api("GET", path, "application/json", NULL, &code);

	ck_assert_msg(code == 200, "GET %s: HTTP %ld: %s", path, code, kubeapi_message(reply));
	return reply;
}

/* A namespace of its own for each test (no controller deletes one), with
 * the service account "default" pods need (admission looks it up). */
static void make_namespace(char *ns, size_t size, const char *stem)
{
	char path[300];

	snprintf(ns, size, "%s-%d-%llu", stem, (int)getpid(),
		 (unsigned long long)(retry_wall_ms() % 100000));
	create("/api/v1/namespaces", json_pack("{s:s, s:s, s:{s:s}}", "apiVersion", "v1", "kind",
					       "Namespace", "metadata", "name", ns));
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/serviceaccounts", ns);
	create(path, json_pack("{s:s, s:s, s:{s:s}}", "apiVersion", "v1", "kind",
			       "ServiceAccount", "metadata", "name", "default"));
}

/* Events in ns of reason (about any object). */
static size_t events(const char *ns, const char *reason)
{
	char path[400];
	json_t *list;
	size_t n;

	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/events?fieldSelector=reason%%3D%s", ns,
		 reason);
	list = get(path);
	n = json_array_size(json_object_get(list, "items"));
	json_decref(list);
	return n;
}

/* A merge patch of metadata.finalizers to none on the object at path, as
 * the controller-manager's protection controllers do once no pod uses a
 * claim; gone already (404) is fine. */
static void drop_finalizers(const char *path)
{
	long code = 0;
	json_t *reply = api("PATCH", path, "application/merge-patch+json",
			    json_pack("{s:{s:n}}", "metadata", "finalizers"), &code);

	ck_assert_msg(code == 200 || code == 404, "PATCH %s: HTTP %ld: %s", path, code,
		      kubeapi_message(reply));
	json_decref(reply);
}

/*
 * n pods in ns of an annotation of 240 KB each (labelled: with the cache
 * gate's label, ungated): past the 4 MiB of one answer together, as ~500
 * pods of 8 KiB (managedFields, status; a Job's ended pods count) are.
 */
static void make_heavy_pods(const char *ns, int n, bool labelled)
{
	char path[300], name[32], *pad = malloc(240001);

	ck_assert_ptr_nonnull(pad);
	memset(pad, 'p', 240000);
	pad[240000] = '\0';
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods", ns);
	for (int i = 0; i < n; i++) {
		json_t *pod;

		snprintf(name, sizeof(name), "heavy-%d", i);
		pod = json_pack("{s:s, s:s, s:{s:s, s:{s:s}}, s:{s:[{s:s, s:s}]}}", "apiVersion",
				"v1", "kind", "Pod", "metadata", "name", name, "annotations",
				"e2e.granary.io/pad", pad, "spec", "containers", "name", "c",
				"image", "busybox");
		if (labelled)
			json_object_set_new(json_object_get(pod, "metadata"), "labels",
					    json_pack("{s:s}", CACHEGATE_LABEL, "90"));
		create(path, pod);
	}
	free(pad);
}

/* Waits up to timeout_ms for check(ns) to be want; returns what it was. */
static size_t wait_count(size_t (*check)(const char *ns), const char *ns, size_t want,
			 uint64_t timeout_ms)
{
	uint64_t until = retry_now_ms() + timeout_ms;
	size_t n;

	while ((n = check(ns)) != want && retry_now_ms() < until)
		retry_sleep_ms(100);
	return n;
}

/* ---- the Dataset controller -------------------------------------------- */

struct controller {
	struct registry *registry;
	struct membership *membership;
	struct datasets *datasets;
	char cred_dir[300];
	const char *file_roots; /* allowed_file_roots; NULL: none */
};

/* The registry over the S3 fixture (its credentials are the cluster's,
 * the "" credentials_ref) and the controller writing into it, the
 * cluster's credentials allowed by rules (datasets.cluster_credentials). */
static void controller_start(struct controller *c, const char *rules)
{
	struct store_config store = { .endpoint = endpoint, .credentials_file = credentials,
				      .request_timeout_ms = 10000, .deadline_ms = 30000,
				      .max_attempts = 1 };
	char data_dir[300];
	struct registry_options ro = { .data_dir = data_dir, .store = &store,
				       .file_roots = c->file_roots };
	struct membership_options mo = { .interval_ms = 5000, .expiry_ms = 15000 };
	struct datasets_config dc = { .credentials_dir = c->cred_dir, .driver = "csi.granary.io",
				      .mirror_ns = "granary-system", .cluster_credentials = rules,
				      .max_jobs = 4, .stop = stop_now };
	struct error err;

	snprintf(data_dir, sizeof(data_dir), "%s/meta", work);
	snprintf(c->cred_dir, sizeof(c->cred_dir), "%s/credentials", work);
	ck_assert_msg(registry_open(&ro, &c->registry, &err) == ERR_OK, "%s", err.msg);
	ck_assert_msg(membership_new(&mo, &c->membership, &err) == ERR_OK, "%s", err.msg);
	dc.kube = kube;
	dc.registry = c->registry;
	dc.membership = c->membership;
	stopping = false;
	ck_assert_msg(datasets_start(&dc, &c->datasets, &err) == ERR_OK, "%s", err.msg);
}

static void controller_stop(struct controller *c)
{
	stopping = true;
	ck_assert(datasets_stop(c->datasets, 30000));
	membership_free(c->membership);
	registry_free(c->registry);
}

/* A source of two objects in the S3 fixture: its prefix in prefix. */
static void make_source(char *prefix, size_t size)
{
	struct store_config cfg = { .endpoint = endpoint, .credentials_file = credentials };
	struct store *st = NULL;
	struct error err;
	char key[256];

	snprintf(prefix, size, "meta-kube-%d-%llu/", (int)getpid(),
		 (unsigned long long)retry_now_ms());
	ck_assert_msg(store_open("s3://" BUCKET, &cfg, &st, &err) == ERR_OK, "%s", err.msg);
	for (int i = 0; i < 2; i++) {
		snprintf(key, sizeof(key), "%sf%d", prefix, i);
		ck_assert_msg(store_put(st, key, "data", 4, &err) == ERR_OK, "%s", err.msg);
	}
	store_free(st);
}

/* A Dataset named name in ns of the source s3://BUCKET/prefix. */
static void make_dataset(const char *ns, const char *name, const char *prefix)
{
	char path[300];

	snprintf(path, sizeof(path), "/apis/granary.io/v1alpha1/namespaces/%s/datasets", ns);
	create(path, json_pack("{s:s, s:s, s:{s:s}, s:{s:s+}}", "apiVersion", "granary.io/v1alpha1",
			       "kind", "Dataset", "metadata", "name", name, "spec", "source",
			       "s3://" BUCKET "/", prefix));
}

/* The S3 fixture's keys (its credentials file), id[256] and key[256]. */
static void fixture_keys(char *id, char *key)
{
	char line[512];
	FILE *f = fopen(credentials, "r");

	ck_assert_msg(f != NULL, "cannot read %s", credentials);
	*id = *key = '\0';
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "aws_access_key_id = %255s", id);
		sscanf(line, "aws_secret_access_key = %255s", key);
	}
	fclose(f);
	ck_assert_msg(*id && *key, "no aws_access_key_id or aws_secret_access_key in %s",
		      credentials);
}

static void make_secret(const char *ns, const char *name, const char *id, const char *key)
{
	char path[300];

	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets", ns);
	create(path, json_pack("{s:s, s:s, s:{s:s}, s:{s:s, s:s}}", "apiVersion", "v1", "kind",
			       "Secret", "metadata", "name", name, "stringData", "accessKeyID", id,
			       "secretAccessKey", key));
}

/* Waits up to 60 s for the Dataset's status to describe its current
 * generation with phase (and reason, when not NULL). */
static void wait_phase(const char *ns, const char *name, const char *phase, const char *reason)
{
	char path[400], seen[600] = "";
	uint64_t until = retry_now_ms() + 60000;

	snprintf(path, sizeof(path), DATASETS, ns, name);
	while (retry_now_ms() < until) {
		json_t *o = get(path), *st = json_object_get(o, "status");
		const char *p = json_string_value(json_object_get(st, "phase"));
		const char *r = json_string_value(json_object_get(st, "reason"));
		bool done = p && !strcmp(p, phase) && (!reason || (r && !strcmp(r, reason))) &&
			    json_integer_value(json_object_get(st, "observedGeneration")) ==
				    json_integer_value(json_object_get(
					    json_object_get(o, "metadata"), "generation"));

		snprintf(seen, sizeof(seen), "%s/%s: %s", p ? p : "-", r ? r : "-",
			 json_string_value(json_object_get(st, "message")) ?: "");
		json_decref(o);
		if (done)
			return;
		retry_sleep_ms(200);
	}
	ck_abort_msg("Dataset %s/%s: no %s%s%s within 60 s; last seen %s", ns, name, phase,
		     reason ? "/" : "", reason ? reason : "", seen);
}

/* The credentials_ref dataset is registered with is want. */
static void expect_ref(struct controller *c, const char *dataset, const char *want)
{
	struct registry_dataset rd = { 0 };
	struct error err;

	ck_assert_msg(registry_get(c->registry, dataset, &rd, &err) == ERR_OK, "%s", err.msg);
	ck_assert_msg(rd.state == REGISTRY_READY, "dataset %s is %s", dataset,
		      registry_state_name(rd.state));
	ck_assert_str_eq(rd.spec->credentials_ref, want);
	registry_dataset_release(&rd);
}

/* Waits up to timeout_ms for path to be gone (stat() fails); whether it
 * is. A Dataset's other credentials files are pruned after its status
 * says Ready (meta/datasets.c): a test that saw Ready polls for them. */
static bool wait_gone(const char *path, uint64_t timeout_ms)
{
	uint64_t until = retry_now_ms() + timeout_ms;
	struct stat sb;

	while (stat(path, &sb) == 0) {
		if (retry_now_ms() >= until)
			return false;
		retry_sleep_ms(50);
	}
	return true;
}

static void set_secret_ref(const char *ns, const char *name, const char *secret)
{
	char path[400];

	snprintf(path, sizeof(path), DATASETS, ns, name);
	merge(path, json_pack("{s:{s:o}}", "spec", "secretRef",
			      secret ? json_pack("{s:s}", "name", secret) : json_null()));
}

/*
 * A secretRef changed on a Dataset that is Ready takes effect at once: its
 * registration lists the source again with the new Secret's credentials
 * (one refused shows as PermissionDenied), and carries the new Secret's
 * file as credentials_ref, or none once secretRef is removed; the files of
 * other Secrets go.
 */
START_TEST(test_datasets_apply_a_changed_secret_ref)
{
	struct controller c = { 0 };
	char ns[64], path[400], prefix[128], dataset[128], ref[700], id[256], key[256];
	char legacy[700];
	struct error err;
	struct stat sb;
	uint64_t t0;

	make_source(prefix, sizeof(prefix));
	make_namespace(ns, sizeof(ns), "creds");
	snprintf(dataset, sizeof(dataset), "%s.ds", ns);
	fixture_keys(id, key);
	make_secret(ns, "good", id, key);
	make_secret(ns, "good2", id, key);
	make_secret(ns, "bad", id, "not-the-secret-key-0123456789");
	/* What a meta of the layout before kept for it (DIR/DATASET.credentials,
	 * with a persistent data directory): no registration names it now. */
	snprintf(c.cred_dir, sizeof(c.cred_dir), "%s/credentials", work);
	ck_assert_int_eq(fileio_mkdirs(c.cred_dir, 0700, &err), ERR_OK);
	snprintf(legacy, sizeof(legacy), "%s/%s.credentials", c.cred_dir, dataset);
	ck_assert_int_eq(fileio_replace(legacy, "x", 1, 0600, &err), ERR_OK);
	controller_start(&c, ANY_NAMESPACE);
	snprintf(path, sizeof(path), "/apis/granary.io/v1alpha1/namespaces/%s/datasets", ns);
	create(path, json_pack("{s:s, s:s, s:{s:s}, s:{s:s+, s:{s:s}}}", "apiVersion",
			       "granary.io/v1alpha1", "kind", "Dataset", "metadata", "name", "ds",
			       "spec", "source", "s3://" BUCKET "/", prefix, "secretRef", "name",
			       "good"));
	wait_phase(ns, "ds", "Ready", NULL);
	ck_assert_msg(wait_gone(legacy, 10000), "%s is still there 10 s after Ready", legacy);

	/* Credentials the store refuses: the listing with them fails. */
	set_secret_ref(ns, "ds", "bad");
	t0 = retry_now_ms();
	wait_phase(ns, "ds", "Failed", "PermissionDenied");
	fprintf(stderr, "secretRef changed on a Ready Dataset: Failed after %llu ms\n",
		(unsigned long long)(retry_now_ms() - t0));

	/* Another Secret: registered with its file, the others' gone. */
	set_secret_ref(ns, "ds", "good2");
	wait_phase(ns, "ds", "Ready", NULL);
	snprintf(ref, sizeof(ref), "%s/%s/good2", c.cred_dir, dataset);
	expect_ref(&c, dataset, ref);
	ck_assert_int_eq(stat(ref, &sb), 0);
	ck_assert_uint_eq(sb.st_mode & 0777, 0600);
	snprintf(ref, sizeof(ref), "%s/%s/bad", c.cred_dir, dataset);
	ck_assert_msg(wait_gone(ref, 10000), "%s is still there 10 s after Ready", ref);
	snprintf(ref, sizeof(ref), "%s/%s/good", c.cred_dir, dataset);
	ck_assert_msg(wait_gone(ref, 10000), "%s is still there 10 s after Ready", ref);

	/* None: the cluster's credentials, no file left. */
	set_secret_ref(ns, "ds", NULL);
	wait_phase(ns, "ds", "Ready", NULL);
	expect_ref(&c, dataset, "");
	snprintf(ref, sizeof(ref), "%s/%s", c.cred_dir, dataset);
	ck_assert_msg(wait_gone(ref, 10000), "%s is still there 10 s after Ready", ref);

	/* Added again. */
	set_secret_ref(ns, "ds", "good");
	wait_phase(ns, "ds", "Ready", NULL);
	snprintf(ref, sizeof(ref), "%s/%s/good", c.cred_dir, dataset);
	expect_ref(&c, dataset, ref);
	controller_stop(&c);
}
END_TEST

/* Waits up to 30 s for the object at path to be deleted (a
 * deletionTimestamp, or gone); false if it was not. */
static bool wait_deleting(const char *path)
{
	uint64_t until = retry_now_ms() + 30000;

	while (retry_now_ms() < until) {
		long code = 0;
		json_t *o = api("GET", path, "application/json", NULL, &code);
		bool deleting = code == 404 ||
				json_object_get(json_object_get(o, "metadata"), "deletionTimestamp");

		json_decref(o);
		if (deleting)
			return true;
		retry_sleep_ms(200);
	}
	return false;
}

/* The Dataset's status.message, for a failure's message (msg[size]). */
static void status_message(const char *ns, const char *name, char *msg, size_t size)
{
	char path[400];
	json_t *o;

	snprintf(path, sizeof(path), DATASETS, ns, name);
	o = get(path);
	snprintf(msg, size, "%s",
		 json_string_value(json_object_get(json_object_get(o, "status"), "message")) ?: "");
	json_decref(o);
}

/* Whether dataset is registered, in any state. */
static bool registered(struct controller *c, const char *dataset)
{
	struct registry_dataset rd = { 0 };
	struct error err;
	enum error_code rc = registry_get(c->registry, dataset, &rd, &err);

	ck_assert_msg(rc == ERR_OK || rc == ERR_NOT_FOUND, "%s", err.msg);
	registry_dataset_release(&rd);
	return rc == ERR_OK;
}

static size_t not_allowed_events(const char *ns)
{
	return events(ns, "NotAllowed");
}

/*
 * The cluster's credentials go where a rule allows them only: a Dataset
 * without secretRef in a namespace no rule names is Failed (NotAllowed;
 * the namespace, the source and what to do in its message) and nothing
 * is registered, while one in the namespace a rule allows every source
 * (the release's, as the chart's default) is Ready. A secretRef makes it
 * Ready with its own credentials; removed, its registration goes. Meta
 * started again with a rule for its source registers it.
 */
START_TEST(test_datasets_cluster_credentials_only_where_a_rule_allows)
{
	struct controller c = { 0 };
	char ns[64], release[64], prefix[128], dataset[128], rules[400], msg[600], want[300];
	char id[256], key[256], files[400];
	struct stat sb;
	uint64_t t0;

	make_source(prefix, sizeof(prefix));
	make_namespace(ns, sizeof(ns), "tenant");
	make_namespace(release, sizeof(release), "release");
	snprintf(dataset, sizeof(dataset), "%s.ds", ns);
	snprintf(rules, sizeof(rules), "%s *", release);
	controller_start(&c, rules);
	t0 = retry_now_ms();
	make_dataset(ns, "ds", prefix);
	make_dataset(release, "ds", prefix);
	wait_phase(ns, "ds", "Failed", "NotAllowed");
	fprintf(stderr, "Dataset of a namespace no rule allows: Failed after %llu ms\n",
		(unsigned long long)(retry_now_ms() - t0));
	status_message(ns, "ds", msg, sizeof(msg));
	snprintf(want, sizeof(want),
		 "namespace '%s' may not read 's3://%s/%s' with the cluster's store credentials", ns,
		 BUCKET, prefix);
	ck_assert_msg(strstr(msg, want) && strstr(msg, "spec.secretRef") &&
			      strstr(msg, "datasets.clusterCredentials"),
		      "%s", msg);
	ck_assert_msg(!registered(&c, dataset), "%s registered", dataset);
	ck_assert_uint_eq(wait_count(not_allowed_events, ns, 1, 10000), 1);
	wait_phase(release, "ds", "Ready", NULL);
	/* Said once: no retry. */
	ck_assert_uint_eq(not_allowed_events(ns), 1);

	/* Its own credentials: unaffected. Removed: refused again, the
	 * registration made with them gone. */
	fixture_keys(id, key);
	make_secret(ns, "own", id, key);
	set_secret_ref(ns, "ds", "own");
	wait_phase(ns, "ds", "Ready", NULL);
	set_secret_ref(ns, "ds", NULL);
	wait_phase(ns, "ds", "Failed", "NotAllowed");
	ck_assert_msg(!registered(&c, dataset), "%s still registered", dataset);
	snprintf(files, sizeof(files), "%s/%s", c.cred_dir, dataset);
	ck_assert_msg(stat(files, &sb) != 0, "%s is left", files);
	controller_stop(&c);

	/* A rule for its source, at meta's next start. */
	snprintf(rules, sizeof(rules), "%s *\n%s s3://%s/%s", release, ns, BUCKET, prefix);
	controller_start(&c, rules);
	wait_phase(ns, "ds", "Ready", NULL);
	expect_ref(&c, dataset, "");
	controller_stop(&c);
}
END_TEST

/* A Dataset ns/name of source (no secretRef), or with secretRef secret. */
static void make_dataset_of(const char *ns, const char *name, const char *source,
			    const char *secret)
{
	char path[300];
	json_t *spec = json_pack("{s:s}", "source", source);

	if (secret)
		json_object_set_new(spec, "secretRef", json_pack("{s:s}", "name", secret));
	snprintf(path, sizeof(path), "/apis/granary.io/v1alpha1/namespaces/%s/datasets", ns);
	create(path, json_pack("{s:s, s:s, s:{s:s}, s:o}", "apiVersion", "granary.io/v1alpha1",
			       "kind", "Dataset", "metadata", "name", name, "spec", spec));
}

/*
 * A file:// source is a directory of the hosts, which no Secret opens: a
 * rule must allow the namespace that directory, secretRef or not, and
 * the directory as it resolves (a link under team a's directory to team
 * b's would read team b's files with team a's rule).
 */
START_TEST(test_datasets_file_sources_need_a_rule_for_their_resolved_directory)
{
	struct controller c = { 0 };
	char ns[64], files[300], a[340], b[340], link[360], rules[500], msg[900];
	char src_a[400], src_b[400], src_link[400], id[256], key[256];
	struct error err;

	make_namespace(ns, sizeof(ns), "files");
	snprintf(files, sizeof(files), "%s/files", work);
	snprintf(a, sizeof(a), "%s/team-a", files);
	snprintf(b, sizeof(b), "%s/team-b", files);
	ck_assert_int_eq(fileio_mkdirs(a, 0755, &err), ERR_OK);
	ck_assert_int_eq(fileio_mkdirs(b, 0755, &err), ERR_OK);
	snprintf(link, sizeof(link), "%s/x.bin", a);
	ck_assert_int_eq(fileio_replace(link, "a", 1, 0644, &err), ERR_OK);
	snprintf(link, sizeof(link), "%s/y.bin", b);
	ck_assert_int_eq(fileio_replace(link, "b", 1, 0644, &err), ERR_OK);
	snprintf(link, sizeof(link), "%s/b", a);
	ck_assert_int_eq(symlink("../team-b", link), 0);
	snprintf(src_a, sizeof(src_a), "file://%s/", a);
	snprintf(src_b, sizeof(src_b), "file://%s/", b);
	snprintf(src_link, sizeof(src_link), "file://%s/", link);
	snprintf(rules, sizeof(rules), "%s %s", ns, src_a);
	fixture_keys(id, key);
	make_secret(ns, "any", id, key);
	c.file_roots = files;
	controller_start(&c, rules);
	make_dataset_of(ns, "own", src_a, NULL);
	make_dataset_of(ns, "through-link", src_link, NULL);
	make_dataset_of(ns, "with-secret", src_b, "any");
	wait_phase(ns, "own", "Ready", NULL);
	wait_phase(ns, "through-link", "Failed", "NotAllowed");
	status_message(ns, "through-link", msg, sizeof(msg));
	ck_assert_msg(strstr(msg, src_link) && strstr(msg, "resolves to") && strstr(msg, src_b),
		      "%s", msg);
	wait_phase(ns, "with-secret", "Failed", "NotAllowed");
	status_message(ns, "with-secret", msg, sizeof(msg));
	ck_assert_msg(strstr(msg, src_b) && strstr(msg, "a Secret opens no file:// source"), "%s",
		      msg);
	controller_stop(&c);
}
END_TEST

/*
 * A Dataset whose namespace holds pods past the 4 MiB of one answer is
 * deleted: the look at its claim's users reads them page by page. A pod
 * that mounts the claim but has ended holds nothing up.
 */
START_TEST(test_datasets_delete_past_a_page_of_pods)
{
	struct controller c = { 0 };
	char ns[64], path[400], claim[400], pv[400], prefix[128], msg[600];
	uint64_t t0, until;
	long code = 0;
	json_t *reply;

	make_source(prefix, sizeof(prefix));
	make_namespace(ns, sizeof(ns), "delete");
	controller_start(&c, ANY_NAMESPACE);
	make_dataset(ns, "ds", prefix);
	wait_phase(ns, "ds", "Ready", NULL);
	make_heavy_pods(ns, 24, false);
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods", ns);
	create(path, json_pack("{s:s, s:s, s:{s:s}, s:{s:[{s:s, s:s}], s:[{s:s, s:{s:s}}]}}",
			       "apiVersion", "v1", "kind", "Pod", "metadata", "name", "ended",
			       "spec", "containers", "name", "c", "image", "busybox", "volumes",
			       "name", "data", "persistentVolumeClaim", "claimName", "ds"));
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/ended/status", ns);
	merge(path, json_pack("{s:{s:s}}", "status", "phase", "Succeeded"));

	t0 = retry_now_ms();
	snprintf(path, sizeof(path), DATASETS, ns, "ds");
	reply = api("DELETE", path, "application/json", NULL, &code);
	ck_assert_msg(code == 200 || code == 202, "DELETE %s: HTTP %ld", path, code);
	json_decref(reply);
	snprintf(claim, sizeof(claim), "/api/v1/namespaces/%s/persistentvolumeclaims/ds", ns);
	snprintf(pv, sizeof(pv), "/api/v1/persistentvolumes/granary-%s.ds", ns);
	if (!wait_deleting(claim)) {
		status_message(ns, "ds", msg, sizeof(msg));
		ck_abort_msg("claim %s/ds not deleted within 30 s; Dataset: %s", ns, msg);
	}
	/* No controller-manager here to lift their protection. */
	drop_finalizers(claim);
	ck_assert_msg(wait_deleting(pv), "volume %s not deleted within 30 s", pv);
	drop_finalizers(pv);
	for (until = retry_now_ms() + 30000; retry_now_ms() < until; retry_sleep_ms(200)) {
		json_decref(api("GET", path, "application/json", NULL, &code));
		if (code == 404)
			break;
	}
	ck_assert_msg(code == 404, "Dataset %s/ds still there 30 s after its deletion", ns);
	fprintf(stderr, "Dataset with 24 heavy pods beside it: deleted in %llu ms\n",
		(unsigned long long)(retry_now_ms() - t0));
	controller_stop(&c);
}
END_TEST

#define REFUSE_READY "e2e.granary.io/refuse-ready"

static size_t refreshed_events(const char *ns)
{
	return events(ns, "Refreshed");
}

/* A ValidatingAdmissionPolicy (and its binding) that refuses a status of
 * phase Ready to a Dataset annotated REFUSE_READY, as an apiserver refuses
 * a write it cannot take. Lifting the annotation lets them through. */
static void refuse_ready_statuses(const char *ns)
{
	char name[128];

	snprintf(name, sizeof(name), "refuse-ready-%s", ns);
	create("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
	       json_pack("{s:s, s:s, s:{s:s}, s:{s:s, s:{s:[{s:[s], s:[s], s:[s], s:[s]}]}, "
			 "s:[{s:s, s:s}]}}",
			 "apiVersion", "admissionregistration.k8s.io/v1", "kind",
			 "ValidatingAdmissionPolicy", "metadata", "name", name, "spec",
			 "failurePolicy", "Fail", "matchConstraints", "resourceRules", "apiGroups",
			 "granary.io", "apiVersions", "*", "operations", "UPDATE", "resources",
			 "datasets/status", "validations", "expression",
			 "!(has(object.metadata.annotations) && '" REFUSE_READY "' in "
			 "object.metadata.annotations && has(object.status) && "
			 "has(object.status.phase) && object.status.phase == 'Ready')",
			 "message", "refused by the test: a status of phase Ready"));
	create("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
	       json_pack("{s:s, s:s, s:{s:s}, s:{s:s, s:[s]}}", "apiVersion",
			 "admissionregistration.k8s.io/v1", "kind",
			 "ValidatingAdmissionPolicyBinding", "metadata", "name", name, "spec",
			 "policyName", name, "validationActions", "Deny"));
}

/*
 * A refresh whose final status (Ready, refreshed) the apiserver refuses
 * lists the source once: the status is kept and written again at the
 * Dataset's next looks, not decided on as a refresh still asked for
 * (which listed the source again and again while the write failed).
 */
START_TEST(test_datasets_refused_status_is_written_again)
{
	struct controller c = { 0 };
	char ns[64], path[400], prefix[128], dataset[128];
	struct registry_dataset rd = { 0 };
	struct error err;
	uint64_t generation, until;
	long code = 0;
	json_t *o;

	make_source(prefix, sizeof(prefix));
	make_namespace(ns, sizeof(ns), "refused");
	refuse_ready_statuses(ns);
	snprintf(dataset, sizeof(dataset), "%s.ds", ns);
	controller_start(&c, ANY_NAMESPACE);
	make_dataset(ns, "ds", prefix);
	wait_phase(ns, "ds", "Ready", NULL);
	ck_assert_int_eq(registry_get(c.registry, dataset, &rd, &err), ERR_OK);
	generation = rd.generation;
	registry_dataset_release(&rd);

	/* Refused from now on (once the apiserver has loaded the policy). */
	snprintf(path, sizeof(path), DATASETS, ns, "ds");
	merge(path, json_pack("{s:{s:{s:s}}}", "metadata", "annotations", REFUSE_READY, "1"));
	snprintf(path, sizeof(path), DATASETS "/status", ns, "ds");
	for (until = retry_now_ms() + 20000; retry_now_ms() < until; retry_sleep_ms(200)) {
		json_decref(api("PATCH", path, "application/merge-patch+json",
				json_pack("{s:{s:s}}", "status", "phase", "Ready"), &code));
		if (code != 200)
			break;
	}
	ck_assert_msg(code == 422 || code == 403, "status of phase Ready: HTTP %ld", code);

	snprintf(path, sizeof(path), DATASETS, ns, "ds");
	merge(path, json_pack("{s:{s:s}}", "spec", "refresh", "r1"));
	ck_assert_uint_eq(wait_count(refreshed_events, ns, 1, 30000), 1);
	/* The looks that follow (the job's end, the first retry 5 s after
	 * the refusal) write the status again, refused, and list nothing. */
	retry_sleep_ms(6000);
	ck_assert_int_eq(registry_get(c.registry, dataset, &rd, &err), ERR_OK);
	ck_assert_msg(rd.generation == generation + 1,
		      "generation %llu after one refresh of generation %llu",
		      (unsigned long long)rd.generation, (unsigned long long)generation);
	registry_dataset_release(&rd);

	/* Taken at the next look. */
	merge(path, json_pack("{s:{s:{s:n}}}", "metadata", "annotations", REFUSE_READY));
	wait_phase(ns, "ds", "Ready", NULL);
	o = get(path);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(o, "status"),
							   "refreshed")) ?: "",
			 "r1");
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(o, "status"),
							    "snapshotGeneration")),
			 (json_int_t)generation + 1);
	json_decref(o);
	ck_assert_uint_eq(refreshed_events(ns), 1);
	controller_stop(&c);
}
END_TEST

/* ---- the cache gate ---------------------------------------------------- */

/* Gated pods of ns. */
static size_t count_gated(const char *ns)
{
	char path[300];
	json_t *list, *pod;
	size_t i, n = 0;

	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods", ns);
	list = get(path);
	json_array_foreach(json_object_get(list, "items"), i, pod)
		n += cachegate_index(pod) >= 0;
	json_decref(list);
	return n;
}

static void make_pod(const char *ns, const char *name, const char *claim)
{
	char path[300];

	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods", ns);
	create(path, json_pack("{s:s, s:s, s:{s:s, s:{s:s}}, s:{s:[{s:s}], s:[{s:s, s:s}], "
			       "s:[{s:s, s:{s:s, s:b}}]}}",
			       "apiVersion", "v1", "kind", "Pod", "metadata", "name", name,
			       "labels", CACHEGATE_LABEL, "90", "spec", "schedulingGates", "name",
			       CACHEGATE_GATE, "containers", "name", "train", "image", "busybox",
			       "volumes", "name", "data", "persistentVolumeClaim", "claimName",
			       claim, "readOnly", 1));
}

static size_t waiting_events(const char *ns)
{
	return events(ns, "WaitingForCache");
}

static size_t bad_gate_events(const char *ns)
{
	return events(ns, "BadCacheGate");
}

static size_t cached_events(const char *ns)
{
	return events(ns, "DatasetCached");
}

/*
 * A job of N gated pods appears at once: each pod's ADDED event judges
 * that pod alone (N verdicts, and rounds of at most N each, where the
 * gate once judged every gated pod at each one: N(N+1)/2). Then the
 * Dataset's cached bytes reach what they ask and a round opens them all;
 * a pod whose label turns bad is let go.
 */
START_TEST(test_cachegate_judges_each_new_pod_once)
{
	enum { N = 40 };
	struct cachegate_config cfg = { .mirror_ns = "granary-system", .stop = stop_now };
	struct cachegate *g = NULL;
	char ns[64], path[400], name[32];
	struct error err;
	uint64_t t0, judged, rounds;
	size_t n;

	make_namespace(ns, sizeof(ns), "gate");
	make_dataset(ns, "ds", "gate/");
	snprintf(path, sizeof(path), DATASETS "/status", ns, "ds");
	merge(path, json_pack("{s:{s:s, s:I, s:I}}", "status", "phase", "Ready", "bytes",
			      (json_int_t)1000, "cachedBytes", (json_int_t)0));
	cfg.kube = kube;
	ck_assert_msg(cachegate_start(&cfg, &g, &err) == ERR_OK, "%s", err.msg);

	t0 = retry_now_ms();
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "train-%d", i);
		make_pod(ns, name, "ds");
	}
	/* One WaitingForCache event per pod: each was judged. */
	n = wait_count(waiting_events, ns, N, 60000);
	ck_assert_msg(n == N, "%zu WaitingForCache events for %d pods", n, N);
	judged = cachegate_judged(g);
	rounds = (retry_now_ms() - t0) / CACHEGATE_EVERY_MS + 1;
	fprintf(stderr, "cache gate: %llu verdicts for %d new pods in %llu ms\n",
		(unsigned long long)judged, N, (unsigned long long)(retry_now_ms() - t0));
	ck_assert_msg(judged <= N + rounds * N,
		      "%llu verdicts for %d new pods (%llu rounds of at most %d)",
		      (unsigned long long)judged, N, (unsigned long long)rounds, N);

	/* A pod whose ask turns bad is let go, with a Warning. */
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/train-0", ns);
	merge(path, json_pack("{s:{s:{s:s}}}", "metadata", "labels", CACHEGATE_LABEL, "soon"));
	n = wait_count(count_gated, ns, N - 1, 60000);
	ck_assert_msg(n == N - 1, "%zu pods gated, %d expected", n, N - 1);
	/* The event follows the gate's removal: waited for, not looked at once. */
	ck_assert_uint_eq(wait_count(bad_gate_events, ns, 1, 10000), 1);

	/* Cached: the next round opens every gate. */
	snprintf(path, sizeof(path), DATASETS "/status", ns, "ds");
	merge(path, json_pack("{s:{s:I}}", "status", "cachedBytes", (json_int_t)1000));
	n = wait_count(count_gated, ns, 0, 60000);
	ck_assert_msg(n == 0, "%zu pods still gated", n);
	ck_assert_uint_eq(wait_count(cached_events, ns, N - 1, 10000), N - 1);
	stopping = true;
	cachegate_stop(g);
}
END_TEST

/* Whether the pod ns/name still carries the gate. */
static bool gated(const char *ns, const char *name)
{
	char path[300];
	json_t *pod;
	bool is;

	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", ns, name);
	pod = get(path);
	is = cachegate_index(pod) >= 0;
	json_decref(pod);
	return is;
}

/*
 * Labelled pods past the 4 MiB of one answer (ungated: a label outlives
 * its gate) are read page by page: a gated pod of a cached Dataset is let
 * go.
 */
START_TEST(test_cachegate_lists_past_a_page_of_pods)
{
	struct cachegate_config cfg = { .mirror_ns = "granary-system", .stop = stop_now };
	struct cachegate *g = NULL;
	char ns[64], path[400];
	struct error err;
	uint64_t t0, until;

	make_namespace(ns, sizeof(ns), "gatepages");
	make_dataset(ns, "ds", "gate/");
	snprintf(path, sizeof(path), DATASETS "/status", ns, "ds");
	merge(path, json_pack("{s:{s:s, s:I, s:I}}", "status", "phase", "Ready", "bytes",
			      (json_int_t)1000, "cachedBytes", (json_int_t)1000));
	make_heavy_pods(ns, 24, true);
	make_pod(ns, "train", "ds");
	cfg.kube = kube;
	t0 = retry_now_ms();
	ck_assert_msg(cachegate_start(&cfg, &g, &err) == ERR_OK, "%s", err.msg);
	for (until = t0 + 30000; gated(ns, "train") && retry_now_ms() < until;)
		retry_sleep_ms(100);
	ck_assert_msg(!gated(ns, "train"), "pod %s/train still gated after 30 s", ns);
	fprintf(stderr, "cache gate beside 24 heavy labelled pods: gate removed in %llu ms\n",
		(unsigned long long)(retry_now_ms() - t0));
	stopping = true;
	cachegate_stop(g);
}
END_TEST

/* ---- worker identity --------------------------------------------------- */

/* worker_identity_review_fn: kubeapi_token_review by the client *arg
 * points to at the time (the test points it elsewhere). */
static enum error_code review_by(const char *token, const char *audience,
				 struct kubeapi_token_review *out, void *arg, struct error *err)
{
	struct kubeapi *const *k = arg;

	return kubeapi_token_review(*k, token, audience, out, err);
}

/* What the kubelet's projected volume asks for a worker pod: a token of
 * service account sa bound to the pod ns/pod (uid), for audience. */
static void request_token(const char *ns, const char *sa, const char *pod, const char *uid,
			  const char *audience, char *token, size_t size)
{
	char path[400];
	long code = 0;
	json_t *reply;

	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/serviceaccounts/%s/token", ns, sa);
	reply = api("POST", path, "application/json",
		    json_pack("{s:s, s:s, s:{s:[s], s:i, s:{s:s, s:s, s:s, s:s}}}", "apiVersion",
			      "authentication.k8s.io/v1", "kind", "TokenRequest", "spec",
			      "audiences", audience, "expirationSeconds", 600, "boundObjectRef",
			      "apiVersion", "v1", "kind", "Pod", "name", pod, "uid", uid),
		    &code);
	ck_assert_msg(code == 201, "POST %s: HTTP %ld: %s", path, code, kubeapi_message(reply));
	snprintf(token, size, "%s",
		 json_string_value(json_object_get(json_object_get(reply, "status"), "token"))
			 ?: "");
	ck_assert_msg(*token, "POST %s: no status.token", path);
	json_decref(reply);
}

/* An apiserver that takes every request and never answers. */
static int hang(unsigned n, const char *target, char **body)
{
	(void)n, (void)target, (void)body;
	return FAKE_HANG;
}

/*
 * A worker pod's token, as the kubelet gets it (a service account, a node,
 * a pod on it, a bound token for granary-meta), is reviewed by the
 * apiserver: accepted for its node, refused for another. Then the
 * apiserver hangs (a fake in its place, at the address the review asks:
 * the real one cannot be made to hang on demand): past the minute a
 * review is trusted, the heartbeat is answered from the review kept once
 * the hung review times out (kube.timeout, 300 ms here), up to 5 minutes
 * after that review.
 */
START_TEST(test_worker_identity_by_the_apiserver_and_while_it_hangs)
{
	struct worker_identity_config wc = { .service_account = "granary-worker",
					     .audience = "granary-meta", .review = review_by };
	char ns[64], node[96], path[400], token[4096], fake_token[64], uid[64];
	struct kubeapi *reviewer = kube, *hung;
	struct worker_identity *wi = NULL;
	struct error err;
	struct fake f;
	json_t *pod;
	int64_t now = retry_wall_ms(), exp;
	uint64_t t0, took;

	make_namespace(ns, sizeof(ns), "identity");
	snprintf(node, sizeof(node), "node-%s", ns);
	create("/api/v1/nodes", json_pack("{s:s, s:s, s:{s:s}}", "apiVersion", "v1", "kind",
					  "Node", "metadata", "name", node));
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/serviceaccounts", ns);
	create(path, json_pack("{s:s, s:s, s:{s:s}}", "apiVersion", "v1", "kind",
			       "ServiceAccount", "metadata", "name", "granary-worker"));
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods", ns);
	create(path, json_pack("{s:s, s:s, s:{s:s}, s:{s:s, s:s, s:[{s:s, s:s}]}}", "apiVersion",
			       "v1", "kind", "Pod", "metadata", "name", "worker", "spec",
			       "serviceAccountName", "granary-worker", "nodeName", node,
			       "containers", "name", "worker", "image", "busybox"));
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/worker", ns);
	pod = get(path);
	snprintf(uid, sizeof(uid), "%s",
		 json_string_value(json_object_get(json_object_get(pod, "metadata"), "uid")) ?: "");
	json_decref(pod);
	request_token(ns, "granary-worker", "worker", uid, "granary-meta", token, sizeof(token));
	exp = worker_identity_token_expiry(token);
	ck_assert_msg(exp > now / 1000 + 500 && exp < now / 1000 + 700,
		      "the token's exp %lld, %lld s from now", (long long)exp,
		      (long long)(exp - now / 1000));

	wc.ns = ns;
	wc.review_arg = &reviewer;
	ck_assert_msg(worker_identity_new(&wc, &wi, &err) == ERR_OK, "%s", err.msg);
	ck_assert_msg(worker_identity_check_at(wi, token, node, (uint64_t)now, &err) == ERR_OK,
		      "%s", err.msg);
	ck_assert_int_eq(worker_identity_check_at(wi, token, "node-other", (uint64_t)now, &err),
			 ERR_PERMISSION);
	ck_assert_msg(strstr(err.msg, node), "%s", err.msg);

	fake_start(&f, hang);
	hung = fake_client_new(&f, fake_token, sizeof(fake_token));
	kubeapi_set_timeout(hung, 300);
	reviewer = hung;
	t0 = retry_now_ms();
	ck_assert_msg(worker_identity_check_at(wi, token, node, (uint64_t)now + 61000, &err) ==
			      ERR_OK,
		      "%s", err.msg);
	took = retry_now_ms() - t0;
	ck_assert_msg(took >= 300 && took < 2000, "the review took %llu ms, its timeout 300 ms",
		      (unsigned long long)took);
	ck_assert_uint_eq(f.n, 1);
	/* Kept 5 minutes at most: then the hung review is the answer. */
	ck_assert_int_eq(worker_identity_check_at(wi, token, node, (uint64_t)now + 300000, &err),
			 ERR_UNAVAILABLE);
	ck_assert_msg(strstr(err.msg, "no answer within 300 ms") && !strstr(err.msg, token),
		      "%s", err.msg);
	worker_identity_free(wi);
	kubeapi_free(hung);
	fake_stop(&f);
	unlink(fake_token);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("meta_kube");
	TCase *tc = tcase_create("controllers");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_datasets_apply_a_changed_secret_ref);
	tcase_add_test(tc, test_datasets_cluster_credentials_only_where_a_rule_allows);
	tcase_add_test(tc, test_datasets_file_sources_need_a_rule_for_their_resolved_directory);
	tcase_add_test(tc, test_datasets_delete_past_a_page_of_pods);
	tcase_add_test(tc, test_datasets_refused_status_is_written_again);
	tcase_add_test(tc, test_cachegate_judges_each_new_pod_once);
	tcase_add_test(tc, test_cachegate_lists_past_a_page_of_pods);
	tcase_add_test(tc, test_worker_identity_by_the_apiserver_and_while_it_hangs);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}

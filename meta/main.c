/*
 * granary-meta - the cluster's dataset registry, namespace snapshots and
 * worker membership, served over gRPC (api/granary.proto, docs/meta.md).
 *
 * Start-up: settings, the registry in data_dir (records and snapshots are
 * loaded from disk; no store is listed), the membership, then the gRPC
 * server on `listen`. SIGTERM or SIGINT: stop admitting calls, let those in
 * flight finish (10 s grace), exit 0.
 *
 * With kube.enabled (in Kubernetes), replicas compete for a Lease: a
 * replica listens only once it holds it (so the Service, whose readiness
 * probe is the gRPC port, sends calls to the leader alone), runs the
 * Dataset controller (meta/datasets.h), renews the Lease every third of
 * its duration on a thread of its own, and exits 1 at once when it has
 * not renewed for two thirds of it or another took it, whatever the other
 * threads are doing (kube/lease.h): the kubelet restarts it as a
 * candidate. At SIGTERM the leader goes on renewing, under the same
 * deadline, while it winds down, then gives the Lease up, so a rollout
 * hands over at once.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cpu.h"
#include "common/daemon.h"
#include "common/fileio.h"
#include "common/log.h"
#include "common/metrics_http.h"
#include "common/netaddr.h"
#include "common/retry.h"
#include "kube/kubeapi.h"
#include "kube/lease.h"
#include "meta/cachegate.h"
#include "meta/datasets.h"
#include "meta/membership.h"
#include "meta/meta_auth.h"
#include "meta/meta_metrics.h"
#include "meta/meta_settings.h"
#include "meta/registry.h"
#include "meta/service.h"
#include "meta/worker_identity.h"
#include "rpc/rpc_server.h"

/* Register and Refresh list a store and may take minutes; at most this many
 * run or wait at once, and the pool has that many threads on top of one
 * per CPU, so Get, List, GetSnapshot and Heartbeat always find a thread. */
#define MAX_BUILDS 4

/* gRPC binds a unix socket only in an existing directory: make it (the
 * default, /run/granary, is on a tmpfs that starts empty). */
static void make_socket_dir(const char *listen)
{
	struct netaddr na;
	struct error err;

	if (netaddr_parse(listen, "listen", &na, NULL) != ERR_OK || !na.is_unix)
		return;
	if (fileio_mkdirs_parent(na.path, &err) != ERR_OK)
		log_warn("cannot create the socket directory", LOG_S("cause", err.msg));
}

/* What /metrics renders: the registry, the membership and, once made (the
 * metrics server starts before it), the workers' identity checks. */
struct observed {
	struct registry *reg;
	struct membership *mem;
	_Atomic(struct worker_identity *) identity;
};

static enum error_code render_metrics(void *arg, struct metrics_buf *out, struct error *err)
{
	struct observed *o = arg;

	return meta_metrics_render(o->reg, o->mem, atomic_load(&o->identity), out, err);
}

/* The roles that have a key, "csi,worker,mount", for the start line. */
static const char *auth_roles(const struct meta_auth *a, char *buf, size_t size)
{
	size_t n = 0;

	buf[0] = '\0';
	for (int r = 0; r < META_ROLES; r++)
		if (a->keys[r])
			n += (size_t)snprintf(buf + n, n < size ? size - n : 0, "%s%s", n ? "," : "",
					      meta_role_name((enum meta_role)r));
	return buf;
}

/* worker_identity_review_fn: the apiserver's TokenReview (arg: the
 * struct kubeapi). */
static enum error_code review_token(const char *token, const char *audience,
				    struct kubeapi_token_review *out, void *arg, struct error *err)
{
	return kubeapi_token_review(arg, token, audience, out, err);
}

static bool stopping(void)
{
	return daemon_stopping() != 0;
}

/* Waits until this replica holds the Lease: ERR_OK, or ERR_CANCELLED at
 * SIGTERM. */
static enum error_code wait_for_lease(struct lease *l, struct error *err)
{
	char last[256] = "";
	bool held = false;

	while (!daemon_stopping()) {
		if (lease_try(l, &held, err) != ERR_OK)
			log_warn("cannot read the Lease", LOG_S("cause", err->msg));
		else if (held)
			return ERR_OK;
		else if (strcmp(last, lease_holder(l)) != 0) {
			snprintf(last, sizeof(last), "%s", lease_holder(l));
			log_info("waiting for the Lease: another replica leads",
				 LOG_S("holder", last));
		}
		retry_sleep_ms(1000);
	}
	return error_set(err, ERR_CANCELLED, "stopping");
}

/* lease_lost_fn: the Lease may be another replica's from now on, and
 * whatever this process does might clash with the new leader's work, so it
 * stops at once, even mid-shutdown (the keeper logged why); the kubelet
 * restarts it as a candidate. */
static void stop_leading(void *arg)
{
	(void)arg;
	_exit(1);
}

int main(int argc, char **argv)
{
	const struct config_schema *schema = &meta_settings_schema;
	struct meta_settings s;
	struct store_config store_cfg;
	struct registry_options ropt = { 0 };
	struct membership_options mopt = { 0 };
	struct rpc_server_options sopt = { 0 };
	struct registry *reg = NULL;
	struct membership *mem = NULL;
	struct rpc_server *srv = NULL;
	struct meta_service svc;
	struct meta_auth auth = { 0 };
	struct tls_material tls = { 0 };
	struct kubeapi *kube = NULL;
	struct lease *lease = NULL;
	struct datasets *ds = NULL;
	struct cachegate *gate = NULL;
	struct worker_identity *identity = NULL;
	struct observed observed = { 0 };
	struct metrics_http_ops hops = { .metrics = render_metrics, .arg = &observed };
	struct metrics_http *mh = NULL;
	char roles[64], *cred_dir = NULL;
	struct error err;
	int rc;

	rc = daemon_start(schema, &s, argc, argv, NULL);
	if (rc >= 0)
		return rc;
	if (meta_settings_check(&s, &err) != ERR_OK)
		return daemon_refuse(schema, &s, &err);
	daemon_handle_signals();
	rc = 1;

	{
		const char *files[META_ROLES] = {
			[META_ROLE_CSI] = s.auth_csi_key_file,
			[META_ROLE_WORKER] = s.auth_worker_key_file,
			[META_ROLE_MOUNT] = s.auth_mount_key_file,
		};

		if (meta_auth_load(&auth, files, s.auth_insecure, &err) != ERR_OK) {
			daemon_report(schema, &err);
			rc = 2;
			goto out;
		}
	}
	if (tls_server_load("tls.", &s.tls, s.tls_client_ca_file, &tls, &err) != ERR_OK) {
		daemon_report(schema, &err);
		rc = 2;
		goto out;
	}
	if (tls_material_server(&tls) && strncmp(s.listen, "unix://", 7) == 0)
		log_warn("tls.cert_file is set but listen is a unix socket, which is served in plaintext: TLS applies to a TCP listen",
			 LOG_S("listen", s.listen));
	if (auth.insecure)
		log_warn("granary-meta serves unsigned calls (auth.insecure): anyone who reaches it may register, delete and refresh datasets and join the membership");

	store_settings_to_config(&s.store, &store_cfg);
	ropt.data_dir = s.data_dir;
	ropt.store = &store_cfg;
	ropt.max_builds = MAX_BUILDS;
	ropt.allowed_endpoints = s.store_allowed_endpoints;
	ropt.file_roots = s.allowed_file_roots;
	ropt.limits.max_objects = (uint64_t)s.listing_max_objects;
	ropt.limits.max_pages = (uint64_t)s.listing_max_pages;
	ropt.limits.max_ms = s.listing_max_time_ms;
	if (registry_open(&ropt, &reg, &err) != ERR_OK) {
		log_error("cannot open the registry", LOG_S("data_dir", s.data_dir),
			  LOG_S("cause", err.msg));
		goto out;
	}
	mopt.interval_ms = s.heartbeat_interval_ms;
	mopt.expiry_ms = s.heartbeat_expiry_ms;
	if (membership_new(&mopt, &mem, &err) != ERR_OK) {
		log_error("cannot start the membership", LOG_S("cause", err.msg));
		goto out;
	}
	/* A replica waiting for the Lease answers /healthz and /metrics too. */
	observed = (struct observed){ .reg = reg, .mem = mem };
	make_socket_dir(s.metrics_address);
	if (*s.metrics_address &&
	    metrics_http_start(s.metrics_address, "metrics.address", &hops, &mh, &err) != ERR_OK) {
		log_error("cannot serve /metrics", LOG_S("cause", err.msg));
		goto out;
	}
	if (s.kube_enabled) {
		struct lease_config lc = {
			.namespace_ = s.kube_namespace,
			.name = s.kube_lease,
			.identity = s.kube_identity,
			.duration_s = (unsigned)((s.kube_lease_duration_ms + 999) / 1000),
		};

		/* Reviews wait on heartbeats' threads: at most half of the
		 * pool's one per CPU (the others are for registrations and
		 * streams), so that an apiserver that hangs leaves the rest to
		 * GetDataset and ListDatasets. */
		struct worker_identity_config wc = {
			.ns = s.kube_namespace,
			.service_account = s.kube_worker_service_account,
			.audience = s.kube_token_audience,
			.review = review_token,
			.reviews_max = (unsigned)(cpu_available() + 1) / 2,
		};

		if (kubeapi_new("", "", "", &kube, &err) != ERR_OK) {
			log_error("cannot reach the Kubernetes API", LOG_S("cause", err.msg));
			goto out;
		}
		kubeapi_set_timeout(kube, s.kube_timeout_ms);
		if (lease_new(kube, &lc, &lease, &err) != ERR_OK) {
			log_error("cannot compete for the Lease", LOG_S("cause", err.msg));
			goto out;
		}
		wc.review_arg = kube;
		if (worker_identity_new(&wc, &identity, &err) != ERR_OK) {
			log_error("cannot check the workers' identity", LOG_S("cause", err.msg));
			goto out;
		}
		atomic_store(&observed.identity, identity);
		if (wait_for_lease(lease, &err) != ERR_OK) {
			rc = 0;
			goto out;
		}
		if (lease_keep(lease, stop_leading, NULL, &err) != ERR_OK) {
			log_error("cannot keep the Lease", LOG_S("cause", err.msg));
			goto out;
		}
		log_info("leading: this replica serves", LOG_S("lease", s.kube_lease),
			 LOG_S("identity", s.kube_identity));
	}
	svc.registry = reg;
	svc.membership = mem;
	svc.identity = identity;
	/* GetSnapshot streams hold a thread while their client reads: at most
	 * rpc.max_streams run at once (one more is refused as busy), on
	 * threads of their own on top of those, so that clients that open
	 * streams and never read cannot take the threads of heartbeats and the
	 * other calls. */
	sopt.max_streams = (unsigned)s.rpc_max_streams;
	sopt.threads = (unsigned)cpu_available() + MAX_BUILDS + sopt.max_streams;
	sopt.stall_timeout_ms = s.rpc_stall_timeout_ms;
	sopt.tls = &tls;
	make_socket_dir(s.listen);
	if (rpc_server_new(&sopt, &srv, &err) == ERR_OK)
		rpc_server_set_auth(srv, META_AUTH_METADATA, meta_auth_check, &auth);
	if (!srv || meta_service_add(srv, &svc, &err) != ERR_OK ||
	    rpc_server_listen(srv, s.listen, NULL, &err) != ERR_OK ||
	    rpc_server_start(srv, &err) != ERR_OK) {
		log_error("cannot serve", LOG_S("listen", s.listen), LOG_S("cause", err.msg));
		goto out;
	}
	log_info("granary-meta serving", LOG_S("listen", s.listen), LOG_S("data_dir", s.data_dir),
		 LOG_S("tls", !tls_material_server(&tls) ? "off"
			      : tls.ca			 ? "mutual"
							 : "on"),
		 LOG_S("metrics.address", s.metrics_address),
		 LOG_U("heartbeat.interval_ms", s.heartbeat_interval_ms),
		 LOG_U("heartbeat.expiry_ms", s.heartbeat_expiry_ms),
		 LOG_S("auth", auth.insecure ? "insecure" : "signed"),
		 LOG_S("auth.roles", auth_roles(&auth, roles, sizeof(roles))),
		 LOG_S("heartbeats_from", identity ? s.kube_worker_service_account : "any worker key"));

	if (s.kube_enabled) {
		struct datasets_config dc = {
			.kube = kube,
			.registry = reg,
			.membership = mem,
			.mirror_ns = s.kube_namespace,
			.cluster_credentials = s.datasets_cluster_credentials,
			.driver = s.kube_driver,
			.stop = stopping,
		};

		if (*s.kube_credentials_dir)
			dc.credentials_dir = s.kube_credentials_dir;
		else if (asprintf(&cred_dir, "%s/credentials", s.data_dir) >= 0)
			dc.credentials_dir = cred_dir;
		if (!dc.credentials_dir || datasets_start(&dc, &ds, &err) != ERR_OK) {
			log_error("cannot start the Dataset controller",
				  LOG_S("cause", dc.credentials_dir ? err.msg : "out of memory"));
			goto out;
		}
		if (s.kube_cache_gate &&
		    cachegate_start(&(struct cachegate_config){ .kube = kube,
								.mirror_ns = s.kube_namespace,
								.stop = stopping },
				    &gate, &err) != ERR_OK) {
			log_error("cannot start the cache gate", LOG_S("cause", err.msg));
			goto out;
		}
	}

	/* Expiry is exact at every call anyway; the tick makes "worker
	 * expired" appear in the log when it happens. */
	while (!daemon_stopping()) {
		retry_sleep_ms(100);
		membership_expire(mem);
	}
	/* The leader goes on renewing while it winds down, and its watchdog
	 * still ends the process at the renew deadline (however long a join
	 * below takes); the Lease is given up only once nothing acts any
	 * more. */
	log_info("granary-meta stopping");
	metrics_http_stop(mh);
	mh = NULL;
	cachegate_stop(gate);
	gate = NULL;
	if (!datasets_stop(ds, 10000)) {
		/* Its thread acts until the exit: the Lease is left to expire
		 * rather than handed to a new leader while it does. */
		log_warn("granary-meta exiting with a Dataset registration unfinished",
			 LOG_S("lease", lease ? "left to expire" : "none"));
		_exit(0);
	}
	ds = NULL;
	if (!rpc_server_shutdown(srv)) {
		/* A registration is still listing a store: its thread uses the
		 * registry, so exit without freeing. It left no record; the
		 * caller registers again. */
		log_warn("granary-meta exiting with a registration unfinished",
			 LOG_S("lease", lease ? "left to expire" : "none"));
		_exit(0);
	}
	if (lease)
		lease_release(lease);
	rc = 0;
out:
	/* First what reads the rest: /metrics the identity checks, the
	 * handlers (a start that failed after the server started) the
	 * registry, the membership, the identity checks and the client. */
	metrics_http_stop(mh);
	rpc_server_free(srv);
	cachegate_stop(gate);
	datasets_stop(ds, 0);
	lease_free(lease);
	worker_identity_free(identity);
	kubeapi_free(kube);
	free(cred_dir);
	membership_free(mem);
	registry_free(reg);
	meta_auth_release(&auth);
	tls_material_release(&tls);
	config_release(schema, &s);
	return rc;
}

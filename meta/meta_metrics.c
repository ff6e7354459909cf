/*
 * meta_metrics.c - granary-meta's /metrics text.
 */
#include "meta/meta_metrics.h"

#include <stdlib.h>

/* A gauge family with one sample per dataset. */
static void per_dataset(struct metrics_buf *out, const char *name, const char *help,
			const struct registry_dataset *ds, size_t n, int what)
{
	metrics_render_family(out, name, help, "gauge");
	for (size_t i = 0; i < n; i++) {
		uint64_t v = what == 0 ? ds[i].totals.files
			     : what == 1 ? ds[i].totals.bytes
					 : ds[i].generation;

		metrics_render_labeled(out, name, "dataset", ds[i].spec->name, v);
	}
}

enum error_code meta_metrics_render(struct registry *reg, struct membership *mem,
				    struct worker_identity *identity, struct metrics_buf *out,
				    struct error *err)
{
	static const enum registry_state states[] = { REGISTRY_REGISTERING, REGISTRY_READY,
						      REGISTRY_REFRESHING };
	struct registry_dataset *ds = NULL;
	struct membership_worker *w = NULL;
	size_t nds = 0, nw = 0, damaged = 0;
	uint64_t version = 0;

	if (registry_list(reg, &ds, &nds, err) != ERR_OK)
		return err->code;
	if (membership_list(mem, &w, &nw, &version, err) != ERR_OK) {
		registry_list_free(ds, nds);
		return err->code;
	}
	metrics_render_family(out, "granary_meta_datasets", "datasets registered, by state",
			      "gauge");
	for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
		uint64_t k = 0;

		for (size_t i = 0; i < nds; i++)
			k += ds[i].state == states[s];
		metrics_render_labeled(out, "granary_meta_datasets", "state",
				       registry_state_name(states[s]), k);
	}
	for (size_t i = 0; i < nds; i++)
		damaged += ds[i].damaged;
	metrics_render_gauge(out, "granary_meta_datasets_damaged",
			     "datasets whose snapshot did not load at start-up (a refresh rebuilds it)",
			     damaged);
	per_dataset(out, "granary_meta_dataset_files", "files in the served generation", ds, nds, 0);
	per_dataset(out, "granary_meta_dataset_bytes", "bytes of the served generation's files", ds,
		    nds, 1);
	per_dataset(out, "granary_meta_dataset_generation", "generation served (0: registering)",
		    ds, nds, 2);
	metrics_render_gauge(out, "granary_meta_workers", "live workers in the membership", nw);
	metrics_render_gauge(out, "granary_meta_membership_version",
			     "version of the membership (changes when a worker joins or leaves)",
			     version);
	metrics_render_family(out, "granary_meta_worker_capacity_bytes",
			      "each live worker's cache capacity, as its last heartbeat said", "gauge");
	for (size_t i = 0; i < nw; i++)
		metrics_render_labeled(out, "granary_meta_worker_capacity_bytes", "worker", w[i].id,
				       w[i].capacity_bytes);
	metrics_render_family(out, "granary_meta_worker_used_bytes",
			      "bytes each live worker's cache holds, as its last heartbeat said",
			      "gauge");
	for (size_t i = 0; i < nw; i++)
		metrics_render_labeled(out, "granary_meta_worker_used_bytes", "worker", w[i].id,
				       w[i].used_bytes);
	if (identity) {
		uint64_t review, kept, stale;

		worker_identity_counts(identity, &review, &kept, &stale);
		metrics_render_family(out, "granary_meta_worker_token_checks_total",
				      "workers' identity tokens judged, by what: a review of the Kubernetes API, one kept while trusted, or one kept past that for want of an answer",
				      "counter");
		metrics_render_labeled(out, "granary_meta_worker_token_checks_total", "by", "review",
				       review);
		metrics_render_labeled(out, "granary_meta_worker_token_checks_total", "by", "kept",
				       kept);
		metrics_render_labeled(out, "granary_meta_worker_token_checks_total", "by",
				       "kept_stale", stale);
	}
	free(w);
	registry_list_free(ds, nds);
	if (out->failed)
		return error_set(err, ERR_NOMEM, "metrics: out of memory");
	return ERR_OK;
}

/*
 * health.c - the checks behind /healthz and /readyz, and the /metrics text.
 */
#include "csi/health.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "csi/identity.h"
#include "fuse/mountstats.h"

static enum error_code check_live(const struct health *h, struct error *err)
{
	struct stat sb;

	if (h->csi_socket && *h->csi_socket &&
	    (lstat(h->csi_socket, &sb) != 0 || !S_ISSOCK(sb.st_mode)))
		return error_set(err, ERR_UNAVAILABLE, "the CSI socket '%s' is gone", h->csi_socket);
	return ERR_OK;
}

enum error_code health_check(const struct health *h, enum health_check_kind kind,
			     struct error *err)
{
	struct error why;

	if (check_live(h, err) != ERR_OK)
		return ERR_UNAVAILABLE;
	if (kind != HEALTH_READY)
		return ERR_OK;
	/* The same check as the CSI Probe: meta only when the controller is on. */
	if (!identity_probe(h->probe, &why))
		return error_set(err, ERR_UNAVAILABLE, "granary-meta does not answer: %s", why.msg);
	if (h->reg && !registration_ok(h->reg, err))
		return ERR_UNAVAILABLE;
	return ERR_OK;
}

/*
 * The granary_fuse_* families of every volume whose daemons keep counters,
 * read from their files (no daemon is asked: a dead one's last counts
 * are there too). A file missing (a daemon that has not started yet) is
 * skipped; one unreadable (of another layout, an upgrade in progress) is
 * skipped with a warning.
 */
static void render_mounts(const struct node_volume_health *vols, size_t n,
			  struct metrics_buf *out)
{
	struct mountstats_view *views = calloc(n ? n : 1, sizeof(*views));
	size_t k = 0;
	struct error err;

	if (!views) {
		out->failed = 1;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		enum error_code rc;

		if (!vols[i].stats_file)
			continue;
		rc = mountstats_load(vols[i].stats_file, &views[k].v, &err);
		if (rc == ERR_OK) {
			views[k++].volume = vols[i].volume_id;
		} else if (rc != ERR_NOT_FOUND) {
			log_warn("cannot read a mount's counters",
					 LOG_S("volume", vols[i].volume_id), LOG_S("cause", err.msg));
		}
	}
	mountstats_render(out, views, k);
	free(views);
}

enum error_code health_metrics(const struct health *h, struct metrics_buf *out,
			       struct error *err)
{
	struct node_volume_health *vols = NULL;
	size_t n = 0;

	if (!h->node)
		return ERR_OK;
	if (node_volumes_health(h->node, &vols, &n, err) != ERR_OK)
		return err->code;
	metrics_render_gauge(out, "granary_csi_volumes_staged", "volumes staged on this node", n);
	metrics_render_family(out, "granary_csi_volume_abnormal",
			      "1 while a staged volume's mount cannot serve (NodeGetVolumeStats' condition says why)",
			      "gauge");
	for (size_t i = 0; i < n; i++)
		metrics_render_labeled(out, "granary_csi_volume_abnormal", "volume",
				       vols[i].volume_id, vols[i].cond.abnormal ? 1 : 0);
	metrics_render_family(out, "granary_csi_fuse_restarts_total",
			      "successors of a staged volume's granary-fuse the node plugin started",
			      "counter");
	for (size_t i = 0; i < n; i++)
		metrics_render_labeled(out, "granary_csi_fuse_restarts_total", "volume",
				       vols[i].volume_id, vols[i].restarts);
	metrics_render_family(out, "granary_csi_fuse_restart_backoff_seconds",
			      "how long the next successor of a volume's granary-fuse waits after one failed at start (0: starts at once)",
			      "gauge");
	for (size_t i = 0; i < n; i++)
		metrics_render_labeled_double(out, "granary_csi_fuse_restart_backoff_seconds", "volume",
					      vols[i].volume_id,
					      (double)vols[i].restart_delay_ms / 1000.0);
	render_mounts(vols, n, out);
	node_volumes_health_free(vols, n);
	if (out->failed)
		return error_set(err, ERR_NOMEM, "metrics: out of memory");
	return ERR_OK;
}

static enum error_code ops_live(void *arg, struct error *err)
{
	return health_check(arg, HEALTH_LIVE, err);
}

static enum error_code ops_ready(void *arg, struct error *err)
{
	return health_check(arg, HEALTH_READY, err);
}

static enum error_code ops_metrics(void *arg, struct metrics_buf *out, struct error *err)
{
	return health_metrics(arg, out, err);
}

void health_ops(const struct health *h, struct metrics_http_ops *out)
{
	*out = (struct metrics_http_ops){ .live = ops_live, .ready = ops_ready,
					  .metrics = ops_metrics, .arg = (void *)h };
}

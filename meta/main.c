/*
 * granary-meta - the cluster's dataset registry, namespace snapshots and
 * worker membership. This build reads and checks its settings; the gRPC
 * service comes next.
 */
#include <stdio.h>

#include "common/daemon.h"
#include "common/log.h"
#include "meta/meta_settings.h"

int main(int argc, char **argv)
{
	const struct config_schema *schema = &meta_settings_schema;
	struct meta_settings s;
	struct error err;
	int first = argc, rc;

	rc = daemon_start(schema, &s, argc, argv, &first);
	if (rc >= 0)
		return rc;
	rc = 2;
	if (first < argc) {
		fprintf(stderr, "%s: unexpected argument '%s' (settings are flags, see --help)\n",
			schema->program, argv[first]);
		goto out;
	}
	if (meta_settings_check(&s, &err) != ERR_OK) {
		fprintf(stderr, "%s: %s\n", schema->program, err.msg);
		goto out;
	}
	log_info("settings loaded", LOG_S("listen", s.listen), LOG_S("data_dir", s.data_dir),
		 LOG_U("heartbeat.interval_ms", s.heartbeat_interval_ms),
		 LOG_U("heartbeat.expiry_ms", s.heartbeat_expiry_ms),
		 LOG_S("store.endpoint", s.store.endpoint), LOG_S("store.region", s.store.region));
	fprintf(stderr, "%s: configuration is valid; serving is not part of this build yet\n",
		schema->program);
	rc = 1;
out:
	config_release(schema, &s);
	return rc;
}

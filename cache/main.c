/*
 * granary-worker - the per-node cache: owns the node's cache directory,
 * serves blocks to peers and fetches misses from the object store. This
 * build reads and checks its settings; the block service comes next.
 */
#include <stdio.h>

#include "cache/worker_settings.h"
#include "common/daemon.h"
#include "common/log.h"

int main(int argc, char **argv)
{
	const struct config_schema *schema = &worker_settings_schema;
	struct worker_settings s;
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
	if (worker_settings_check(&s, &err) != ERR_OK) {
		fprintf(stderr, "%s: %s\n", schema->program, err.msg);
		goto out;
	}
	log_info("settings loaded", LOG_S("listen", s.listen), LOG_S("node_id", s.node_id),
		 LOG_S("meta.address", s.meta_address), LOG_S("cache.dir", s.cache_dir),
		 LOG_U("cache.capacity", s.cache_capacity),
		 LOG_U("cache.block_size", s.cache_block_size),
		 LOG_S("cache.policy", worker_cache_policy_names[s.cache_policy]),
		 LOG_I("threads", worker_settings_threads(&s)),
		 LOG_I("fetch.max_inflight", s.fetch_max_inflight),
		 LOG_S("store.endpoint", s.store.endpoint), LOG_S("store.region", s.store.region));
	fprintf(stderr, "%s: configuration is valid; serving is not part of this build yet\n",
		schema->program);
	rc = 1;
out:
	config_release(schema, &s);
	return rc;
}

/*
 * granary-fuse - mounts one dataset read-only through FUSE, reading blocks
 * from the node's cache, then the owning peer worker, then the object
 * store. This build reads and checks its settings; the mount comes next.
 */
#include <stdio.h>

#include "common/daemon.h"
#include "common/log.h"
#include "fuse/mount_settings.h"

int main(int argc, char **argv)
{
	const struct config_schema *schema = &mount_settings_schema;
	struct mount_settings s;
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
	if (mount_settings_check(&s, &err) != ERR_OK) {
		fprintf(stderr, "%s: %s\n", schema->program, err.msg);
		goto out;
	}
	log_info("settings loaded", LOG_S("mountpoint", s.mountpoint), LOG_S("dataset", s.dataset),
		 LOG_S("source", s.source), LOG_S("meta.address", s.meta_address),
		 LOG_S("cache.dir", s.cache_dir), LOG_U("cache.block_size", s.cache_block_size),
		 LOG_U("max_read", s.max_read), LOG_I("max_background", s.max_background),
		 LOG_I("max_idle_threads", s.max_idle_threads),
		 LOG_S("clone_fd", s.clone_fd ? "true" : "false"),
		 LOG_S("splice", s.splice ? "true" : "false"), LOG_U("read_ahead", s.read_ahead),
		 LOG_S("store.endpoint", s.store.endpoint));
	fprintf(stderr, "%s: configuration is valid; serving is not part of this build yet\n",
		schema->program);
	rc = 1;
out:
	config_release(schema, &s);
	return rc;
}

/*
 * granary-csi - the CSI driver: controller (register datasets with meta)
 * and node plugin (run the dataset's FUSE daemon, bind-mount it into pods)
 * in one binary. This build reads and checks its settings; the CSI
 * services come next.
 */
#include <stdio.h>

#include "common/daemon.h"
#include "common/log.h"
#include "csi/csi_settings.h"

int main(int argc, char **argv)
{
	const struct config_schema *schema = &csi_settings_schema;
	struct csi_settings s;
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
	if (csi_settings_check(&s, &err) != ERR_OK) {
		fprintf(stderr, "%s: %s\n", schema->program, err.msg);
		goto out;
	}
	log_info("settings loaded", LOG_S("endpoint", s.endpoint),
		 LOG_S("mode", csi_mode_names[s.mode]), LOG_S("node_id", s.node_id),
		 LOG_S("meta.address", s.meta_address), LOG_S("state_dir", s.state_dir),
		 LOG_S("fuse_binary", s.fuse_binary));
	fprintf(stderr, "%s: configuration is valid; serving is not part of this build yet\n",
		schema->program);
	rc = 1;
out:
	config_release(schema, &s);
	return rc;
}

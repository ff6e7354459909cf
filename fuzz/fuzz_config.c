/*
 * fuzz_config.c - the YAML files the daemons read (config_load_string)
 * against their real schemas, then the rules each adds (*_settings_check).
 *
 * Input: one byte choosing the schema (granary-worker, -meta, -fuse,
 * -csi), then the YAML text.
 */
#include <stdlib.h>
#include <string.h>

#include "cache/worker_settings.h"
#include "common/config.h"
#include "common/log.h"
#include "csi/csi_settings.h"
#include "fuse/mount_settings.h"
#include "fuzz/fuzz.h"
#include "meta/meta_settings.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_set_level(LOG_LEVEL_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	union {
		struct worker_settings worker;
		struct meta_settings meta;
		struct mount_settings mount;
		struct csi_settings csi;
	} s;
	const struct config_schema *schema;
	struct error err;
	char *yaml;
	int which;

	if (size < 1)
		return 0;
	which = data[0] & 3;
	schema = which == 0 ? &worker_settings_schema
		 : which == 1 ? &meta_settings_schema
		 : which == 2 ? &mount_settings_schema
			      : &csi_settings_schema;
	yaml = fuzz_strndup(data + 1, size - 1);
	if (!yaml)
		return 0;
	memset(&s, 0, sizeof(s));
	if (config_apply_defaults(schema, &s, &err) != ERR_OK)
		abort();
	if (config_load_string(schema, &s, "fuzz.yaml", yaml, &err) == ERR_OK) {
		switch (which) {
		case 0: (void)worker_settings_check(&s.worker, &err); break;
		case 1: (void)meta_settings_check(&s.meta, &err); break;
		case 2: (void)mount_settings_check(&s.mount, &err); break;
		default: (void)csi_settings_check(&s.csi, &err); break;
		}
	}
	config_release(schema, &s);
	free(yaml);
	return 0;
}

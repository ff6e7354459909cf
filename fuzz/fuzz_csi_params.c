/*
 * fuzz_csi_params.c - the maps a CSI caller hands granary-csi: StorageClass
 * parameters (controller_parse_params), a volume context
 * (controller_context_params), a secret (controller_parse_secret), and the
 * names and ids (controller_volume_id, controller_check_id). Parameters
 * that parse must come back unchanged through the volume context
 * CreateVolume returns (controller_context_init).
 *
 * Input: lines of KEY "=" VALUE, at most 16 of them.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "csi/controller.h"
#include "fuzz/fuzz.h"

#define MAX_KV 16

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_set_level(LOG_LEVEL_ERROR);
	return 0;
}

static bool same(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

static void round_trip(const struct controller_params *p)
{
	struct controller_context ctx;
	struct controller_params back;
	struct error err;
	bool present = false;

	controller_context_init(&ctx, "dataset", p);
	if (controller_context_params(ctx.kv, ctx.n, &back, &present, &err) != ERR_OK || !present ||
	    !same(p->source, back.source) || !same(p->endpoint, back.endpoint) ||
	    !same(p->region, back.region) || p->block_size != back.block_size ||
	    p->cache_policy != back.cache_policy || p->pin != back.pin ||
	    p->preload != back.preload)
		abort();
	controller_params_release(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *f[MAX_KV];
	char *copy = fuzz_split(data, size, f, MAX_KV);
	struct controller_kv kv[MAX_KV];
	struct controller_params p;
	struct controller_secret s;
	struct error err;
	char id[CONTROLLER_ID_MAX];
	bool present;
	size_t n = 0, i;

	if (!copy)
		return 0;
	for (i = 0; i < MAX_KV && (i == 0 || *f[i]); i++) {
		char *eq = strchr(f[i], '=');

		kv[n].key = f[i];
		kv[n].value = eq ? eq + 1 : NULL;
		if (eq)
			*eq = '\0';
		n++;
	}

	if (controller_parse_params(kv, n, &p, &err) == ERR_OK)
		round_trip(&p);
	controller_params_release(&p);
	if (controller_context_params(kv, n, &p, &present, &err) == ERR_OK && present)
		round_trip(&p);
	controller_params_release(&p);
	if (controller_parse_secret("secret", kv, n, &s, &present, &err) == ERR_OK)
		controller_secret_release(&s);

	for (i = 0; i < n; i++) {
		if (controller_volume_id(kv[i].key, id, sizeof(id), &err) == ERR_OK &&
		    (!controller_valid_id(id) || controller_check_id("volume_id", id, &err) != ERR_OK))
			abort();
		if ((controller_check_id("volume_id", kv[i].key, &err) == ERR_OK) !=
		    controller_valid_id(kv[i].key))
			abort();
	}
	free(copy);
	return 0;
}

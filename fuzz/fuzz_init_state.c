/*
 * fuzz_init_state.c - the saved FUSE_INIT a successor granary-fuse reads
 * back at takeover (ll_check_saved_init, before libfuse sees it): the file
 * lies in the node plugin's state directory, which a mount pod can write.
 * The property: whatever it accepts is one FUSE_INIT request of the size
 * given, as the takeover then hands it to libfuse.
 *
 * Input: the file's bytes.
 */
#include <linux/fuse.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "fuse/ll.h"
#include "fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_LEVEL_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuse_in_header h;
	struct error err;

	if (ll_check_saved_init(data, size, &err) != ERR_OK) {
		fuzz_use(strlen(err.msg));
		return 0;
	}
	if (size < sizeof(h) || size > LL_INIT_STATE_MAX)
		abort();
	memcpy(&h, data, sizeof(h));
	if (h.opcode != FUSE_INIT || h.len != size)
		abort();
	return 0;
}

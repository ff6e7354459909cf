/*
 * store_settings.c - shared store settings to struct store_config.
 */
#include "store/store_settings.h"

#include <string.h>

const char *const store_addressing_names[] = { "auto", "path", "virtual", NULL };

static const char *or_null(const char *s)
{
	return s && *s ? s : NULL;
}

void store_settings_to_config(const struct store_settings *settings,
			      struct store_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->endpoint = or_null(settings->endpoint);
	cfg->region = or_null(settings->region);
	cfg->addressing = (enum store_addressing)settings->addressing;
	cfg->credentials_file = or_null(settings->credentials_file);
	cfg->profile = or_null(settings->profile);
	cfg->connect_timeout_ms = settings->connect_timeout_ms;
	cfg->request_timeout_ms = settings->request_timeout_ms;
	cfg->deadline_ms = settings->deadline_ms;
	cfg->max_attempts = (unsigned)settings->max_attempts;
	cfg->retry_base_ms = settings->retry_base_ms;
	cfg->retry_max_ms = settings->retry_max_ms;
	cfg->max_connections = (unsigned)settings->max_connections;
}

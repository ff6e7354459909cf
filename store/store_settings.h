/*
 * store_settings.h - the object-store settings every daemon shares, as
 * config fields ("store.endpoint", "store.region", ...), so that each
 * daemon's YAML file and flags spell them the same way.
 *
 * A daemon embeds struct store_settings in its own settings struct and puts
 * STORE_SETTINGS_FIELDS(type, member) into its config_field table.
 */
#ifndef GRANARY_STORE_STORE_SETTINGS_H
#define GRANARY_STORE_STORE_SETTINGS_H

#include <stddef.h>

#include "common/config.h"
#include "store/store.h"

struct store_settings {
	char *endpoint;
	char *region;
	int addressing;          /* enum store_addressing */
	char *credentials_file;
	char *profile;
	uint64_t connect_timeout_ms;
	uint64_t request_timeout_ms;
	uint64_t deadline_ms;
	int64_t max_attempts;
	uint64_t retry_base_ms;
	uint64_t retry_max_ms;
	int64_t max_connections;
};

extern const char *const store_addressing_names[]; /* "auto", "path", "virtual" */

#define STORE_SETTINGS_FIELDS(type, m)                                                    \
	{ "store.endpoint", CONFIG_STRING, offsetof(type, m.endpoint), "",                   \
	  "S3 endpoint URL, e.g. http://127.0.0.1:7070 (empty: AWS for the region)", 0, 0, NULL }, \
	{ "store.region", CONFIG_STRING, offsetof(type, m.region), "us-east-1",              \
	  "region used in request signatures", 0, 0, NULL },                                \
	{ "store.addressing", CONFIG_ENUM, offsetof(type, m.addressing), "auto",             \
	  "bucket addressing: auto, path or virtual", 0, 0, store_addressing_names },       \
	{ "store.credentials_file", CONFIG_STRING, offsetof(type, m.credentials_file), "",   \
	  "AWS shared-credentials file (else AWS_* environment, else ~/.aws/credentials)",   \
	  0, 0, NULL },                                                                     \
	{ "store.profile", CONFIG_STRING, offsetof(type, m.profile), "",                     \
	  "profile in the credentials file (empty: AWS_PROFILE or default)", 0, 0, NULL },  \
	{ "store.connect_timeout", CONFIG_DURATION, offsetof(type, m.connect_timeout_ms), "3s", \
	  "TCP/TLS connect timeout", 1, 600000, NULL },                                     \
	{ "store.request_timeout", CONFIG_DURATION, offsetof(type, m.request_timeout_ms), "30s", \
	  "timeout of one request attempt", 1, 3600000, NULL },                             \
	{ "store.deadline", CONFIG_DURATION, offsetof(type, m.deadline_ms), "60s",           \
	  "time budget of one call, all retries included", 1, 3600000, NULL },              \
	{ "store.max_attempts", CONFIG_INT, offsetof(type, m.max_attempts), "5",             \
	  "tries per call, the first included", 1, 100, NULL },                             \
	{ "store.retry_base", CONFIG_DURATION, offsetof(type, m.retry_base_ms), "50ms",      \
	  "first backoff step (doubles each retry, with jitter)", 1, 60000, NULL },         \
	{ "store.retry_max", CONFIG_DURATION, offsetof(type, m.retry_max_ms), "2s",          \
	  "largest backoff step", 1, 600000, NULL },                                        \
	{ "store.max_connections", CONFIG_INT, offsetof(type, m.max_connections), "0",       \
	  "keep-alive connections kept in the pool (0: one per store fetch the daemon "     \
	  "runs at once; 64 where it runs none of its own)", 0, 4096, NULL }

/* Fills cfg from settings; cfg points into settings (no copies). */
void store_settings_to_config(const struct store_settings *settings,
			      struct store_config *cfg);

#endif

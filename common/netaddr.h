/*
 * netaddr.h - listen and connect addresses as written in settings:
 *   "unix:///run/granary/meta.sock"   a unix socket path
 *   "127.0.0.1:7400", "[::1]:7400", "0.0.0.0:7480", "meta.granary:7400"
 */
#ifndef GRANARY_COMMON_NETADDR_H
#define GRANARY_COMMON_NETADDR_H

#include <stdbool.h>

#include "common/error.h"

struct netaddr {
	bool is_unix;
	char path[108];  /* unix socket path (sun_path size) */
	char host[256];  /* without brackets */
	int port;        /* 1..65535 */
};

/* Parses text; ERR_INVALID says what is wrong with it, naming `what`
 * (the setting, e.g. "listen"). */
enum error_code netaddr_parse(const char *text, const char *what,
			      struct netaddr *out, struct error *err);

/* For settings checks: empty is "key 'KEY': required", else as
 * netaddr_parse with the key named. */
enum error_code netaddr_check_setting(const char *key, const char *text,
				      struct error *err);

#endif

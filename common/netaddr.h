/*
 * netaddr.h - listen and connect addresses as written in settings:
 *   "unix:///run/granary/meta.sock"   a unix socket path
 *   "127.0.0.1:7400", "[::1]:7400", "0.0.0.0:7480", "meta.granary:7400"
 *   ":9808"                           listen only: every local address
 * and binding a listening socket on one.
 */
#ifndef GRANARY_COMMON_NETADDR_H
#define GRANARY_COMMON_NETADDR_H

#include <stdbool.h>
#include <stddef.h>

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

/* As netaddr_parse, and ":PORT" (host left empty: every local address),
 * for addresses a daemon listens on. */
enum error_code netaddr_parse_listen(const char *text, const char *what, struct netaddr *out,
				     struct error *err);

/* As netaddr_check_setting, for a listen address (":PORT" allowed). */
enum error_code netaddr_check_listen_setting(const char *key, const char *text,
					     struct error *err);

/*
 * Removes path when it is a socket (one left by a previous run makes bind
 * fail). A missing path is ERR_OK; something else there is ERR_EXISTS
 * naming it, so a mistyped setting never deletes a file.
 */
enum error_code netaddr_remove_stale_socket(const char *path, struct error *err);

/*
 * Binds and listens on a listen address (netaddr_parse_listen): a unix
 * socket after removing a stale one (netaddr_remove_stale_socket), or TCP
 * with SO_REUSEADDR on the first address that binds (empty host: every
 * address). Returns the descriptor (close-on-exec) or -1 with err naming
 * `what` and the address: ERR_INVALID for a malformed address,
 * ERR_UNAVAILABLE when it is in use, else from errno. unix_path (may be
 * NULL) receives the socket path to unlink at exit, "" for TCP.
 */
int netaddr_listen(const char *text, const char *what, char *unix_path, size_t unix_size,
		   struct error *err);

#endif

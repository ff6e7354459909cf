/*
 * daemon.h - the start-up every Granary binary shares: flags and YAML
 * through config_parse_args, --help/--version, the log level, and SIGTERM /
 * SIGINT turned into a flag that the main loop polls.
 */
#ifndef GRANARY_COMMON_DAEMON_H
#define GRANARY_COMMON_DAEMON_H

#include <signal.h>

#include "common/config.h"

/*
 * Parses argv into settings (see config_parse_args) and applies the level
 * of the string field "log.level" if the schema has one. Returns -1 to go
 * on, or the exit status to return from main at once: 0 after --help or
 * --version, 2 after a usage or configuration error (printed to stderr as
 * "PROGRAM: message").
 */
int daemon_start(const struct config_schema *schema, void *settings, int argc,
		 char **argv, int *first_positional);

/* Installs SIGTERM/SIGINT handlers that set the flag daemon_stopping()
 * reads, and ignores SIGPIPE. */
void daemon_handle_signals(void);

/* True once SIGTERM or SIGINT arrived. */
int daemon_stopping(void);

#endif
